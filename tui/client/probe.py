"""Look at a server's key before trusting it (trust on first use), and pin it.

:func:`probe_server` runs only a TLS handshake: it reports the SPKI
fingerprint the node presents and what the profile pinned for it, without
trusting or pinning anything and without sending a request. Once the user
agreed, :func:`pin_server` writes the pin to the profile's
:class:`proto.tls.PinStore`, where the engine's connection checks it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from proto import tls
from proto.rpc_client import probe_server_key
from tui.client.api import ServerProbe
from tui.client.core import EMBEDDED, PINS_FILE, EngineConfig, parse_servers
from tui.client.localnode import ensure_local_node

__all__ = ["pin_server", "probe_server", "split_server"]


def split_server(server: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); brackets of IPv6 literals removed. Of a
    list ``HOST:PORT,HOST:PORT`` (one deployment), the first address: its key
    is the one probed and pinned for all.

    Raises:
        ConfigError: not ``HOST:PORT[,HOST:PORT...]``.
    """
    return parse_servers(server)[0]


async def probe_server(
    config: EngineConfig, server: str = "", *, wait_s: float = 5.0
) -> ServerProbe:
    """The key ``server`` presents and the one pinned for it in ``config``'s profile.

    ``server`` "" or ``embedded``: the shared local node (started if none runs);
    its expected key comes from its own record, so ``pinned`` is that.

    Raises:
        ConfigError: a malformed address, or the local node would not start.
        TransportError, ConnectionLost: the server cannot be reached.
    """
    if not server or server == EMBEDDED:
        node = await asyncio.to_thread(
            ensure_local_node, config.data_dir, extra_args=config.local_node_args
        )
        presented = await probe_server_key(node.host, node.port, wait_s=wait_s)
        return ServerProbe(
            server=node.address, fingerprint=presented, pinned=node.fingerprint, embedded=True
        )
    host, port = split_server(server)
    presented = await probe_server_key(host, port, wait_s=wait_s)
    pins = tls.PinStore(Path(config.profile_dir) / PINS_FILE)
    pinned = await asyncio.to_thread(pins.get, f"{host}:{port}")
    return ServerProbe(server=f"{host}:{port}", fingerprint=presented, pinned=pinned)


async def pin_server(config: EngineConfig, server: str, fingerprint: str) -> None:
    """Pin ``server`` (``host:port``) to ``fingerprint`` in the profile's pin store."""
    host, port = split_server(server)
    pins = tls.PinStore(Path(config.profile_dir) / PINS_FILE)
    await asyncio.to_thread(pins.set, f"{host}:{port}", fingerprint)
