"""Typed messages of the node protocol: frozen, slotted, keyword-only dataclasses.

One ``<Method>Params`` and one ``<Method>Result`` per method of
``proto/schemas/node.capnp`` (field names are the schema's in snake_case), plus
:class:`Envelope`, :class:`Device`, :class:`Recipient`, :class:`ErrorInfo`,
:class:`Request` and :class:`Response`. :mod:`proto.codec` turns them into bytes
and back; everything here is plain Python (no capnp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from proto.errors import ErrorCode, RpcError, error_for_code

__all__ = [
    "METHODS",
    "METHOD_BY_NAME",
    "METHOD_BY_PARAMS",
    "METHOD_BY_RESULT",
    "METHOD_NAMES",
    "AckParams",
    "AckResult",
    "CommitChannelParams",
    "CommitChannelResult",
    "Device",
    "EnqueueCommitParams",
    "EnqueueCommitResult",
    "EnqueueParams",
    "EnqueueResult",
    "Envelope",
    "ErrorInfo",
    "FetchHybridKeyParams",
    "FetchHybridKeyResult",
    "FetchKeyPackageParams",
    "FetchKeyPackageResult",
    "FetchParams",
    "FetchResult",
    "FetchWaitParams",
    "FetchWaitResult",
    "HealthParams",
    "HealthResult",
    "KeyPackageCountParams",
    "KeyPackageCountResult",
    "ListDevicesParams",
    "ListDevicesResult",
    "LoginFinishParams",
    "LoginFinishResult",
    "LoginStartParams",
    "LoginStartResult",
    "LogoutParams",
    "LogoutResult",
    "Method",
    "Params",
    "PingParams",
    "PingResult",
    "PostChannelParams",
    "PostChannelResult",
    "Recipient",
    "RegisterDeviceParams",
    "RegisterDeviceResult",
    "RegisterFinishParams",
    "RegisterFinishResult",
    "RegisterStartParams",
    "RegisterStartResult",
    "Request",
    "Response",
    "Result",
    "SetChannelKeyParams",
    "SetChannelKeyResult",
    "UploadKeyPackagesParams",
    "UploadKeyPackagesResult",
    "WhoamiParams",
    "WhoamiResult",
    "result_or_raise",
    "snake_case",
]


# ------------------------------------------------------------- shared structs


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One message in a device inbox."""

    seq: int
    """Per-inbox delivery sequence number."""
    channel_id: bytes
    """Opaque channel (MLS group) id."""
    data: bytes
    """Sealed payload."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """A registered device of a user."""

    device_id: bytes
    """Ed25519 identity public key (32 bytes)."""
    hybrid_key: bytes
    """X-Wing public key."""
    signature: bytes
    """Ed25519 signature by ``device_id`` over ``b"qpc-device-v1" + hybrid_key``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """One fan-out entry of ``enqueueCommit``."""

    recipient: bytes
    """Recipient deviceId."""
    payload: bytes
    """Sealed payload for that device."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """The ``error`` arm of a :class:`Response`."""

    code: ErrorCode
    """Wire error code."""
    message: str = ""
    """Human-readable text (never a traceback)."""
    retry_after_ms: int = 0
    """When non-zero, the client should wait this long before retrying."""

    @classmethod
    def from_exception(cls, exc: RpcError) -> ErrorInfo:
        """Build the wire error for an :class:`RpcError`."""
        return cls(code=exc.code, message=exc.message, retry_after_ms=exc.retry_after_ms)

    def to_exception(self) -> RpcError:
        """The :class:`RpcError` subclass for this code."""
        return error_for_code(int(self.code), self.message, self.retry_after_ms)


# ------------------------------------------------------- params and results
# Field names are the schema's in snake_case; the codec derives camelCase.


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthParams:
    """``health`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthResult:
    """Node status."""

    status: str
    version: str
    uptime_ms: int
    store_backend: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PingParams:
    """Echo request (payload at most 1 KiB)."""

    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    """Echoed payload and the node's wall clock in ms."""

    payload: bytes
    server_time_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoamiParams:
    """``whoami`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoamiResult:
    """Identity bound to the session token."""

    username: str
    device_id: bytes
    device_registered: bool
    session_expires_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStartParams:
    """OPAQUE registration, first message."""

    username: str
    request: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStartResult:
    """OPAQUE RegistrationResponse."""

    response: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterFinishParams:
    """OPAQUE registration upload."""

    username: str
    upload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterFinishResult:
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginStartParams:
    """OPAQUE login, first message."""

    username: str
    request: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginStartResult:
    """Login state id and OPAQUE CredentialResponse."""

    login_id: bytes
    response: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFinishParams:
    """OPAQUE finalization plus the device the token is bound to."""

    login_id: bytes
    finalization: bytes
    device_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFinishResult:
    """Session token (32 bytes) and its expiry (Unix ms)."""

    token: bytes
    expires_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutParams:
    """``logout`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutResult:
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterDeviceParams:
    """Register the token's device with its hybrid key."""

    hybrid_key: bytes
    signature: bytes
    delivery_access_key: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterDeviceResult:
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadKeyPackagesParams:
    """A batch of KeyPackages; empty ``last_resort`` keeps the current one."""

    packages: tuple[bytes, ...]
    last_resort: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadKeyPackagesResult:
    """Stock after the upload."""

    stock: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchKeyPackageParams:
    """Consume one KeyPackage of a user's device."""

    username: str
    device_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchKeyPackageResult:
    """The KeyPackage and whether it is the (reused) last-resort one."""

    package: bytes
    last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageCountParams:
    """``keyPackageCount`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageCountResult:
    """KeyPackage stock of the token's device."""

    count: int
    has_last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ListDevicesParams:
    """List a user's devices."""

    username: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListDevicesResult:
    """The user's devices."""

    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchHybridKeyParams:
    """Fetch a device's hybrid key."""

    device_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchHybridKeyResult:
    """Hybrid key and the identity key's signature over it."""

    hybrid_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueParams:
    """Enqueue one payload; ``access_key`` authorises sealed-sender calls."""

    recipient: bytes
    channel_id: bytes
    payload: bytes
    access_key: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueResult:
    """Assigned inbox sequence number."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueCommitParams:
    """Commit fan-out, accepted only at the channel's current epoch."""

    channel_id: bytes
    epoch: int
    fanout: tuple[Recipient, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueCommitResult:
    """One seq per fan-out entry, and the channel's new epoch."""

    seqs: tuple[int, ...]
    new_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchParams:
    """Fetch envelopes after a cursor."""

    after_seq: int
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResult:
    """Envelopes in seq order."""

    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchWaitParams:
    """Subscribe to the inbox after a cursor; ``timeout_ms`` 0 = until cancelled."""

    after_seq: int
    timeout_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchWaitResult:
    """One push of the fetchWait stream."""

    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AckParams:
    """Delete envelopes up to and including ``upto_seq``."""

    upto_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AckResult:
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostChannelParams:
    """One MLS message stored once for a channel, referenced from each recipient's inbox."""

    channel_id: bytes
    post_key: bytes
    recipients: tuple[bytes, ...]
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PostChannelResult:
    """How many recipient inboxes took the message."""

    stored: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitChannelParams:
    """Epoch-checked commit (and Welcome) stored once, referenced per device."""

    channel_id: bytes
    epoch: int
    post_key: bytes
    commit: bytes
    members: tuple[bytes, ...]
    welcome: bytes = b""
    joiners: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitChannelResult:
    """The channel's new epoch."""

    new_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetChannelKeyParams:
    """The committer of ``epoch`` sets SHA-256 of that epoch's post capability."""

    channel_id: bytes
    epoch: int
    key_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SetChannelKeyResult:
    """Empty result."""


Params = (
    HealthParams
    | PingParams
    | WhoamiParams
    | RegisterStartParams
    | RegisterFinishParams
    | LoginStartParams
    | LoginFinishParams
    | LogoutParams
    | RegisterDeviceParams
    | UploadKeyPackagesParams
    | FetchKeyPackageParams
    | KeyPackageCountParams
    | ListDevicesParams
    | FetchHybridKeyParams
    | EnqueueParams
    | EnqueueCommitParams
    | FetchParams
    | FetchWaitParams
    | AckParams
    | PostChannelParams
    | CommitChannelParams
    | SetChannelKeyParams
)
"""Any method's parameters (the ``Request`` union)."""

Result = (
    HealthResult
    | PingResult
    | WhoamiResult
    | RegisterStartResult
    | RegisterFinishResult
    | LoginStartResult
    | LoginFinishResult
    | LogoutResult
    | RegisterDeviceResult
    | UploadKeyPackagesResult
    | FetchKeyPackageResult
    | KeyPackageCountResult
    | ListDevicesResult
    | FetchHybridKeyResult
    | EnqueueResult
    | EnqueueCommitResult
    | FetchResult
    | FetchWaitResult
    | AckResult
    | PostChannelResult
    | CommitChannelResult
    | SetChannelKeyResult
)
"""Any method's result (the ``Response`` union minus ``error``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One call: session token (or empty) and the method's parameters."""

    auth: bytes = b""
    """Session token, or empty for unauthenticated / sealed-sender calls."""
    call: Params
    """The method's parameters; its type selects the method."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """One answer: the method's result or an error."""

    result: Result | ErrorInfo
    """The method's result, or :class:`ErrorInfo`."""


# ------------------------------------------------------------------ methods


@dataclass(frozen=True, slots=True)
class Method:
    """One method of ``NodeService``."""

    name: str
    """Schema name (union member), e.g. ``"fetchWait"``."""
    attr: str
    """Python name (handler method), e.g. ``"fetch_wait"``."""
    params: type[Params]
    """Parameters dataclass."""
    result: type[Result]
    """Result dataclass."""
    streaming: bool = False
    """True when the node answers with a sequence of results."""


def snake_case(name: str) -> str:
    """``fetchWait`` -> ``fetch_wait``."""
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)


METHOD_NAMES: Final = (
    "health",
    "ping",
    "whoami",
    "registerStart",
    "registerFinish",
    "loginStart",
    "loginFinish",
    "logout",
    "registerDevice",
    "uploadKeyPackages",
    "fetchKeyPackage",
    "keyPackageCount",
    "listDevices",
    "fetchHybridKey",
    "enqueue",
    "enqueueCommit",
    "fetch",
    "fetchWait",
    "ack",
    "postChannel",
    "commitChannel",
    "setChannelKey",
)
"""Schema names in ordinal order (the codec checks this against the schema)."""

METHODS: Final[tuple[Method, ...]] = tuple(
    Method(
        name=n,
        attr=snake_case(n),
        params=globals()[n[0].upper() + n[1:] + "Params"],
        result=globals()[n[0].upper() + n[1:] + "Result"],
        streaming=(n == "fetchWait"),
    )
    for n in METHOD_NAMES
)
"""Every method in schema (ordinal) order."""

METHOD_BY_PARAMS: Final[dict[type[Any], Method]] = {m.params: m for m in METHODS}
"""Params dataclass -> method."""
METHOD_BY_RESULT: Final[dict[type[Any], Method]] = {m.result: m for m in METHODS}
"""Result dataclass -> method."""
METHOD_BY_NAME: Final[dict[str, Method]] = {m.name: m for m in METHODS}
"""Schema name -> method."""


def result_or_raise(response: Response) -> Result:
    """Return the result, or raise the :class:`RpcError` subclass of an error."""
    if isinstance(response.result, ErrorInfo):
        raise response.result.to_exception()
    return response.result
