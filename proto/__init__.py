"""quicnprotochat shared layer: wire schemas and codec, QUIC RPC, crypto and MLS.

Both the node and the TUI import from here; this package never imports either.
"""

__version__ = "0.1.0"
