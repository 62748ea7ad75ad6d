"""Run a node inside the current process (tests, the TUI's embedded mode).

Example::

    from node.config import NodeConfig
    from node.embedded import start_embedded_node

    handle = await start_embedded_node(NodeConfig(port=0, data_dir=path))
    print(handle.address, handle.fingerprint)
    ...
    await handle.stop()

The node runs on the caller's event loop. This module and
:class:`node.config.NodeConfig` are the only parts of ``node`` other packages
should import.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from node.app import Node
from node.config import NodeConfig

EmbeddedNode = Node
"""Handle of a running node: ``.address``, ``.port``, ``.fingerprint``, ``await .stop()``."""

__all__ = ["EmbeddedNode", "NodeConfig", "start_embedded_node"]


async def start_embedded_node(
    config: NodeConfig | None = None,
    *,
    wall_clock: Callable[[], float] = time.time,
    mono_clock: Callable[[], float] = time.monotonic,
) -> EmbeddedNode:
    """Start a node on the running event loop and return its handle.

    Args:
        config: settings (default: :class:`NodeConfig` defaults, i.e. 127.0.0.1:7000
            and the user data dir; pass ``port=0`` for a free port).
        wall_clock: seconds since the epoch; tests may inject one to expire sessions.
        mono_clock: monotonic seconds (rate limits, login TTL); tests may inject one.
    """
    return await Node.start(
        config if config is not None else NodeConfig(),
        wall_clock=wall_clock,
        mono_clock=mono_clock,
    )
