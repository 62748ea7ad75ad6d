"""Typed messages of the node protocol: frozen, slotted, keyword-only dataclasses.

One ``<Method>Params`` (a :class:`Params`) and one ``<Method>Result`` (a
:class:`Result`) per method of ``proto/schemas/node.capnp`` (field names are the
schema's in snake_case), plus :class:`Envelope`, :class:`Device`,
:class:`Recipient`, :class:`ErrorInfo`, :class:`Request`, :class:`Response` and
the handler's :class:`CallContext`. :mod:`proto.codec` turns them into bytes and
back; :mod:`proto.rpc_api` (generated from the schema) pairs them into the
method table. Everything here is plain Python (no capnp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from proto.errors import ErrorCode, ProtocolError, RpcError, error_for_code

__all__ = [
    "AckParams",
    "AckResult",
    "CallContext",
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
    "FetchWelcomeParams",
    "FetchWelcomeResult",
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
    "UnlinkDeviceParams",
    "UnlinkDeviceResult",
    "UploadKeyPackagesParams",
    "UploadKeyPackagesResult",
    "WhoamiParams",
    "WhoamiResult",
    "expect_result",
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
# Each method's pair is listed in ``proto/rpc_api.py`` (generated from the
# schema's ``NodeService``); a new method needs only its two dataclasses here.


class Params:
    """Base of every method's parameters (a ``Request`` union member)."""

    __slots__ = ()


class Result:
    """Base of every method's result (a ``Response`` union member other than ``error``)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthParams(Params):
    """``health`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthResult(Result):
    """Node status."""

    status: str
    version: str
    uptime_ms: int
    store_backend: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PingParams(Params):
    """Echo request (payload at most 1 KiB)."""

    payload: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult(Result):
    """Echoed payload and the node's wall clock in ms."""

    payload: bytes
    server_time_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoamiParams(Params):
    """``whoami`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoamiResult(Result):
    """Identity bound to the session token."""

    username: str
    device_id: bytes
    device_registered: bool
    session_expires_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStartParams(Params):
    """OPAQUE registration, first message."""

    username: str
    request: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStartResult(Result):
    """OPAQUE RegistrationResponse."""

    response: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterFinishParams(Params):
    """OPAQUE registration upload."""

    username: str
    upload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterFinishResult(Result):
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginStartParams(Params):
    """OPAQUE login, first message."""

    username: str
    request: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginStartResult(Result):
    """Login state id and OPAQUE CredentialResponse."""

    login_id: bytes
    response: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFinishParams(Params):
    """OPAQUE finalization plus the device the token is bound to."""

    login_id: bytes
    finalization: bytes
    device_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFinishResult(Result):
    """Session token (32 bytes) and its expiry (Unix ms)."""

    token: bytes
    expires_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutParams(Params):
    """``logout`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutResult(Result):
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterDeviceParams(Params):
    """Register the token's device with its hybrid key."""

    hybrid_key: bytes
    signature: bytes
    delivery_access_key: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterDeviceResult(Result):
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadKeyPackagesParams(Params):
    """A batch of KeyPackages; empty ``last_resort`` keeps the current one."""

    packages: tuple[bytes, ...]
    last_resort: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadKeyPackagesResult(Result):
    """Stock after the upload."""

    stock: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchKeyPackageParams(Params):
    """Consume one KeyPackage of a user's device."""

    username: str
    device_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchKeyPackageResult(Result):
    """The KeyPackage and whether it is the (reused) last-resort one."""

    package: bytes
    last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageCountParams(Params):
    """``keyPackageCount`` has no parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageCountResult(Result):
    """KeyPackage stock of the token's device."""

    count: int
    has_last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ListDevicesParams(Params):
    """List a user's devices."""

    username: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListDevicesResult(Result):
    """The user's devices."""

    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchHybridKeyParams(Params):
    """Fetch a device's hybrid key."""

    device_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchHybridKeyResult(Result):
    """Hybrid key and the identity key's signature over it."""

    hybrid_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueParams(Params):
    """Enqueue one payload; ``access_key`` authorises sealed-sender calls."""

    recipient: bytes
    channel_id: bytes
    payload: bytes
    access_key: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueResult(Result):
    """Assigned inbox sequence number."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueCommitParams(Params):
    """Commit fan-out, accepted only at the channel's current epoch."""

    channel_id: bytes
    epoch: int
    fanout: tuple[Recipient, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueCommitResult(Result):
    """One seq per fan-out entry, and the channel's new epoch."""

    seqs: tuple[int, ...]
    new_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchParams(Params):
    """Fetch envelopes after a cursor."""

    after_seq: int
    limit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResult(Result):
    """Envelopes in seq order."""

    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchWaitParams(Params):
    """Subscribe to the inbox after a cursor; ``timeout_ms`` 0 = until cancelled."""

    after_seq: int
    timeout_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchWaitResult(Result):
    """One push of the fetchWait stream."""

    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AckParams(Params):
    """Delete envelopes up to and including ``upto_seq``."""

    upto_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AckResult(Result):
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostChannelParams(Params):
    """One MLS message stored once for a channel, referenced from each recipient's inbox."""

    channel_id: bytes
    post_key: bytes
    recipients: tuple[bytes, ...] = ()
    payload: bytes
    recipient_ids: bytes = b""
    """The recipients packed: 32-byte deviceIds concatenated (32 B each on
    the wire instead of 40 B for a ``List(Data)`` element)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PostChannelResult(Result):
    """How many recipient inboxes took the message."""

    stored: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitChannelParams(Params):
    """Epoch-checked commit (and Welcome) stored once, referenced per device."""

    channel_id: bytes
    epoch: int
    post_key: bytes
    commit: bytes
    members: tuple[bytes, ...] = ()
    welcome: bytes = b""
    joiners: tuple[bytes, ...] = ()
    group_info: bytes = b""
    ratchet_tree: bytes = b""
    joiner_entries: tuple[bytes, ...] = ()
    tree_delta: bytes = b""
    member_ids: bytes = b""
    """The members packed: 32-byte deviceIds concatenated (32 B each on the
    wire instead of 40 B for a ``List(Data)`` element)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitChannelResult(Result):
    """The channel's new epoch."""

    new_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetChannelKeyParams(Params):
    """The committer of ``epoch`` sets SHA-256 of that epoch's post capability."""

    channel_id: bytes
    epoch: int
    key_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SetChannelKeyResult(Result):
    """Empty result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchWelcomeParams(Params):
    """Fetch the shared Welcome parts of a channel epoch (a joiner, by reference)."""

    channel_id: bytes
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchWelcomeResult(Result):
    """The split Welcome's shared part, the latest sealed tree base at or
    before the epoch and the sealed deltas after it up to the epoch."""

    group_info: bytes
    ratchet_tree: bytes
    tree_deltas: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlinkDeviceParams(Params):
    """Remove another device of the caller's account."""

    device_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlinkDeviceResult(Result):
    """Empty result."""


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


def result_or_raise(response: Response) -> Result:
    """Return the result, or raise the :class:`RpcError` subclass of an error."""
    if isinstance(response.result, ErrorInfo):
        raise response.result.to_exception()
    return response.result


R = TypeVar("R", bound=Result)


def expect_result(result: Result, cls: type[R]) -> R:
    """``result`` as ``cls``, the method's result type.

    Raises:
        ProtocolError: the node answered with another method's result.
    """
    if not isinstance(result, cls):
        raise ProtocolError(f"expected {cls.__name__}, node sent {type(result).__name__}")
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """Who is calling: passed to every node handler method."""

    auth: bytes
    """``Request.auth``: the session token, or empty. Not yet verified."""
    peer: tuple[str, int]
    """Client address (host, port) when the connection was made."""
    connection_id: int
    """Server-local id of the QUIC connection (stable for its lifetime)."""
    method: str
    """Schema name of the method being called, e.g. ``"fetchWait"``."""
