"""Turn exceptions into sentences a person can act on.

Everything shown in a notification goes through :func:`describe_error`, so
no traceback or internal repr ever reaches the screen. Unexpected exceptions
get a generic sentence pointing at the log file.
"""

from __future__ import annotations

from proto.errors import (
    AlreadyExists,
    ConnectionLost,
    Expired,
    FingerprintMismatch,
    LoginFailed,
    NotAMember,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProfileError,
    QpcError,
    QueueFull,
    RateLimited,
    TransportError,
    Unauthenticated,
    Unavailable,
    UnknownGroup,
    WrongPassphrase,
)

__all__ = ["describe_error", "local_node_hint"]

_PLAIN: tuple[tuple[type[BaseException], str], ...] = (
    (WrongPassphrase, "Wrong passphrase for this profile."),
    (LoginFailed, "Wrong username or password."),
    (FingerprintMismatch, "The server's key changed since you last connected. Not connecting."),
    (QueueFull, "The recipient's inbox is full; try again later."),
    (PayloadTooLarge, "That message is too large to send."),
    (AlreadyExists, "That name is already taken."),
    (NotFound, "Not found: check the user or channel name."),
    (Unauthenticated, "Your session expired; log in again."),
    (Expired, "Your session expired; log in again."),
    (PermissionDenied, "The server refused that operation."),
    (NotAMember, "You are not a member of that channel."),
    (UnknownGroup, "Unknown channel."),
    (Unavailable, "The server is unavailable right now."),
    (ConnectionLost, "Cannot reach the server (is it running, and is the address right?)."),
    (TransportError, "Cannot reach the server (is it running, and is the address right?)."),
    (ProfileError, "The local profile could not be read or written."),
)


def describe_error(error: BaseException) -> str:
    """A one-line, user-facing description of ``error``."""
    if isinstance(error, RateLimited):
        wait = getattr(error, "retry_after_ms", 0) or 0
        if wait:
            return f"Slow down: try again in {max(1, round(wait / 1000))} s."
        return "Slow down: too many requests."
    for cls, text in _PLAIN:
        if isinstance(error, cls):
            detail = _detail(error)
            if detail and cls in (NotFound, AlreadyExists, PermissionDenied):
                return detail[0].upper() + detail[1:] + ("" if detail.endswith(".") else ".")
            return text
    if isinstance(error, ConnectionRefusedError | TimeoutError | OSError):
        return "Cannot reach the server (is it running, and is the address right?)."
    if isinstance(error, QpcError):
        detail = _detail(error)
        return detail or "The operation failed."
    return "Something went wrong (details are in the log file)."


def _detail(error: BaseException) -> str:
    raw = getattr(error, "message", None)
    text = raw if isinstance(raw, str) else str(error)
    text = text.strip()
    if not text or text == type(error).__name__:
        return ""
    return text.splitlines()[0][:160]


def local_node_hint(error: BaseException, address: str) -> str | None:
    """For an unknown user while on the embedded local node: why, and what to do.

    Every HOME (and every Unix user) gets its own local node, so a person
    next to you with their own HOME is not on yours. They can use yours: it
    listens on a loopback port, its files stay private to you.
    """
    unknown = isinstance(error, NotFound) or (
        isinstance(error, QpcError)
        and ("has no devices" in str(error) or "nobody to add" in str(error))
    )
    if not unknown:
        return None
    where = address or "this node's address (`qpc local-node` prints it)"
    return (
        "You are on this account's own local node. Someone with their own HOME or Unix "
        f"account has another one: they can join yours with `qpc --server {where}`."
    )
