"""RPC server half: serves a :class:`proto.rpc.NodeHandler` over QUIC (ALPN ``qpc/1``).

One client-initiated bidirectional stream per call: the client sends one framed
``Request`` and FIN; the server answers one ``Response`` and FIN (``fetchWait``:
a sequence of responses, then FIN). Typical use::

    server = RpcServer(handler, ServerConfig(port=0, tls_dir=data_dir / "tls"))
    await server.start()
    print(server.port, server.fingerprint)
    ...
    await server.close()            # finishes in-flight calls (grace period)

aioquic stays inside this module; handler exceptions never reach the wire as
tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from proto import tls
from proto.codec import (
    METHOD_BY_PARAMS,
    METHODS,
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
from proto.rpc import ALPN, DEFAULT_PORT, CallContext, CloseCode, NodeHandler, StreamError, ack_now

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Node transport settings; every field has a default."""

    host: str = "::"
    """Address to bind (``::`` = all, dual stack)."""
    port: int = DEFAULT_PORT
    """UDP port; 0 picks a free one (see :attr:`RpcServer.port`)."""
    cert_file: Path | None = None
    """PEM certificate; with ``key_file``. None: self-signed in ``tls_dir``."""
    key_file: Path | None = None
    """PEM private key for ``cert_file``."""
    tls_dir: Path | None = None
    """Where the self-signed certificate is created once and reused."""
    idle_timeout: float = 60.0
    """QUIC idle timeout (s); clients keep long calls alive with PINGs."""
    max_streams_per_connection: int = 256
    """Concurrent calls per connection; more are answered ``limitExceeded``."""
    max_request_bytes: int = 4 * 1024 * 1024
    """Largest request; bigger bodies get ``payloadTooLarge`` + STOP_SENDING."""
    request_timeout: float = 30.0
    """Seconds a stream may take to deliver its whole request (FIN)."""
    nesting_limit: int = 16
    """Cap'n Proto nesting limit for request readers."""
    traversal_limit_words: int = 1024 * 1024
    """Upper bound of the Cap'n Proto traversal limit for request readers."""
    shutdown_grace: float = 10.0
    """Seconds :meth:`RpcServer.close` waits for in-flight unary calls."""
    max_stream_data: int = 1024 * 1024
    """QUIC per-stream flow-control window (bytes)."""
    max_data: int = 8 * 1024 * 1024
    """QUIC per-connection flow-control window (bytes)."""

    def codec_limits(self) -> CodecLimits:
        """Reader limits derived from this config."""
        return CodecLimits(
            max_message_bytes=self.max_request_bytes,
            traversal_limit_words=self.traversal_limit_words,
            nesting_limit=self.nesting_limit,
        )


_Dispatch = dict[type[Any], tuple[Method, Callable[..., Any]]]


def _peer_of(addr: Any) -> tuple[str, int]:
    host = str(addr[0])
    return (host.removeprefix("::ffff:") if "." in host else host, int(addr[1]))


class _Connection(QuicConnectionProtocol):
    """One client connection: reassembles requests and runs calls as tasks."""

    def __init__(self, quic: QuicConnection, *, server: RpcServer, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._server = server
        self._id = next(server._ids)
        self._peer: tuple[str, int] = ("", 0)
        self._bufs: dict[int, bytearray] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._streaming: set[int] = set()
        self._refused: set[int] = set()  # answered early; rest of the body is dropped
        self._limits = server._limits
        self._terminated = False
        self._in_datagram = False
        self._answered = 0
        server._connections.add(self)

    # -------------------------------------------------------- aioquic hooks

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if not self._peer[0]:
            self._peer = _peer_of(addr)
        # aioquic's datagram_received (receive, process events, transmit), plus:
        # answers produced while processing are sent by this transmit(), and a
        # lone answer carries the ACK instead of a separate ACK-only datagram.
        self._in_datagram = True
        self._answered = 0
        try:
            now = self._loop.time()
            self._quic.receive_datagram(cast(bytes, data), addr, now=now)
            self._process_events()
            if self._answered == 1 and not self._calls:
                ack_now(self._quic, now)
            self.transmit()
        finally:
            self._in_datagram = False

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._on_data(event.stream_id, event.data, event.end_stream)
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
            if len(self._bufs) + len(self._calls) >= self._server.config.max_streams_per_connection:
                self._refuse(sid, LimitExceeded("too many concurrent calls on this connection"))
                if not fin:
                    self._refused.add(sid)
                return
            if fin and len(data) <= self._limits.max_message_bytes:  # fast path: one chunk
                self._dispatch(sid, data)
                return
            buf = self._bufs[sid] = bytearray()
            self._timers[sid] = self._loop.call_later(
                self._server.config.request_timeout, self._on_request_timeout, sid
            )
        buf += data
        try:  # the segment table announces the size: refuse early, never buffer it
            announced = frame_length(buf, self._server._header_limits)
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

    def _drop_buffer(self, sid: int) -> None:
        self._bufs.pop(sid, None)
        timer = self._timers.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def _on_request_timeout(self, sid: int) -> None:
        self._timers.pop(sid, None)
        if self._bufs.pop(sid, None) is not None:
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
        if server._closing:
            self._refuse(sid, Unavailable("node is shutting down"), None)
            return
        try:
            request = decode_request(data, self._limits)
        except ProtocolError as exc:
            self._refuse(sid, BadRequest(str(exc)), None)
            return
        method, fn = server._dispatch[type(request.call)]
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
        self._spawn(sid, self._finish(sid, method, _Resume(coro, first)), context)

    def _spawn(
        self,
        sid: int,
        coro: Coroutine[Any, Any, None],
        context: contextvars.Context | None = None,
    ) -> None:
        task = self._loop.create_task(coro, context=context)
        self._calls[sid] = task
        self._server._tasks.add(task)
        task.add_done_callback(self._server._tasks.discard)

    async def _finish(self, sid: int, method: Method, pending: _Resume) -> None:
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
        if self._server._closing and not self._terminated:
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
        self._server._connections.discard(self)

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


class _Resume:
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


class _Listener(QuicServer):
    """aioquic's UDP endpoint, plus a future that completes when the socket closes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.socket_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.socket_closed.done():
            self.socket_closed.set_result(None)


class RpcServer:
    """Serves a :class:`NodeHandler` on QUIC; see the module docstring."""

    def __init__(self, handler: NodeHandler, config: ServerConfig | None = None) -> None:
        self.config = config if config is not None else ServerConfig()
        self._limits = self.config.codec_limits()
        self._header_limits = dataclasses.replace(self._limits, max_message_bytes=1 << 62)
        self._dispatch: _Dispatch = {}
        for m in METHODS:
            fn = getattr(handler, m.attr, None)
            if fn is None:
                log.warning("handler has no %s: calls answer 'unavailable'", m.attr)
                fn = _not_implemented(m)
            self._dispatch[m.params] = (m, fn)
        assert set(self._dispatch) == set(METHOD_BY_PARAMS)
        self._ids = itertools.count(1)
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._transport: asyncio.DatagramTransport | None = None
        self._listener: _Listener | None = None
        self.identity: tls.ServerIdentity | None = None
        """The TLS identity in use (after :meth:`start`)."""

    async def start(self) -> None:
        """Load or create the TLS identity and bind the UDP socket.

        Raises:
            ConfigError: bad TLS configuration.
            OSError: the address cannot be bound.
        """
        cfg = self.config
        self.identity = tls.load_or_create_server_identity(
            cfg.tls_dir, cert_file=cfg.cert_file, key_file=cfg.key_file
        )
        qcfg = QuicConfiguration(
            is_client=False,
            alpn_protocols=[ALPN],
            idle_timeout=cfg.idle_timeout,
            max_stream_data=cfg.max_stream_data,
            max_data=cfg.max_data,
        )
        qcfg.load_cert_chain(self.identity.cert_file, self.identity.key_file)
        loop = asyncio.get_running_loop()

        def create_protocol(quic: QuicConnection, **kwargs: Any) -> _Connection:
            return _Connection(quic, server=self, **kwargs)

        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Listener(configuration=qcfg, create_protocol=create_protocol),
            local_addr=(cfg.host, cfg.port),
        )
        self._transport = transport
        self._listener = protocol

    @property
    def port(self) -> int:
        """The bound UDP port (useful with ``port=0``)."""
        if self._transport is None:
            raise RuntimeError("server not started")
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def fingerprint(self) -> str:
        """SPKI SHA-256 (hex) of the served certificate."""
        if self.identity is None:
            raise RuntimeError("server not started")
        return self.identity.fingerprint

    @property
    def connection_count(self) -> int:
        """Open client connections."""
        return len(self._connections)

    @property
    def active_calls(self) -> int:
        """Calls whose handler is running."""
        return len(self._tasks)

    async def close(self, grace: float | None = None) -> None:
        """Graceful close: refuse new calls, stop subscriptions, let unary calls
        finish (up to ``grace`` seconds, default ``shutdown_grace``), then close
        every connection and the socket."""
        if self._closing:
            return
        self._closing = True
        for conn in list(self._connections):
            conn.cancel_streaming()
        pending = set(self._tasks)
        if pending:
            _done, late = await asyncio.wait(
                pending, timeout=self.config.shutdown_grace if grace is None else grace
            )
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        for conn in list(self._connections):
            conn.drop_pending_requests()
            conn.close(error_code=int(CloseCode.SHUTDOWN), reason_phrase="node shutting down")
        if self._transport is not None and self._listener is not None:
            self._transport.close()  # sendto() already handed the CLOSE datagrams over
            await self._listener.socket_closed

    async def __aenter__(self) -> RpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _not_implemented(method: Method) -> Callable[..., Any]:
    message = f"{method.name} is not implemented by this node"
    if method.streaming:

        async def stream(ctx: CallContext, params: Any) -> AsyncIterator[Any]:
            raise Unavailable(message)
            yield  # type: ignore[unreachable]  # makes this an async generator

        return stream

    async def unary(ctx: CallContext, params: Any) -> Any:
        raise Unavailable(message)

    return unary


async def serve(handler: NodeHandler, config: ServerConfig | None = None) -> RpcServer:
    """Create and start an :class:`RpcServer`."""
    server = RpcServer(handler, config)
    await server.start()
    return server
