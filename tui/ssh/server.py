"""The SSH front end: accepts any public key, binds each connection to the key that signed.

Identity is the public key whose signature the server verified, never a key
merely offered: an SSH client may offer key A (the server answers "A would
do"), then sign with key B, and a server that remembers the last key its
callback saw would log it in as A (the CVE-2024-45337 class of bug in
x/crypto users). asyncssh calls ``SSHServer.validate_public_key`` for
offers and signed requests alike, so this module hooks the connection's own
``validate_public_key(username, key_data, msg, signature)`` and records the
key only when a signature was present and verified.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import asyncssh

from proto import files, tls
from proto.errors import ConfigError
from proto.rpc_client import probe_server_key
from tui.client.localnode import NodeLease, ensure_local_node
from tui.client.probe import split_server
from tui.ssh.config import SshServeConfig
from tui.ssh.host import AuthKey, Host
from tui.ssh.hostkey import load_or_create_host_key
from tui.ssh.session import Session

__all__ = ["Host", "SshServer", "serve"]

log = logging.getLogger(__name__)


class SshServer(asyncssh.SSHServer):
    """One connection: rate-limited public-key auth, then sessions bound to that key."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._conn: asyncssh.SSHServerConnection | None = None
        self._key: AuthKey | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        """Rate-limit by source address; hook signature verification."""
        self._conn = conn
        self._host.connections.add(conn)
        peer = conn.get_extra_info("peername") or ("?", 0)
        loop = asyncio.get_running_loop()
        if not self._host.auth_limiter.allow(str(peer[0]), loop.time()):
            self._host.metrics.auth.labels("rate_limited").inc()
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many attempts; slow down")
            return
        verify = conn.validate_public_key

        async def verified(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            ok = await verify(username, key_data, msg, signature)
            if ok and msg and signature:
                # Only a verified signature binds the connection to a key.
                algorithm = key_data[4 : 4 + int.from_bytes(key_data[:4], "big")]
                self._key = AuthKey(blob=bytes(key_data), algorithm=algorithm.decode("ascii"))
            return ok

        conn.validate_public_key = verified  # type: ignore[method-assign]

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        if self._conn is not None:
            self._host.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        """Authentication is always required."""
        return True

    def public_key_auth_supported(self) -> bool:
        """Keys are the only way in."""
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Any key may try: an unknown one gets the registration screen."""
        return True

    def auth_completed(self) -> None:
        """Count it; a connection without a verified key is closed (cannot happen)."""
        if self._key is None:
            self._host.metrics.auth.labels("no_key").inc()
            if self._conn is not None:
                self._conn.close()
            return
        self._host.metrics.auth.labels("ok").inc()
        log.info("authenticated key %s", self._key.fingerprint)

    def session_requested(self) -> Session | bool:
        """A session bound to the authenticated key."""
        if self._key is None:
            return False
        return Session(self._host, self._key)


async def _resolve_node(config: SshServeConfig) -> tuple[str, str, NodeLease | None]:
    """The node's address and key; for the embedded one, also the lock that keeps it up."""
    if config.server:
        host, port = split_server(config.server)
        presented = await probe_server_key(host, port)
        expected = config.server_fingerprint
        if expected and tls.normalize_fingerprint(expected) != presented:
            raise ConfigError(f"{config.server} presents {presented}, not the key given")
        return f"{host}:{port}", presented, None
    node = await asyncio.to_thread(ensure_local_node, config.state_dir)
    lease = NodeLease(config.state_dir)  # no TUI's exit stops it while we serve
    await asyncio.to_thread(lease.acquire)
    return node.address, node.fingerprint, lease


async def serve(config: SshServeConfig, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; prints the address and the host key's fingerprint."""
    files.private_dir(config.state_dir)
    files.private_dir(config.profiles_dir)
    host_key = await asyncio.to_thread(load_or_create_host_key, config.host_key_path)
    node_address, node_fp, users = await _resolve_node(config)
    host = Host(config, node_address, node_fp)
    metrics_server = None
    if config.metrics_host is not None:
        from prometheus_client import start_http_server

        metrics_server, _ = start_http_server(
            config.metrics_port, config.metrics_host, registry=host.metrics.registry
        )
    acceptor = await asyncssh.listen(
        config.host,
        config.port,
        server_host_keys=[host_key],
        server_factory=lambda: SshServer(host),
        encoding=None,
        login_timeout=config.login_timeout_s,
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
        keepalive_interval=30,
        keepalive_count_max=4,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the banner: a stop right after it is clean
        loop.add_signal_handler(sig, stop.set)
    sockname = acceptor.sockets[0].getsockname()
    print(f"listening: {sockname[0]}:{sockname[1]}", flush=True)
    print(f"host key: {host_key.get_fingerprint('sha256')}", flush=True)
    print(f"node: {node_address} {node_fp}", flush=True)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        acceptor.close()
        await acceptor.wait_closed()
        await host.close()
        if metrics_server is not None:
            metrics_server.shutdown()
        if users is not None:  # stops the embedded node unless another client uses it
            await asyncio.to_thread(users.release, stop_if_last=True)


def main_serve(config: SshServeConfig) -> int:
    """``qpc serve-ssh``: run :func:`serve`; the exit status."""
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"qpc: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"qpc: error: {exc}", file=sys.stderr)
        return 1
    return 0
