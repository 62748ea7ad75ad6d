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
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto import tls
from proto.codec import (
    METHOD_BY_PARAMS,
    METHODS,
    CodecLimits,
    Method,
)
from proto.errors import (
    Unavailable,
)
from proto.quic_server import (
    ConnectionLimits,
    Dispatch,
    Listener,
    ServerConnection,
    ServerState,
)
from proto.quic_stack import QuicConfiguration, QuicConnection, close_connection
from proto.rpc import ALPN, DEFAULT_PORT, CallContext, CloseCode, NodeHandler
from proto.udp_batch import open_batcher

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
    max_connections: int = 1024
    """Open connections (handshaking or established); a new client's Initial
    packets beyond this are dropped before any handshake work."""
    max_connections_per_address: int = 64
    """Open connections per source IP address (any port); beyond: dropped as above."""
    handshake_timeout: float = 10.0
    """Seconds a connection may take to complete its handshake before it is closed."""
    max_buffered_request_bytes: int = 64 * 1024 * 1024
    """Bytes of unfinished requests held over all connections (each connection
    may hold ``2 * max_request_bytes`` of it); a stream that goes beyond is
    refused ``limitExceeded``. One-packet requests are never buffered, so
    small calls are served while this is exhausted."""
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
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, so several processes share the port (the kernel
    spreads clients over them by address hash)."""

    def codec_limits(self) -> CodecLimits:
        """Reader limits derived from this config."""
        return CodecLimits(
            max_message_bytes=self.max_request_bytes,
            traversal_limit_words=self.traversal_limit_words,
            nesting_limit=self.nesting_limit,
        )


class RpcServer:
    """Serves a :class:`NodeHandler` on QUIC; see the module docstring."""

    def __init__(self, handler: NodeHandler, config: ServerConfig | None = None) -> None:
        self.config = config if config is not None else ServerConfig()
        limits = self.config.codec_limits()
        dispatch: Dispatch = {}
        for m in METHODS:
            fn = getattr(handler, m.attr, None)
            if fn is None:
                log.warning("handler has no %s: calls answer 'unavailable'", m.attr)
                fn = _not_implemented(m)
            dispatch[m.params] = (m, fn)
        assert set(dispatch) == set(METHOD_BY_PARAMS)
        self._state = ServerState(
            dispatch=dispatch,
            limits=limits,
            header_limits=dataclasses.replace(limits, max_message_bytes=1 << 62),
            max_streams=self.config.max_streams_per_connection,
            request_timeout=self.config.request_timeout,
            connection_limits=ConnectionLimits(
                max_connections=self.config.max_connections,
                max_connections_per_address=self.config.max_connections_per_address,
                handshake_timeout=self.config.handshake_timeout,
                max_buffered_request_bytes=self.config.max_buffered_request_bytes,
                max_buffered_per_connection=2 * self.config.max_request_bytes,
            ),
        )
        self._transport: asyncio.DatagramTransport | None = None
        self._listener: Listener | None = None
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

        def create_protocol(quic: QuicConnection, **kwargs: Any) -> ServerConnection:
            return ServerConnection(quic, server=self._state, **kwargs)

        transport, protocol = await loop.create_datagram_endpoint(
            lambda: Listener(
                configuration=qcfg, create_protocol=create_protocol, admit=self._state.admit
            ),
            local_addr=(cfg.host, cfg.port),
            reuse_port=cfg.reuse_port or None,
        )
        self._transport = transport
        self._listener = protocol
        batcher = self._state.batcher = open_batcher(transport)
        if batcher is not None:  # its duplicate socket closes with the server's
            protocol.socket_closed.add_done_callback(lambda _: batcher.close())

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
        return len(self._state.connections)

    @property
    def refused_connections(self) -> int:
        """New connections dropped by ``max_connections``/``max_connections_per_address``."""
        return self._state.refused_connections

    @property
    def buffered_request_bytes(self) -> int:
        """Bytes of unfinished requests held now (``max_buffered_request_bytes``)."""
        return self._state.buffered_request_bytes

    @property
    def active_calls(self) -> int:
        """Calls whose handler is running."""
        return len(self._state.tasks)

    async def close(self, grace: float | None = None) -> None:
        """Graceful close: refuse new calls, stop subscriptions, let unary calls
        finish (up to ``grace`` seconds, default ``shutdown_grace``), then close
        every connection and the socket."""
        state = self._state
        if state.closing:
            return
        state.closing = True
        for conn in list(state.connections):
            conn.cancel_streaming()
        pending = set(state.tasks)
        if pending:
            _done, late = await asyncio.wait(
                pending, timeout=self.config.shutdown_grace if grace is None else grace
            )
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        for conn in list(state.connections):
            conn.drop_pending_requests()
            close_connection(conn, int(CloseCode.SHUTDOWN), "node shutting down")
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
