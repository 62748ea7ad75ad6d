"""The quicnprotochat node: OPAQUE auth, device keys and sealed-message delivery.

Public entry points: :func:`node.embedded.start_embedded_node` (run a node in
this process) and the ``qpc-node`` console script (:mod:`node.__main__`).
Everything else is internal to the node.
"""
