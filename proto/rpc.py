"""Shared pieces of the stream-per-call RPC: ALPN, stream/close codes, framing.

The node implements :class:`NodeHandler` (generated in :mod:`proto.rpc_api`
from the schema: one method per ``NodeService`` method, each given a
:class:`CallContext`) and serves it with :class:`proto.rpc_server.RpcServer`;
clients use :class:`proto.rpc_client.RpcClient`. Wire framing is one Cap'n Proto
message per ``Request``/``Response`` (see :mod:`proto.codec`).
"""

from __future__ import annotations

import enum
from typing import Any

from aioquic.tls import Epoch

from proto.codec import DEFAULT_LIMITS, CodecLimits, frame_length
from proto.errors import ProtocolError
from proto.messages import CallContext
from proto.rpc_api import NodeHandler

__all__ = [
    "ALPN",
    "DEFAULT_PORT",
    "CallContext",
    "CloseCode",
    "MessageSplitter",
    "NodeHandler",
    "StreamError",
    "ack_now",
    "ack_pending",
    "drop_scheduled_transmit",
    "hold_ack",
]

ALPN = "qpc/1"
"""TLS ALPN protocol id."""

DEFAULT_PORT = 7000
"""Default UDP port of a node."""


class StreamError(enum.IntEnum):
    """QUIC application error codes used in RESET_STREAM / STOP_SENDING."""

    CANCELLED = 0x100
    """The client no longer wants the answer (cancel, subscription closed)."""
    REQUEST_TOO_LARGE = 0x101
    """The request body exceeded the node's ``max_request_bytes``."""
    REQUEST_TIMEOUT = 0x102
    """The request was not completed (FIN) within ``request_timeout``."""
    REFUSED = 0x103
    """The stream was refused (too many streams, node shutting down)."""


class CloseCode(enum.IntEnum):
    """QUIC application error codes used in CONNECTION_CLOSE."""

    NO_ERROR = 0
    SHUTDOWN = 0x200
    """The node is shutting down (graceful close)."""
    CLIENT_CLOSE = 0x201
    """The client closed the connection."""
    KEEPALIVE_TIMEOUT = 0x202
    """The client declared the node dead (no packets within ``dead_timeout``)."""
    HANDSHAKE_TIMEOUT = 0x203
    """The node closed a connection that did not complete its handshake in time."""


def drop_scheduled_transmit(protocol: Any) -> None:
    """Cancel a ``_transmit_soon`` that a transmit happening now makes redundant.

    aioquic's ``transmit()`` clears its handle but does not cancel it, so the
    scheduled call would walk every open stream again for nothing (measured:
    two packet builds per sequential call instead of one; docs/perf/rpc.md
    item 8). Call at the start of a ``transmit()`` override.
    """
    pending = getattr(protocol, "_transmit_task", None)
    if pending is not None:
        pending.cancel()


def ack_now(quic: Any, now: float) -> None:
    """Make a pending delayed ACK due now, so the next packet carries it.

    aioquic delays ACKs by 1 ms and only bundles them once due; a request/answer
    exchange is faster than that, which would cost an extra ACK-only datagram
    per call. (Private aioquic state; harmless if it ever disappears.)
    """
    space = getattr(quic, "_spaces", {}).get(Epoch.ONE_RTT)
    if space is not None and space.ack_at is not None and space.ack_at > now:
        space.ack_at = now


def ack_pending(quic: Any, now: float) -> bool:
    """True when a delayed ACK is armed for later, so a packet will be built by then.

    Lets a receiver skip building packets right after a datagram that
    answered nothing (its requests wait, e.g. on a commit): aioquic's packet
    building walks every open stream even when it produces nothing, and the
    ACK timer (at most aioquic's ACK delay, 1 ms, away) or the answer
    transmits whatever else became due. False (transmit
    now) before the handshake is complete, when the connection is not plainly
    connected, or when less than half the congestion window is free (data may
    be waiting for the window this datagram's ACKs freed). (Private aioquic
    state; without it this answers False, i.e. no change.)
    """
    if not getattr(quic, "_handshake_complete", False):
        return False
    if getattr(getattr(quic, "_state", None), "name", None) != "CONNECTED":
        return False
    space = getattr(quic, "_spaces", {}).get(Epoch.ONE_RTT)
    if space is None or space.ack_at is None or space.ack_at <= now:
        return False
    loss: Any = getattr(quic, "_loss", None)
    try:
        return bool(loss.bytes_in_flight * 2 < loss.congestion_window)
    except AttributeError:  # includes no _loss at all
        return False


def hold_ack(quic: Any, now: float, hold: float) -> bool:
    """Postpone a due delayed ACK to at most ``hold`` s after it was armed.

    For a server whose answers are imminent (e.g. waiting on a group commit):
    the answer then carries the ACK instead of an ACK-only datagram going out
    first. Returns False (nothing changed) when the ACK is not due, when the
    bound is reached, or when anything else (loss detection, pacing, idle
    close) is due as well. ``hold`` must stay well below the max_ack_delay the
    peer assumes (25 ms by default). Hold a given ACK once: the bound counts
    from ``ack_at`` minus the ACK delay, so a second hold would extend it.
    (Private aioquic state.)
    """
    space = getattr(quic, "_spaces", {}).get(Epoch.ONE_RTT)
    delay = getattr(quic, "_ack_delay", None)
    if space is None or delay is None or space.ack_at is None or space.ack_at > now:
        return False
    due = space.ack_at
    until = due - delay + hold
    if until <= now:
        return False
    space.ack_at = until
    other = quic.get_timer()
    if other is not None and other <= now:
        space.ack_at = due
        return False
    return True


class MessageSplitter:
    """Reassembles framed Cap'n Proto messages from stream chunks."""

    __slots__ = ("_buf", "_limits")

    def __init__(self, limits: CodecLimits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every complete message now available.

        Raises:
            ProtocolError: a segment table announces a message over the limit.
        """
        if not self._buf:
            # Fast path: the chunk is exactly one message (the common case).
            n = frame_length(data, self._limits)
            if n == len(data):
                return [data]
        self._buf += data
        out: list[bytes] = []
        while True:
            n = frame_length(self._buf, self._limits)
            if n == 0 or n > len(self._buf):
                if len(self._buf) > self._limits.max_message_bytes:
                    raise ProtocolError("message exceeds the size limit")
                return out
            out.append(bytes(self._buf[:n]))
            del self._buf[:n]

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole message."""
        return len(self._buf)
