"""health, ping and whoami."""

from __future__ import annotations

import dataclasses

import proto
from node.services.common import Caller, NodeContext
from proto.errors import PayloadTooLarge, QpcError

MAX_PING_BYTES = 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """What ``health`` reports."""

    status: str
    version: str
    uptime_ms: int
    store_backend: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Whoami:
    """What ``whoami`` reports."""

    username: str
    device_id: bytes
    device_registered: bool
    session_expires_ms: int


class MiscService:
    """Liveness and identity calls."""

    def __init__(self, ctx: NodeContext) -> None:
        """Args: the node context."""
        self._ctx = ctx

    async def health(self) -> Health:
        """``ok`` when the store answers, else ``degraded``."""
        try:
            await self._ctx.store.account_exists("health")
            status = "ok"
        except QpcError:
            status = "degraded"
        return Health(
            status=status,
            version=proto.__version__,
            uptime_ms=int((self._ctx.mono_clock() - self._ctx.started) * 1000),
            store_backend=self._ctx.store.backend,
        )

    def ping(self, payload: bytes) -> tuple[bytes, int]:
        """Echo ``payload`` (at most 1 KiB) with the node's wall clock in ms."""
        if len(payload) > MAX_PING_BYTES:
            raise PayloadTooLarge(f"ping payload exceeds {MAX_PING_BYTES} bytes")
        return payload, self._ctx.now_ms()

    async def whoami(self, caller: Caller) -> Whoami:
        """The session's user and device."""
        session = await self._ctx.authenticate(caller)
        device = await self._ctx.store.get_device(session.device_id)
        return Whoami(
            username=session.username,
            device_id=session.device_id,
            device_registered=device is not None and device.username == session.username,
            session_expires_ms=session.expires_ms,
        )
