"""What every service shares: the caller, the node context, authentication, validation."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import time
import unicodedata
from collections.abc import Callable

from node.config import NodeConfig
from node.metrics import NodeMetrics
from node.notify import InboxNotifier
from node.ratelimit import RateLimiter
from node.store import DeviceRecord, SessionRecord, Store
from proto.errors import (
    BadRequest,
    Expired,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)

TOKEN_BYTES = 32
DEVICE_ID_BYTES = 32
MAX_CHANNEL_ID_BYTES = 64
_USERNAME = re.compile(r"[a-z0-9._-]{3,32}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Who is calling, as far as the transport knows."""

    token: bytes
    """``Request.auth``: a session token, or empty."""
    address: str
    """Source address (host only) of the QUIC connection, for rate limits."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """An authenticated caller."""

    username: str
    """Normalised username."""
    device_id: bytes
    """The device the token is bound to."""
    expires_ms: int
    """Session expiry (Unix ms)."""
    token_hash: bytes
    """SHA-256 of the token (to log out)."""


@dataclasses.dataclass(slots=True)
class NodeContext:
    """Everything services share. One per running node; passed down explicitly."""

    config: NodeConfig
    store: Store
    metrics: NodeMetrics
    notifier: InboxNotifier
    wall_clock: Callable[[], float] = time.time
    """Seconds since the epoch (token and message expiry); tests may inject their own."""
    mono_clock: Callable[[], float] = time.monotonic
    """Monotonic seconds (rate limits, uptime)."""
    login_limiter: RateLimiter = dataclasses.field(init=False)
    write_limiter: RateLimiter = dataclasses.field(init=False)
    started: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.login_limiter = RateLimiter(c.login_rate_per_s, c.login_burst, self.mono_clock)
        self.write_limiter = RateLimiter(c.write_rate_per_s, c.write_burst, self.mono_clock)
        self.started = self.mono_clock()

    def now_ms(self) -> int:
        """Wall-clock time in ms."""
        return int(self.wall_clock() * 1000)

    # ------------------------------------------------------------ rate limits

    def _charge(self, limiter: RateLimiter, kind: str, keys: list[str]) -> None:
        wait_ms = limiter.take(keys)
        if wait_ms:
            self.metrics.rate_limited.labels(kind).inc()
            raise RateLimited("too many requests, slow down", retry_after_ms=wait_ms)

    def limit_login(self, caller: Caller, username: str) -> None:
        """Charge a login/registration attempt to the address and the account name."""
        self._charge(self.login_limiter, "login", [f"a:{caller.address}", f"u:{username}"])

    def limit_login_address(self, caller: Caller) -> None:
        """Charge a login-limiter token to the address alone (no account is named)."""
        self._charge(self.login_limiter, "login", [f"a:{caller.address}"])

    def limit_write(self, caller: Caller, account: str | None) -> None:
        """Charge a write to the address and (if known) the account."""
        keys = [f"a:{caller.address}"]
        if account is not None:
            keys.append(f"u:{account}")
        self._charge(self.write_limiter, "write", keys)

    # ---------------------------------------------------------- authentication

    async def authenticate(self, caller: Caller) -> Session:
        """The session behind the caller's token.

        Raises:
            Unauthenticated: no, malformed, unknown or forged token.
            Expired: the session expired (log in again).
        """
        if len(caller.token) != TOKEN_BYTES:
            raise Unauthenticated("a session token is required")
        token_hash = hashlib.sha256(caller.token).digest()
        record: SessionRecord | None = await self.store.get_session(token_hash)
        if record is None:
            raise Unauthenticated("unknown session token")
        if record.expires_ms <= self.now_ms():
            raise Expired("session expired, log in again")
        return Session(
            username=record.username,
            device_id=record.device_id,
            expires_ms=record.expires_ms,
            token_hash=token_hash,
        )

    async def authenticate_device(self, caller: Caller) -> tuple[Session, DeviceRecord]:
        """Like :meth:`authenticate`, and the token's device must be registered.

        Raises:
            PermissionDenied: the device is not registered (to this account).
        """
        session = await self.authenticate(caller)
        device = await self.store.get_device(session.device_id)
        if device is None or device.username != session.username:
            raise PermissionDenied("register this device first")
        return session, device


# ------------------------------------------------------------------ validation


def normalize_username(raw: str) -> str:
    """NFKC-normalise and case-fold; 3-32 chars of ``[a-z0-9._-]``.

    Raises:
        BadRequest: the name is not valid.
    """
    name = unicodedata.normalize("NFKC", raw).casefold()
    if not _USERNAME.fullmatch(name):
        raise BadRequest("username must be 3-32 characters of a-z, 0-9, '.', '_', '-'")
    return name


def check_device_id(value: bytes, what: str = "deviceId") -> bytes:
    """A deviceId is exactly 32 bytes."""
    if len(value) != DEVICE_ID_BYTES:
        raise BadRequest(f"{what} must be {DEVICE_ID_BYTES} bytes")
    return value


def unpack_device_ids(packed: bytes, what: str) -> list[bytes]:
    """32-byte deviceIds concatenated, split; a length that is not a multiple is BadRequest."""
    if len(packed) % DEVICE_ID_BYTES:
        raise BadRequest(f"{what} must be a multiple of {DEVICE_ID_BYTES} bytes")
    return [packed[i : i + DEVICE_ID_BYTES] for i in range(0, len(packed), DEVICE_ID_BYTES)]


def check_channel_id(value: bytes) -> bytes:
    """A channelId is 1-64 bytes."""
    if not 1 <= len(value) <= MAX_CHANNEL_ID_BYTES:
        raise BadRequest(f"channelId must be 1-{MAX_CHANNEL_ID_BYTES} bytes")
    return value


def check_blob(value: bytes, limit: int, what: str) -> bytes:
    """A non-empty byte string of at most ``limit`` bytes."""
    if not value:
        raise BadRequest(f"{what} must not be empty")
    if len(value) > limit:
        raise PayloadTooLarge(f"{what} exceeds {limit} bytes")
    return value


def check_u64(value: int, what: str) -> int:
    """An unsigned 64-bit integer."""
    if not 0 <= value < 2**64:
        raise BadRequest(f"{what} out of range")
    return value


def key_hash(secret: bytes) -> bytes:
    """SHA-256 used for tokens and delivery access keys at rest."""
    return hashlib.sha256(secret).digest()


def same_secret_hash(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two hashes."""
    return hmac.compare_digest(a, b)
