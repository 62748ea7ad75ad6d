"""What every SSH connection of one server shares (config, limits, metrics, the node),
and the key a connection authenticated with."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncssh

from proto import tls
from proto.rpc_client import ClientConfig, RpcClient
from tui.client.probe import split_server
from tui.ssh.config import SshServeConfig
from tui.ssh.limits import AuthRateLimiter, SessionMetrics, SessionSlots

__all__ = ["AuthKey", "Host"]


class Host:
    """State shared by every connection: config, limits, metrics, the node."""

    def __init__(self, config: SshServeConfig, node_address: str, node_fingerprint: str) -> None:
        self.config = config
        self.node_address = node_address
        """``host:port`` of the node the sessions use."""
        self.node_fingerprint = node_fingerprint
        self.slots = SessionSlots(
            max_total=config.max_sessions, max_per_key=config.max_sessions_per_key
        )
        self.auth_limiter = AuthRateLimiter(rate=config.auth_rate, burst=config.auth_burst)
        self.metrics = SessionMetrics()
        self.connections: set[asyncssh.SSHServerConnection] = set()
        """Open connections (closed on shutdown)."""
        self.ending: set[asyncio.Task[None]] = set()
        """Hang-ups of session processes still under way (awaited on shutdown)."""
        self._rpc: RpcClient | None = None

    async def node_client(self) -> RpcClient:
        """One shared, unauthenticated connection to the node (health, ping)."""
        if self._rpc is None:
            host, port = split_server(self.node_address)
            trust = tls.TrustConfig(fingerprint=self.node_fingerprint)
            self._rpc = RpcClient(ClientConfig(host=host, port=port, trust=trust))
        return self._rpc

    async def close(self) -> None:
        """Close every connection, wait for their processes to end, close the node connection."""
        for conn in list(self.connections):
            conn.close()
        for conn in list(self.connections):
            await conn.wait_closed()
        while self.ending:
            await asyncio.gather(*self.ending, return_exceptions=True)
        if self._rpc is not None:
            await self._rpc.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthKey:
    """The public key that authenticated the connection (its signature was verified)."""

    blob: bytes
    """The SSH wire encoding of the public key."""
    algorithm: str
    """Key type, e.g. ``ssh-ed25519``."""

    @property
    def fingerprint(self) -> str:
        """OpenSSH's ``SHA256:...`` form (what ``ssh-keygen -lf`` prints)."""
        import base64
        import hashlib

        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def profile_name(self) -> str:
        """Directory name of this key's profile (hex SHA-256 of the key)."""
        import hashlib

        return hashlib.sha256(self.blob).hexdigest()
