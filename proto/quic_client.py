"""aioquic side of the RPC client: the protocol object of one connection.

Internal to :mod:`proto.rpc_client` (use :class:`proto.rpc_client.RpcClient`):
tracks the calls in flight per stream, reassembles and decodes responses, and
turns resets, closes and dead peers into errors on those calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any, cast

from proto.codec import (
    CodecLimits,
    Response,
    decode_response,
)
from proto.errors import (
    ConnectionLost,
    ProtocolError,
    TransportError,
)
from proto.quic_stack import (
    QuicConnection,
    QuicConnectionProtocol,
    events,
    peer_certificate,
)
from proto.rpc import MessageSplitter, StreamError, drop_scheduled_transmit

log = logging.getLogger("proto.rpc_client")
END: Any = object()
"""Queue marker: the streaming call finished (FIN)."""


class PendingCall:
    """Receive state of one stream: a future (unary) or a queue (streaming)."""

    __slots__ = ("buf", "deadline", "future", "limit", "queue", "splitter")

    def __init__(self, limits: CodecLimits, streaming: bool, loop: asyncio.AbstractEventLoop):
        self.limit = limits.max_message_bytes
        self.buf: bytearray | None = None  # only when a response spans several chunks
        self.deadline = math.inf
        self.future: asyncio.Future[Response] | None = None
        self.queue: asyncio.Queue[Any] | None = None
        self.splitter: MessageSplitter | None = None
        if streaming:
            self.queue = asyncio.Queue()
            self.splitter = MessageSplitter(limits)
        else:
            self.future = loop.create_future()

    def fail(self, exc: BaseException) -> None:
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(exc)
                self.future.exception()  # the caller may be gone: don't warn
        elif self.queue is not None:
            self.queue.put_nowait(exc)


class ClientConnection(QuicConnectionProtocol):
    """aioquic protocol of one client connection."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.calls: dict[int, PendingCall] = {}
        self.last_rx = time.monotonic()
        self.dead: BaseException | None = None
        self.handshake: asyncio.Future[Any] = self._loop.create_future()
        self.limits = CodecLimits()
        self.on_lost: Any = None
        self._udp: asyncio.BaseTransport | None = None  # ours, not the library's private one

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._udp = transport
        super().connection_made(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.last_rx = time.monotonic()
        # aioquic's datagram_received, but the transmit waits for the next loop
        # turn: the answers in this datagram wake their callers first, and their
        # next requests leave in the same packets (one packet build instead of
        # two, each walking every open stream).
        self._quic.receive_datagram(cast(bytes, data), addr, now=self._loop.time())
        self._process_events()
        self._transmit_soon()

    def transmit(self) -> None:
        # Sequential calls: the answer schedules a transmit, the next request
        # transmits first; the scheduled one is then redundant.
        drop_scheduled_transmit(self)
        transport = self._transport
        # A closed socket (the connection was dropped) sends nothing, and no
        # timer is re-armed: aioquic would fail in sendto on every timer.
        if self.dead is None and transport is not None and not transport.is_closing():
            super().transmit()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            call = self.calls.get(event.stream_id)
            if call is not None:
                self._on_data(event.stream_id, call, event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            call = self.calls.pop(event.stream_id, None)
            if call is not None:
                call.fail(TransportError(f"node reset the stream (code {event.error_code})"))
        elif isinstance(event, events.HandshakeCompleted):
            if not self.handshake.done():
                self.handshake.set_result(peer_certificate(self._quic))
        elif isinstance(event, events.ConnectionTerminated):
            reason = event.reason_phrase or f"code {event.error_code}"
            self.kill(ConnectionLost(f"connection closed: {reason}"), close=False)

    def _on_data(self, sid: int, call: PendingCall, data: bytes, fin: bool) -> None:
        try:
            if call.future is not None:  # unary: exactly one response, then FIN
                if not fin or call.buf is not None:
                    if call.buf is None:
                        call.buf = bytearray()
                    call.buf += data
                    if len(call.buf) > call.limit:
                        raise ProtocolError("response exceeds the size limit")
                    if not fin:
                        return
                    data = bytes(call.buf)
                self.calls.pop(sid, None)
                if not call.future.done():
                    call.future.set_result(decode_response(data, self.limits))
                return
            assert call.queue is not None and call.splitter is not None
            for m in call.splitter.feed(data) if data else ():
                call.queue.put_nowait(decode_response(m, self.limits))
            if fin:
                if call.splitter.pending:
                    raise ProtocolError("stream ended inside a message")
                self.calls.pop(sid, None)
                call.queue.put_nowait(END)
        except ProtocolError as exc:
            call.fail(exc)
            self.stop(sid)

    def stop(self, sid: int) -> None:
        """Ask the node to stop sending on ``sid`` (cancels the call there)."""
        self.calls.pop(sid, None)
        if self.dead is not None:
            return
        with contextlib.suppress(ValueError, RuntimeError):
            self._quic.stop_stream(sid, int(StreamError.CANCELLED))
            self._transmit_soon()

    def kill(self, exc: BaseException, *, close: bool = True, code: int = 0) -> None:
        """Mark dead, fail every call with ``exc``, drop the socket."""
        if self.dead is not None:
            return
        if close:
            with contextlib.suppress(Exception):
                self._quic.close(error_code=code, reason_phrase=str(exc)[:100])
                super().transmit()
        self.dead = exc
        if not self.handshake.done():
            self.handshake.set_exception(exc)
            self.handshake.exception()  # mark retrieved
        for call in self.calls.values():
            call.fail(exc)
        self.calls.clear()
        if self._udp is not None:
            self._udp.close()
        if self.on_lost is not None:
            self.on_lost(self)


def expire_calls(proto: ClientConnection) -> None:
    """Fail unary calls past their deadline (checked each keepalive tick)."""
    now = proto._loop.time()
    late = [sid for sid, call in proto.calls.items() if call.deadline < now]
    for sid in late:
        call = proto.calls[sid]
        proto.stop(sid)
        call.fail(TransportError("call timed out"))
