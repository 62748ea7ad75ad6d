"""aioquic side of the RPC server: one protocol object per client connection.

Internal to :mod:`proto.rpc_server` (use :class:`proto.rpc_server.RpcServer`):
reassembles requests per stream, enforces the per-connection limits, runs
handlers (eagerly, then as tasks) and maps their outcome to responses. What
the connections of one server share is a :class:`ServerState`, which the
server creates and reads; this module never imports the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any, cast

from proto.codec import (
    CodecLimits,
    ErrorInfo,
    Method,
    Response,
    decode_request,
    encode_response,
    frame_length,
)
from proto.errors import (
    BadRequest,
    InternalError,
    LimitExceeded,
    PayloadTooLarge,
    ProtocolError,
    RpcError,
    Unavailable,
)
from proto.quic_stack import (
    Buffer,
    QuicConnection,
    QuicConnectionProtocol,
    QuicServer,
    events,
    grant_stream_credit,
    pull_quic_header,
)
from proto.rpc import (
    CallContext,
    CloseCode,
    StreamError,
    ack_now,
    ack_pending,
    drop_scheduled_transmit,
    hold_ack,
)
from proto.udp_batch import DatagramBatcher

log = logging.getLogger("proto.rpc_server")

SMALLEST_MAX_DATAGRAM_SIZE = 1200
"""RFC 9000 14.1: a client's Initial datagrams are at least this big (aioquic's value)."""

ACK_HOLD = 0.004
"""Seconds after a request a delayed ACK may wait for pending answers to carry it."""


Dispatch = dict[type[Any], tuple[Method, Callable[..., Any]]]


class ServerState:
    """What every connection of one server shares: limits, the dispatch table,
    the live connections and calls, and whether the server is closing."""

    __slots__ = (
        "batcher",
        "buffered_request_bytes",
        "closing",
        "connection_limits",
        "connections",
        "dispatch",
        "header_limits",
        "ids",
        "limits",
        "max_streams",
        "per_address",
        "refused_connections",
        "request_timeout",
        "tasks",
    )

    def __init__(
        self,
        *,
        dispatch: Dispatch,
        limits: CodecLimits,
        header_limits: CodecLimits,
        max_streams: int,
        request_timeout: float,
        connection_limits: ConnectionLimits | None = None,
    ) -> None:
        self.dispatch = dispatch
        """Params type -> (method, handler)."""
        self.limits = limits
        """Reader limits for requests."""
        self.header_limits = header_limits
        """Limits for reading a segment table before the body is complete."""
        self.max_streams = max_streams
        """Concurrent calls per connection."""
        self.request_timeout = request_timeout
        """Seconds a stream may take to deliver its whole request."""
        self.connection_limits = connection_limits or ConnectionLimits()
        """Connection counts, handshake time and unfinished-request budget."""
        self.ids = itertools.count(1)
        self.connections: set[ServerConnection] = set()
        self.per_address: dict[str, int] = {}
        """Open connections per source host (counted from each one's first datagram)."""
        self.refused_connections = 0
        """New connections dropped by the connection limits."""
        self.buffered_request_bytes = 0
        """Bytes of unfinished requests held now, over all connections."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.batcher: DatagramBatcher | None = None
        """Sends each transmit's datagrams (proto.udp_batch); None: one ``sendto`` each."""

    def admit(self, addr: Any) -> bool:
        """May a new connection from ``addr`` be created? (Counts the refusal if not.)"""
        lim = self.connection_limits
        if (
            len(self.connections) >= lim.max_connections
            or self.per_address.get(peer_host(addr), 0) >= lim.max_connections_per_address
        ):
            self.refused_connections += 1
            return False
        return True

    def opened(self, conn: ServerConnection, host: str) -> None:
        """Count ``conn`` (on its first datagram, when its address is known)."""
        self.connections.add(conn)
        self.per_address[host] = self.per_address.get(host, 0) + 1

    def closed(self, conn: ServerConnection, host: str) -> None:
        """Forget ``conn`` (once)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        left = self.per_address.get(host, 1) - 1
        if left > 0:
            self.per_address[host] = left
        else:
            self.per_address.pop(host, None)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """Connection-level limits of a server (docs/THREAT_MODEL.md, "Abuse and limits")."""

    max_connections: int = 1024
    """Open connections; a new client's Initial beyond is dropped."""
    max_connections_per_address: int = 64
    """Open connections per source IP, any port; beyond: dropped as above."""
    handshake_timeout: float = 10.0
    """Seconds a connection may take to complete its handshake before it is closed."""
    max_buffered_request_bytes: int = 64 * 1024 * 1024
    """Bytes of unfinished requests held over all connections."""
    max_buffered_per_connection: int = 8 * 1024 * 1024
    """Bytes of unfinished requests held by one connection."""


def peer_host(addr: Any) -> str:
    """The source host of a UDP address (IPv4-mapped IPv6 as plain IPv4)."""
    host = str(addr[0])
    return host.removeprefix("::ffff:") if "." in host else host


def _peer_of(addr: Any) -> tuple[str, int]:
    return (peer_host(addr), int(addr[1]))


class ServerConnection(QuicConnectionProtocol):
    """One client connection: reassembles requests and runs calls as tasks."""

    def __init__(self, quic: QuicConnection, *, server: ServerState, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._server = server
        self._id = next(server.ids)
        self._peer: tuple[str, int] = ("", 0)
        self._bufs: dict[int, bytearray] = {}
        self._buffered = 0  # sum of the lengths in _bufs, also in the server's total
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._streaming: set[int] = set()
        self._refused: set[int] = set()  # answered early; rest of the body is dropped
        self._limits = server.limits
        self._terminated = False
        self._in_datagram = False
        self._answered = 0
        self._ack_held = False
        # QUIC stream credit: aioquic grants 128 streams and raises MAX_STREAMS
        # in batches, so a client with 64 calls in flight (plus the finished
        # streams awaiting their ACK) kept opening blocked streams that waited
        # a round trip for credit. Grant the documented concurrency limit
        # instead (never less than aioquic's default; set before the
        # handshake sends the transport parameters).
        grant_stream_credit(quic, server.max_streams)
        # Counted on its first datagram (when the address is known); a
        # connection that has not finished its handshake in time is closed.
        self._handshake_done = False
        self._handshake_timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------- aioquic hooks

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if not self._peer[0]:
            self._peer = _peer_of(addr)
            self._server.opened(self, self._peer[0])
            self._handshake_timer = self._loop.call_later(
                self._server.connection_limits.handshake_timeout, self._on_handshake_timeout
            )
        # aioquic's datagram_received (receive, process events, transmit), plus:
        # answers produced while processing are sent by this transmit(). ACKs
        # keep aioquic's 1 ms delay: forcing one into every answer put its
        # processing on the client's critical path (docs/perf/rpc.md item 8).
        self._in_datagram = True
        self._answered = 0
        try:
            now = self._loop.time()
            self._quic.receive_datagram(cast(bytes, data), addr, now=now)
            self._process_events()
            if self._answered == 0 and ack_pending(self._quic, now):
                # Nothing answered and no ACK due yet (the requests wait, e.g.
                # on the group commit): building packets now would walk every
                # open stream for nothing. The ACK timer or the answers
                # transmit, whichever comes first, within aioquic's ACK delay.
                self._arm_timer()
            else:
                self.transmit()
        finally:
            self._in_datagram = False

    def transmit(self) -> None:
        drop_scheduled_transmit(self)
        transport = self._transport
        # The server's socket is closed (shutdown): nothing can be sent, and
        # no timer is re-armed (aioquic would fail in sendto on every timer).
        if transport is None or transport.is_closing():
            return
        batcher = self._server.batcher
        if batcher is None:
            super().transmit()
            return
        # aioquic's transmit(), with the datagrams sent by the batcher
        self._transmit_task = None
        batcher.send(self._quic.datagrams_to_send(now=self._loop.time()))
        self._arm_timer()

    def _handle_timer(self) -> None:
        # The ACK timer fired while calls are still running (an enqueue waits
        # for its commit): hold the ACK a little so the answer carries it,
        # instead of an ACK-only datagram now and the answer right after.
        # Once per ACK: when the held ACK falls due, it is sent.
        unary = len(self._calls) > len(self._streaming)  # fetchWait never "answers"
        if unary and not self._ack_held and hold_ack(self._quic, self._loop.time(), ACK_HOLD):
            self._ack_held = True
            self._timer = None
            self._arm_timer()
            return
        self._ack_held = False
        super()._handle_timer()

    def _arm_timer(self) -> None:
        """The timer half of aioquic's ``transmit()`` (without building packets)."""
        timer_at = self._quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self._loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at

    def _on_handshake_timeout(self) -> None:
        self._handshake_timer = None
        if not self._handshake_done and not self._terminated:
            self.close(
                error_code=int(CloseCode.HANDSHAKE_TIMEOUT), reason_phrase="handshake timeout"
            )

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._on_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.HandshakeCompleted):
            self._handshake_done = True
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None
        elif isinstance(event, events.StreamReset | events.StopSendingReceived):
            self._abort_stream(event.stream_id)
        elif isinstance(event, events.ConnectionTerminated):
            self._on_terminated()

    # ------------------------------------------------------------ requests

    def _on_data(self, sid: int, data: bytes, fin: bool) -> None:
        if sid & 3 != 0 or sid in self._calls:
            return  # not a client bidi stream, or data after the request: ignore
        if sid in self._refused:  # answered already; drain until FIN/reset
            if fin:
                self._refused.discard(sid)
            return
        buf = self._bufs.get(sid)
        if buf is None:
            if len(self._bufs) + len(self._calls) >= self._server.max_streams:
                self._refuse(sid, LimitExceeded("too many concurrent calls on this connection"))
                if not fin:
                    self._refused.add(sid)
                return
            if fin and len(data) <= self._limits.max_message_bytes:  # fast path: one chunk
                self._dispatch(sid, data)
                return
            buf = self._bufs[sid] = bytearray()
            self._timers[sid] = self._loop.call_later(
                self._server.request_timeout, self._on_request_timeout, sid
            )
        buf += data
        self._buffered += len(data)
        self._server.buffered_request_bytes += len(data)
        try:  # the segment table announces the size: refuse early, never buffer it
            announced = frame_length(buf, self._server.header_limits)
        except ProtocolError:
            announced = 0  # bad segment table: answered badRequest on FIN
        if max(announced, len(buf)) > self._limits.max_message_bytes:
            self._drop_buffer(sid)
            if not fin:
                self._refused.add(sid)
            self._refuse(
                sid,
                PayloadTooLarge(f"request exceeds {self._limits.max_message_bytes} bytes"),
                StreamError.REQUEST_TOO_LARGE,
            )
            return
        if fin:
            self._drop_buffer(sid)
            self._dispatch(sid, bytes(buf))
        elif not self._within_budget():  # held by then: at most one chunk over
            self._drop_buffer(sid)
            self._refused.add(sid)
            self._refuse(sid, LimitExceeded("too much unfinished request data; try again later"))

    def _within_budget(self) -> bool:
        """Unfinished requests within this connection's and the server's budget."""
        lim = self._server.connection_limits
        return (
            self._buffered <= lim.max_buffered_per_connection
            and self._server.buffered_request_bytes <= lim.max_buffered_request_bytes
        )

    def _drop_buffer(self, sid: int) -> None:
        buf = self._bufs.pop(sid, None)
        if buf is not None:
            self._buffered -= len(buf)
            self._server.buffered_request_bytes -= len(buf)
        timer = self._timers.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def _on_request_timeout(self, sid: int) -> None:
        self._timers.pop(sid, None)
        if sid in self._bufs:
            self._drop_buffer(sid)
            self._refused.add(sid)
            self._refuse(
                sid, BadRequest("request not completed in time"), StreamError.REQUEST_TIMEOUT
            )
            self.transmit()

    def _refuse(
        self, sid: int, exc: RpcError, stop: StreamError | None = StreamError.REFUSED
    ) -> None:
        """Answer ``exc`` and FIN; ask the client to stop sending the rest."""
        self._send(sid, encode_response(Response(result=ErrorInfo.from_exception(exc))), True)
        if stop is not None:
            # ValueError: our receive side already finished
            with contextlib.suppress(ValueError):
                self._quic.stop_stream(sid, int(stop))

    def _dispatch(self, sid: int, data: bytes) -> None:
        server = self._server
        if server.closing:
            self._refuse(sid, Unavailable("node is shutting down"), None)
            return
        try:
            request = decode_request(data, self._limits)
        except ProtocolError as exc:
            self._refuse(sid, BadRequest(str(exc)), None)
            return
        method, fn = server.dispatch[type(request.call)]
        ctx = CallContext(
            auth=request.auth, peer=self._peer, connection_id=self._id, method=method.name
        )
        if method.streaming:
            try:
                stream = fn(ctx, request.call)
            except Exception as exc:
                self._reply_error(sid, method, exc)
                return
            self._streaming.add(sid)
            self._spawn(sid, self._run_stream(sid, method, stream))
            return
        # Eager start (like Python 3.12's eager tasks): run the handler's first
        # step now, in its own context copy that the task then continues in.
        # Cheap handlers finish here, without a task or a loop round trip, and
        # their answer leaves with this datagram's ACK.
        context = contextvars.copy_context()
        try:
            coro = fn(ctx, request.call)
            first = context.run(coro.send, None)
        except StopIteration as done:
            self._reply(sid, method, done.value)
            return
        except (Exception, asyncio.CancelledError) as exc:
            self._reply_error(sid, method, exc)
            return
        self._spawn(sid, self._finish(sid, method, Resume(coro, first)), context)

    def _spawn(
        self,
        sid: int,
        coro: Coroutine[Any, Any, None],
        context: contextvars.Context | None = None,
    ) -> None:
        task = self._loop.create_task(coro, context=context)
        self._calls[sid] = task
        self._server.tasks.add(task)
        task.add_done_callback(self._server.tasks.discard)

    async def _finish(self, sid: int, method: Method, pending: Resume) -> None:
        try:
            result = await pending
        except asyncio.CancelledError:
            self._cancelled(sid)
            raise
        except Exception as exc:
            self._reply_error(sid, method, exc)
            return
        finally:
            self._calls.pop(sid, None)
        self._reply(sid, method, result)

    def _cancelled(self, sid: int) -> None:
        if self._server.closing and not self._terminated:
            self._send_error(sid, Unavailable("node is shutting down"))

    def _reply(self, sid: int, method: Method, result: Any) -> None:
        try:
            if type(result) is not method.result:
                raise TypeError(f"{method.attr} returned {type(result).__name__}")
            data = encode_response(Response(result=result))
        except Exception as exc:
            self._reply_error(sid, method, exc)
            return
        self._send(sid, data, True)

    def _reply_error(self, sid: int, method: Method, exc: BaseException) -> None:
        if not isinstance(exc, RpcError):
            log.error("handler %s failed (connection %d)", method.attr, self._id, exc_info=exc)
            exc = InternalError("internal error")
        self._send_error(sid, exc)

    async def _run_stream(self, sid: int, method: Method, it: AsyncIterator[Any]) -> None:
        try:
            async for result in it:
                if type(result) is not method.result:
                    raise TypeError(f"{method.attr} yielded {type(result).__name__}")
                self._send(sid, encode_response(Response(result=result)), False)
            self._send(sid, b"", True)
        except asyncio.CancelledError:
            self._cancelled(sid)
            raise
        except Exception as exc:
            self._reply_error(sid, method, exc)
        finally:
            self._calls.pop(sid, None)
            self._streaming.discard(sid)
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _send_error(self, sid: int, exc: RpcError) -> None:
        self._send(sid, encode_response(Response(result=ErrorInfo.from_exception(exc))), True)

    def _send(self, sid: int, data: bytes, fin: bool) -> None:
        if self._terminated:
            return
        try:
            self._quic.send_stream_data(sid, data, fin)
            self._answered += 1
        except (ValueError, RuntimeError):
            return  # stream reset / stopped by the peer meanwhile
        if self._ack_held:  # the held ACK leaves with this answer
            self._ack_held = False
            ack_now(self._quic, self._loop.time())
        if not self._in_datagram:  # datagram_received() transmits when it is done
            self._transmit_soon()

    # ----------------------------------------------------------- teardown

    def _abort_stream(self, sid: int) -> None:
        self._refused.discard(sid)
        self._drop_buffer(sid)
        task = self._calls.pop(sid, None)
        if task is not None:
            task.cancel()

    def _on_terminated(self) -> None:
        self._terminated = True
        self.drop_pending_requests()
        for task in self._calls.values():
            task.cancel()
        self._calls.clear()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._server.closed(self, self._peer[0])

    def drop_pending_requests(self) -> None:
        """Forget half-received requests (and their timers) before closing."""
        for sid in list(self._bufs):
            self._drop_buffer(sid)

    def cancel_streaming(self) -> None:
        """Stop subscriptions (graceful shutdown): they never finish on their own."""
        for sid in list(self._streaming):
            task = self._calls.get(sid)
            if task is not None:
                task.cancel()


class Resume:
    """Awaitable that continues a coroutine whose first step already ran.

    The first value the coroutine yielded (the future it waits on) is handed to
    the task driving this object, so cancellation and wake-ups work as if the
    task had started the coroutine itself.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation: deliver it to the handler
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Listener(QuicServer):
    """aioquic's UDP endpoint, plus a future that completes when the socket closes.

    ``admit(addr)`` is asked before a client's first Initial packet creates a
    connection; when it says no the packet is dropped, before any TLS work or
    per-connection state (the client's handshake times out).
    """

    def __init__(self, *, admit: Callable[[Any], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._admit = admit
        self.socket_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        data = cast(bytes, data)
        # A long-header Initial (v1: form and fixed bits set, type 0) of a
        # connection we do not know would create one: ask first.
        if len(data) >= SMALLEST_MAX_DATAGRAM_SIZE and data[0] & 0xF0 == 0xC0:
            try:
                header = pull_quic_header(
                    Buffer(data=data), host_cid_length=self._configuration.connection_id_length
                )
            except ValueError:
                return
            if header.destination_cid not in self._protocols and not self._admit(addr):
                return
        super().datagram_received(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.socket_closed.done():
            self.socket_closed.set_result(None)
