"""Look at a server's key before trusting it (trust on first use), and pin it.

:func:`probe_server` runs only a TLS handshake: it reports the SPKI
fingerprint the node presents and what the profile pinned for it, without
trusting or pinning anything and without sending a request. Once the user
agreed, :func:`pin_server` writes the pin to the profile's
:class:`proto.tls.PinStore`, where the engine's connection checks it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proto import tls
from proto.rpc_client import ClientConfig, RpcClient, probe_server_key
from tui.client import api
from tui.client.api import ServerProbe
from tui.client.core import EMBEDDED, PINS_FILE, EngineConfig, parse_servers
from tui.client.localnode import ensure_local_node

__all__ = ["node_health", "node_ping", "pin_server", "probe_server", "split_server"]


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


async def _bare_client(config: EngineConfig, server: str) -> tuple[RpcClient, bool]:
    """A connection for calls that need no account, and whether its key is checked.

    The local node: its key from its record. ``--server``: the profile's pin
    if it has one (read only; nothing is created), else any key (``health``
    and ``ping`` carry nothing secret; the key is reported, not trusted).
    """
    if not server or server == EMBEDDED:
        node = await asyncio.to_thread(
            ensure_local_node, config.data_dir, extra_args=config.local_node_args
        )
        cfg = ClientConfig(
            host=node.host,
            port=node.port,
            trust=tls.TrustConfig(fingerprint=node.fingerprint),
            reconnect=False,
            reconnect_wait=5.0,
        )
        return RpcClient(cfg), True
    host, port = split_server(server)
    pins = Path(config.profile_dir) / PINS_FILE
    pinned = (
        await asyncio.to_thread(tls.PinStore(pins).get, f"{host}:{port}") if pins.exists() else None
    )
    trust = tls.TrustConfig(fingerprint=pinned) if pinned else tls.TrustConfig(insecure=True)
    cfg = ClientConfig(host=host, port=port, trust=trust, reconnect=False, reconnect_wait=5.0)
    return RpcClient(cfg), pinned is not None


async def node_health(config: EngineConfig, server: str = "") -> api.Health:
    """The node's health without a profile or account (nothing written to disk).

    Raises:
        ConfigError: a malformed address, or the local node would not start.
        TransportError, ConnectionLost, FingerprintMismatch: as for any connection.
    """
    rpc, checked = await _bare_client(config, server)
    try:
        res = await rpc.health(auth=b"")
        host, port = rpc.address
        return api.Health(
            status=res.status,
            version=res.version,
            uptime_ms=res.uptime_ms,
            store_backend=res.store_backend,
            server=f"{host}:{port}",
            fingerprint=rpc.fingerprint or "",
            pinned=checked,
        )
    finally:
        await rpc.close()


async def node_ping(config: EngineConfig, server: str = "", count: int = 1) -> api.PingResult:
    """``count`` round trips without a profile or account (see :func:`node_health`)."""
    rpc, _ = await _bare_client(config, server)
    try:
        await rpc.connect()
        rtts, server_ms = [], 0
        for i in range(max(1, count)):
            t0 = time.perf_counter()
            res = await rpc.ping(payload=i.to_bytes(4, "big"), auth=b"")
            rtts.append((time.perf_counter() - t0) * 1000)
            server_ms = res.server_time_ms
        return api.PingResult(rtts_ms=tuple(rtts), server_time_ms=server_ms)
    finally:
        await rpc.close()
