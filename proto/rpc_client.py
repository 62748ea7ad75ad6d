"""RPC client half: a reconnecting QUIC connection to a node.

::

    trust = TrustConfig(pin_store=profile_dir / "pins.json")
    async with RpcClient(ClientConfig(host="chat.example", port=7000, trust=trust)) as node:
        print(await node.health())
        node.token = (await node.login_finish(...)).token
        async with node.fetch_wait(after_seq=0) as sub:
            async for push in sub:
                ...

Every call opens its own QUIC stream, so any number of calls may be in flight.
Errors: the node's error responses raise the matching
:class:`proto.errors.RpcError` subclass; transport problems raise
:class:`proto.errors.TransportError` / :class:`proto.errors.ConnectionLost`;
a changed server key raises :class:`proto.errors.FingerprintMismatch`. No
aioquic exception escapes this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from proto import tls
from proto.codec import (
    CodecLimits,
    ErrorInfo,
    FetchWaitResult,
    Params,
    Request,
    Result,
    encode_request,
)
from proto.errors import (
    ConnectionLost,
    FingerprintMismatch,
    ProtocolError,
    QpcError,
    TransportError,
)
from proto.quic_client import END, ClientConnection, PendingCall, expire_calls
from proto.quic_stack import QuicConfiguration, QuicConnection
from proto.rpc import ALPN, DEFAULT_PORT, CloseCode
from proto.rpc_api import NodeCalls

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Client transport settings; every field has a default."""

    host: str = "localhost"
    """Node host name or address."""
    port: int = DEFAULT_PORT
    """Node UDP port."""
    alternates: tuple[tuple[str, int], ...] = ()
    """Further addresses of the same deployment (same TLS key), as (host, port).
    A failed connection attempt moves to the next address, and so does a lost
    connection; the key is checked against the pin of the first address."""
    server_name: str | None = None
    """TLS SNI / CA host name check (default: ``host``)."""
    trust: tls.TrustConfig = field(default_factory=lambda: tls.TrustConfig(insecure=False))
    """How to trust the node's key; must configure exactly one mode."""
    idle_timeout: float = 30.0
    """QUIC idle timeout (s); keepalive PINGs keep idle connections open."""
    keepalive_interval: float = 2.0
    """Send a PING after this long without receiving anything (s)."""
    dead_timeout: float = 6.0
    """Declare the node dead after this long without receiving anything (s)."""
    connect_timeout: float = 5.0
    """Time for one connection attempt (handshake) (s)."""
    call_timeout: float | None = 30.0
    """Default time limit of a unary call (s); None = no limit."""
    reconnect: bool = True
    """Reconnect automatically (jittered exponential backoff) after a loss."""
    reconnect_wait: float = 15.0
    """How long a call waits for a (re)connection before ``ConnectionLost`` (s);
    plus ``connect_timeout`` for each of the ``alternates``."""
    backoff_initial: float = 0.2
    """First reconnect delay bound (s); doubles per attempt (full jitter)."""
    backoff_max: float = 10.0
    """Largest reconnect delay bound (s)."""
    max_response_bytes: int = 16 * 1024 * 1024
    """Largest accepted response message."""
    nesting_limit: int = 16
    """Cap'n Proto nesting limit for response readers."""


async def probe_server_key(
    host: str, port: int, *, server_name: str | None = None, wait_s: float = 5.0
) -> str:
    """The SPKI SHA-256 (hex) a node presents in its TLS handshake.

    Only the handshake runs: no key is trusted or pinned and no request is
    sent; the connection is closed right after. The caller decides what to do
    with the fingerprint (e.g. show it for trust on first use).

    Raises:
        TransportError: the node cannot be reached or the handshake fails.
        ConnectionLost: no handshake within ``wait_s``.
    """
    client = RpcClient(
        ClientConfig(
            host=host,
            port=port,
            server_name=server_name,
            trust=tls.TrustConfig(insecure=True),  # read the key only; nothing is sent
            reconnect=False,
            reconnect_wait=wait_s,
            connect_timeout=wait_s,
        )
    )
    try:
        await client.connect()
        if client.fingerprint is None:  # pragma: no cover - set by every handshake
            raise TransportError(f"{host}:{port} presented no key")
        return client.fingerprint
    finally:
        await client.close()


class Subscription:
    """Async iterator over the results of a streaming call (``fetchWait``).

    Use as ``async with node.fetch_wait(...) as sub: async for r in sub: ...``.
    Leaving the block (or :meth:`aclose`) cancels the call on the node. The
    iterator ends when the node finishes the stream; it raises the call's
    :class:`RpcError`, or :class:`ConnectionLost` if the connection drops.
    """

    def __init__(self, client: RpcClient, params: Params, auth: bytes | None) -> None:
        self._client = client
        self._params = params
        self._auth = auth
        self._proto: ClientConnection | None = None
        self._sid = -1
        self._call: PendingCall | None = None
        self._done = False

    async def _open(self) -> None:
        proto = await self._client._ready()
        self._proto = proto
        self._sid, self._call = self._client._start(proto, self._params, self._auth, True)

    async def __aenter__(self) -> Subscription:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> FetchWaitResult:
        if self._done:
            raise StopAsyncIteration
        if self._call is None:
            await self._open()
        assert self._call is not None and self._call.queue is not None
        item = await self._call.queue.get()
        if item is END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        result = item.result
        if isinstance(result, ErrorInfo):
            self._done = True
            raise result.to_exception()
        if not isinstance(result, FetchWaitResult):
            self._done = True
            raise ProtocolError(f"unexpected {type(result).__name__} on a fetchWait stream")
        return result

    async def aclose(self) -> None:
        """Stop the subscription (STOP_SENDING to the node)."""
        if not self._done and self._proto is not None:
            self._proto.stop(self._sid)
        self._done = True


class RpcClient(NodeCalls[Subscription]):
    """A connection to one node with typed async methods per call.

    The per-method methods (``health``, ``enqueue``, ``fetch_wait``, ...) come
    from :class:`proto.rpc_api.NodeCalls`, generated from the schema.

    The first use connects (or call :meth:`connect` to fail fast on a wrong
    key). After a loss the client reconnects in the background with jittered
    exponential backoff; calls wait up to ``reconnect_wait`` for it.
    """

    def __init__(self, config: ClientConfig | None = None, *, token: bytes = b"") -> None:
        self.config = config if config is not None else ClientConfig()
        self.config.trust.validate()
        self.token = token
        """Session token sent as ``Request.auth`` (unless a call overrides it)."""
        self.fingerprint: str | None = None
        """SPKI SHA-256 of the node's key once connected."""
        self._limits = CodecLimits(
            max_message_bytes=self.config.max_response_bytes,
            traversal_limit_words=self.config.max_response_bytes // 4,
            nesting_limit=self.config.nesting_limit,
        )
        self._proto: ClientConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._bg: set[asyncio.Task[Any]] = set()
        self._pings = itertools.count(1)
        self._last_error: BaseException | None = None
        self.connects = 0
        """Number of successful connections so far (reconnects included)."""
        self.addresses: tuple[tuple[str, int], ...] = (
            (self.config.host, self.config.port),
            *self.config.alternates,
        )
        """Every address of the node, in the order they are tried."""
        self._at = 0  # index into addresses of the one in use / tried next

    # ---------------------------------------------------------------- public

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) in use, or tried next."""
        return self.addresses[self._at]

    def _next_address(self) -> None:
        self._at = (self._at + 1) % len(self.addresses)

    @property
    def connected(self) -> bool:
        """True while a live connection exists."""
        return self._proto is not None and self._proto.dead is None

    async def connect(self) -> None:
        """Connect now (no-op when connected).

        Raises:
            FingerprintMismatch: the node's key is not the trusted one.
            ConnectionLost: no connection within ``reconnect_wait``.
        """
        await self._ready()

    async def call(self, params: Params, *, auth: bytes | None = None) -> Result:
        """Make one unary call; return its result or raise its error.

        The call is limited to ``call_timeout`` (wrap it in ``asyncio.timeout``
        for a shorter limit). Cancelling it cancels the work on the node.
        """
        proto = self._proto
        if proto is None or proto.dead is not None:
            proto = await self._ready()
        sid, call = self._start(proto, params, auth, False)
        fut = call.future
        assert fut is not None
        if self.config.call_timeout is not None:  # enforced by the keepalive task's sweep
            call.deadline = proto._loop.time() + self.config.call_timeout
        try:
            # Plain await: wait_for/shield or a timer per call cost extra loop turns.
            response = await fut
        except asyncio.CancelledError:
            proto.stop(sid)
            raise
        if isinstance(response.result, ErrorInfo):
            raise response.result.to_exception()
        return response.result

    def drop(self, reason: str) -> None:
        """The caller knows the node is gone (its process died): fail in-flight
        calls with :class:`ConnectionLost` now and reconnect as after a loss,
        instead of waiting ``dead_timeout`` for the silence to show."""
        proto = self._proto
        if proto is not None and proto.dead is None:
            proto.kill(ConnectionLost(reason), close=False)

    def subscribe(self, params: Params, *, auth: bytes | None = None) -> Subscription:
        """Start a streaming call (opened on ``async with`` or first iteration)."""
        return Subscription(self, params, auth)

    async def close(self) -> None:
        """Close the connection (pending calls fail with ConnectionLost)."""
        self._closed = True
        for task in list(self._bg):
            task.cancel()
        proto = self._proto
        if proto is not None and proto.dead is None:
            proto.kill(ConnectionLost("client closed"), code=int(CloseCode.CLIENT_CLOSE))
        if self._bg:
            await asyncio.gather(*self._bg, return_exceptions=True)

    async def __aenter__(self) -> RpcClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -------------------------------------------------------------- internals

    def _start(
        self, proto: ClientConnection, params: Params, auth: bytes | None, streaming: bool
    ) -> tuple[int, PendingCall]:
        data = encode_request(Request(auth=self.token if auth is None else auth, call=params))
        quic = proto._quic
        sid = quic.get_next_available_stream_id()
        call = PendingCall(self._limits, streaming, proto._loop)
        proto.calls[sid] = call
        quic.send_stream_data(sid, data, end_stream=True)
        if len(proto.calls) == 1:
            # A lone call: send now (latency). The ACK of the last answer is left
            # to aioquic's 1 ms delayed ACK rather than forced into this packet:
            # an ACK frame here is processed on the node's critical path, while
            # a delayed ACK-only datagram mostly lands between calls (measured:
            # median RTT -5 to -8 points vs raw echo; docs/perf/rpc.md item 8).
            proto.transmit()
        else:
            proto._transmit_soon()  # many in flight: coalesce into fewer datagrams
        return sid, call

    async def _ready(self) -> ClientConnection:
        proto = self._proto
        if proto is not None and proto.dead is None:
            return proto
        cfg = self.config
        # each further address may cost one connect attempt before a live one
        wait = cfg.reconnect_wait + cfg.connect_timeout * (len(self.addresses) - 1)
        try:
            return await asyncio.wait_for(self._reconnect(), wait)
        except TimeoutError:
            raise ConnectionLost(
                f"no connection to {_fmt(*self.address)} "
                f"within {wait:g}s (last error: {self._last_error})"
            ) from None

    async def _reconnect(self) -> ClientConnection:
        cfg = self.config
        async with self._lock:
            attempt = 0
            while True:
                proto = self._proto
                if proto is not None and proto.dead is None:
                    return proto
                if self._closed:
                    raise ConnectionLost("client closed")
                try:
                    return await self._connect_once()
                except FingerprintMismatch:
                    raise
                except QpcError as exc:
                    self._last_error = exc
                    self._next_address()
                    if not cfg.reconnect:
                        raise
                    if self._at != 0:  # try every address once before backing off
                        continue
                    bound = min(cfg.backoff_max, cfg.backoff_initial * 2**attempt)
                    attempt += 1
                    delay = random.uniform(bound / 2, bound)  # noqa: S311 - jitter only
                    log.info("connect to node failed (%s); retrying in %.2fs", exc, delay)
                    await asyncio.sleep(delay)

    async def _connect_once(self) -> ClientConnection:
        cfg = self.config
        host, port = self.address
        pin_name = f"{cfg.host}:{cfg.port}"  # one deployment, one key: the first address's pin
        where = _fmt(host, port)
        loop = asyncio.get_running_loop()
        qcfg = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            idle_timeout=cfg.idle_timeout,
            server_name=cfg.server_name or host,
        )
        if cfg.trust.verify_ca:
            qcfg.verify_mode = ssl.CERT_REQUIRED
            if cfg.trust.ca_file is not None:
                qcfg.load_verify_locations(cafile=str(cfg.trust.ca_file))
        else:
            qcfg.verify_mode = ssl.CERT_NONE  # the key is checked against the pin below
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            addr: Any = infos[0][4]
            if len(addr) == 2:
                addr = ("::ffff:" + addr[0], addr[1], 0, 0)
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", 0, 0, 0))
                transport, proto = await loop.create_datagram_endpoint(
                    lambda: ClientConnection(QuicConnection(configuration=qcfg)), sock=sock
                )
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise TransportError(f"cannot reach {where}: {exc}") from None
        assert isinstance(proto, ClientConnection)
        proto.limits = self._limits
        try:
            proto.connect(addr)
            cert = await asyncio.wait_for(asyncio.shield(proto.handshake), cfg.connect_timeout)
            self.fingerprint = tls.check_server_key(cfg.trust, pin_name, cert)
        except FingerprintMismatch as exc:
            proto.kill(exc)
            raise
        except TimeoutError:
            proto.kill(TransportError("handshake timed out"))
            raise TransportError(f"TLS handshake with {where} timed out") from None
        except QpcError as exc:
            proto.kill(exc)
            raise
        except Exception as exc:  # aioquic: TLS alerts, bad certificates, ...
            proto.kill(TransportError(str(exc)))
            raise TransportError(f"cannot connect to {where}: {exc}") from None
        except BaseException:  # cancelled (e.g. reconnect_wait passed): drop the attempt
            proto.kill(ConnectionLost("connect cancelled"))
            raise
        finally:
            if proto.dead is not None:
                transport.close()
        if self._closed:  # close() ran while this attempt was in flight
            proto.kill(ConnectionLost("client closed"), code=int(CloseCode.CLIENT_CLOSE))
            transport.close()
            raise ConnectionLost("client closed")
        proto.on_lost = self._on_lost
        self._proto = proto
        self.connects += 1
        self._spawn(self._keepalive(proto))
        return proto

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _on_lost(self, proto: ClientConnection) -> None:
        if proto is self._proto and not self._closed and len(self.addresses) > 1:
            self._next_address()  # the node may be gone: the next one first
        if proto is self._proto and not self._closed and self.config.reconnect:
            log.info("connection to node lost (%s); reconnecting", proto.dead)
            self._spawn(self._background_reconnect())

    async def _background_reconnect(self) -> None:
        with contextlib.suppress(QpcError):
            await self._reconnect()

    async def _keepalive(self, proto: ClientConnection) -> None:
        cfg = self.config
        tick = max(0.05, min(cfg.keepalive_interval, cfg.dead_timeout) / 4)
        pinged_at = -math.inf
        while proto.dead is None:
            await asyncio.sleep(tick)
            expire_calls(proto)
            now = time.monotonic()
            idle = now - proto.last_rx
            if idle >= cfg.dead_timeout:
                proto.kill(
                    ConnectionLost(f"node silent for {idle:.1f}s"),
                    code=int(CloseCode.KEEPALIVE_TIMEOUT),
                )
                return
            if idle >= cfg.keepalive_interval and now - pinged_at >= cfg.keepalive_interval:
                pinged_at = now
                proto._quic.send_ping(next(self._pings))
                proto.transmit()


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
