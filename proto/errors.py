"""One error root for the whole project.

Every exception we raise on purpose derives from :class:`QpcError`. Errors are
split by who is at fault (h11/httpcore style):

* :class:`LocalError` - the caller misused an API or local state is wrong.
* :class:`RemoteError` - a peer (node or other client) sent something bad, or
  the node answered with an error response.

Wire errors map 1:1 between the schema's ``ErrorCode`` enum and exception
classes: :func:`error_for_code` builds the exception for a received code and
every :class:`RpcError` subclass knows its ``code``. MLS errors raised by the
native binding (``proto._mls``) are the :class:`MlsError` family; the Rust code
only raises these classes, it never defines its own.
"""

from __future__ import annotations

import enum


class QpcError(Exception):
    """Root of every error quicnprotochat raises on purpose."""


class LocalError(QpcError):
    """The local caller is at fault (bad argument, wrong state, bad config)."""


class RemoteError(QpcError):
    """A remote party is at fault, or the node answered with an error."""


class ConfigError(LocalError):
    """Configuration could not be parsed or is inconsistent."""


class KeyChangedSinceVerified(LocalError):
    """A user whose keys we verified has a device we have not accepted.

    Sending to a channel with that user is refused until the user compares
    safety numbers again and accepts the change (``qpc check-key USER
    --accept`` or the TUI's key dialog), as Signal does.
    """

    def __init__(self, user: str) -> None:
        super().__init__(
            f"{user}'s key changed since you verified it: compare safety numbers, "
            f"then accept the change (`qpc check-key {user} --accept`) to send again"
        )
        self.user = user


# --------------------------------------------------------------------------- wire


class ErrorCode(enum.IntEnum):
    """Wire error codes. Ordinals equal the ``ErrorCode`` enum in node.capnp."""

    INTERNAL = 0
    BAD_REQUEST = 1
    UNAUTHENTICATED = 2
    PERMISSION_DENIED = 3
    NOT_FOUND = 4
    ALREADY_EXISTS = 5
    RATE_LIMITED = 6
    QUEUE_FULL = 7
    STALE_EPOCH = 8
    PAYLOAD_TOO_LARGE = 9
    INVALID_SIGNATURE = 10
    UNAVAILABLE = 11
    CANCELLED = 12
    LIMIT_EXCEEDED = 13
    LOGIN_FAILED = 14
    EXPIRED = 15
    TREE_BASE_REQUIRED = 16


class RpcError(RemoteError):
    """The node answered a call with an ``error`` response.

    Attributes:
        code: the wire error code.
        message: human-readable text from the node (never a traceback).
        retry_after_ms: when non-zero, the client should wait this long.
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str = "", *, retry_after_ms: int = 0) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message
        self.retry_after_ms = retry_after_ms


class InternalError(RpcError):
    """The node failed while handling the call (details only in its logs)."""

    code = ErrorCode.INTERNAL


class BadRequest(RpcError):
    """The request was malformed or a field was invalid."""

    code = ErrorCode.BAD_REQUEST


class Unauthenticated(RpcError):
    """No, unknown, forged or expired session token."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(RpcError):
    """Authenticated, but not allowed to do this (e.g. another device's inbox)."""

    code = ErrorCode.PERMISSION_DENIED


class NotFound(RpcError):
    """The user, device, key package or channel does not exist."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(RpcError):
    """The thing being created exists already (e.g. duplicate username)."""

    code = ErrorCode.ALREADY_EXISTS


class RateLimited(RpcError):
    """Too many calls; wait ``retry_after_ms`` before retrying."""

    code = ErrorCode.RATE_LIMITED


class QueueFull(RpcError):
    """The recipient's inbox is at its depth limit."""

    code = ErrorCode.QUEUE_FULL


class StaleEpoch(RpcError):
    """``enqueueCommit`` was made for an epoch that is no longer current."""

    code = ErrorCode.STALE_EPOCH


class PayloadTooLarge(RpcError):
    """A payload or request exceeded the configured byte limit."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class InvalidSignature(RpcError):
    """A signature supplied with the request did not verify."""

    code = ErrorCode.INVALID_SIGNATURE


class Unavailable(RpcError):
    """The node is shutting down or a dependency (store) is unavailable."""

    code = ErrorCode.UNAVAILABLE


class Cancelled(RpcError):
    """The call was cancelled."""

    code = ErrorCode.CANCELLED


class LimitExceeded(RpcError):
    """A list length, stream count or other configured limit was exceeded."""

    code = ErrorCode.LIMIT_EXCEEDED


class LoginFailed(RpcError):
    """Unknown user or wrong password; deliberately indistinguishable."""

    code = ErrorCode.LOGIN_FAILED


class Expired(RpcError):
    """A time-limited object (login state, session) expired."""

    code = ErrorCode.EXPIRED


class TreeBaseRequired(RpcError):
    """The node holds no unbroken, bounded tree chain for this commit's delta:
    send the same commit again with the whole ratchet tree (nothing was stored)."""

    code = ErrorCode.TREE_BASE_REQUIRED


_BY_CODE: dict[ErrorCode, type[RpcError]] = {
    cls.code: cls
    for cls in (
        InternalError,
        BadRequest,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        RateLimited,
        QueueFull,
        StaleEpoch,
        PayloadTooLarge,
        InvalidSignature,
        Unavailable,
        Cancelled,
        LimitExceeded,
        LoginFailed,
        Expired,
        TreeBaseRequired,
    )
}


def error_for_code(code: int, message: str = "", retry_after_ms: int = 0) -> RpcError:
    """Build the exception for a wire error code (unknown codes -> InternalError)."""
    try:
        cls = _BY_CODE[ErrorCode(code)]
    except ValueError:
        cls = InternalError
    return cls(message, retry_after_ms=retry_after_ms)


class TransportError(RemoteError):
    """The QUIC connection failed, was reset or timed out."""


class ConnectionLost(TransportError):
    """The connection to the node dropped (the client may reconnect)."""


class ProtocolError(RemoteError):
    """The peer sent bytes that are not a valid message (malformed frame)."""


class EncodeError(LocalError):
    """A message could not be encoded (wrong field type, integer out of range)."""


class FingerprintMismatch(RemoteError):
    """The server's TLS key differs from the pinned one.

    Attributes:
        expected: hex SPKI SHA-256 that was pinned.
        actual: hex SPKI SHA-256 the server presented.
    """

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            f"server key changed: pinned {expected}, server presented {actual}; "
            "refusing to connect (use --trust-new-key if you expected this)"
        )
        self.expected = expected
        self.actual = actual


# ---------------------------------------------------------------------------- MLS


class MlsError(QpcError):
    """Base of errors raised by the OpenMLS binding (``proto._mls``)."""


class MalformedInput(MlsError, RemoteError):
    """Bytes could not be parsed as the expected MLS structure."""


class InvalidMessage(MlsError, RemoteError):
    """A parsed MLS message failed validation (bad signature, replay, ...)."""


class WrongEpoch(MlsError, RemoteError):
    """The message belongs to an epoch we cannot process (too old or future)."""


class NotAMember(MlsError, LocalError):
    """We are not (or no longer) a member of this group, or the sender is not."""


class UnknownGroup(MlsError, LocalError):
    """No group state with this id exists in the store."""


class StorageFailure(MlsError, LocalError):
    """The MLS state file could not be read or written (or failed to decrypt)."""


class UnsupportedCiphersuite(MlsError, LocalError):
    """The requested or received ciphersuite is not supported by this build."""


class PendingCommit(MlsError, LocalError):
    """A commit is pending: merge or clear it before creating another."""


class NoWelcomeForUs(MlsError, RemoteError):
    """A Welcome message holds no secrets for any of our KeyPackages."""


class MlsCryptoError(MlsError, LocalError):
    """A cryptographic operation failed (key generation, signing, ...)."""


# ------------------------------------------------------------------------- crypto


class CryptoError(QpcError):
    """Base for envelope, identity and OPAQUE errors outside MLS."""


class DecryptionFailed(CryptoError, RemoteError):
    """A sealed envelope or encrypted record could not be opened."""


class BadSignature(CryptoError, RemoteError):
    """A signature from a peer did not verify."""


class WrongPassphrase(CryptoError, LocalError):
    """The profile passphrase is wrong (the profile is untouched)."""


class InvalidKey(CryptoError, RemoteError):
    """Key bytes have the wrong length or do not encode a valid key."""


class MalformedEnvelope(CryptoError, RemoteError):
    """A sealed envelope or its plaintext is not well-formed (version, lengths, padding)."""


class OpaqueError(CryptoError, RemoteError):
    """An OPAQUE message or state could not be parsed or processed."""


class OpaqueLoginFailed(OpaqueError, LoginFailed):
    """OPAQUE login failed: wrong password or unknown user (indistinguishable).

    Also a :class:`LoginFailed`, so the node can answer it on the wire as is.
    """


class ProfileError(LocalError):
    """The client profile is missing, exists already, or is damaged."""
