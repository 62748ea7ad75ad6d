"""RPC over real QUIC on loopback: round trips, concurrency, streaming, cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proto import codec as c
from proto.errors import (
    ConnectionLost,
    InternalError,
    LimitExceeded,
    RateLimited,
    TransportError,
    Unavailable,
)
from proto.rpc_client import RpcClient
from proto.rpc_server import RpcServer, ServerConfig
from tests.proto import samples
from tests.proto.conftest import client_config
from tests.proto.handler import FakeHandler

pytestmark = pytest.mark.network

UNARY = [m.name for m in c.METHODS if not m.streaming]


@pytest.mark.parametrize("name", UNARY)
async def test_round_trip_every_unary_method(
    name: str, client: RpcClient, handler: FakeHandler
) -> None:
    if name == "ping":
        assert await client.call(samples.PARAMS[name]) == c.PingResult(
            payload=b"hello", server_time_ms=1
        )
        return
    assert await client.call(samples.PARAMS[name]) == samples.RESULTS[name]
    ctx = handler.contexts[-1]
    assert ctx.method == name
    assert ctx.auth == b"t" * 32
    assert ctx.peer[0] == "127.0.0.1"
    assert ctx.connection_id >= 1


async def test_typed_wrappers(client: RpcClient, handler: FakeHandler) -> None:
    assert await client.health() == samples.RESULTS["health"]
    got = await client.enqueue_commit(
        channel_id=b"c", epoch=1, fanout=[c.Recipient(recipient=b"r", payload=b"p")]
    )
    assert got == samples.RESULTS["enqueueCommit"]
    await client.enqueue(recipient=b"r", channel_id=b"c", payload=b"p", access_key=b"k", auth=b"")
    assert handler.contexts[-1].auth == b""
    assert await client.ping(payload=b"abc") == c.PingResult(payload=b"abc", server_time_ms=1)


async def test_fetch_wait_round_trip_with_timeout(client: RpcClient) -> None:
    async with client.fetch_wait(after_seq=0, timeout_ms=50) as sub:
        got = [r async for r in sub]
    assert got == [samples.RESULTS["fetchWait"], c.FetchWaitResult(envelopes=())]


async def test_error_mapping(client: RpcClient, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RateLimited) as rate:
        await client.ping(payload=b"rate")
    assert (rate.value.message, rate.value.retry_after_ms) == ("slow down", 250)
    with pytest.raises(InternalError) as internal:
        await client.ping(payload=b"boom")
    assert internal.value.message == "internal error"
    assert "secret" not in str(internal.value)
    assert "secret internal detail" in caplog.text  # logged server-side
    with pytest.raises(InternalError):
        await client.ping(payload=b"wrong-type")
    assert await client.ping(payload=b"ok") == c.PingResult(payload=b"ok", server_time_ms=1)


async def test_500_concurrent_calls(client: RpcClient) -> None:
    payloads = [i.to_bytes(4, "big") for i in range(500)]
    results = await asyncio.gather(*(client.ping(payload=p) for p in payloads))
    assert [r.payload for r in results] == payloads


async def test_subscription_receives_pushes(client: RpcClient, handler: FakeHandler) -> None:
    async with client.fetch_wait(after_seq=0) as sub:
        first = await anext(sub)
        assert first.envelopes == (samples.ENV,)
        pushed = [c.Envelope(seq=10 + i, channel_id=b"ch", data=bytes([i])) for i in range(3)]
        for env in pushed:
            handler.push(env)
        got = [(await anext(sub)).envelopes[0] for _ in pushed]
    assert got == pushed
    await asyncio.wait_for(handler.sub_cancelled.wait(), 5)


async def test_cancel_stops_server_work(client: RpcClient, handler: FakeHandler) -> None:
    task = asyncio.create_task(client.ping(payload=b"block"))
    await asyncio.wait_for(handler.block_started.wait(), 5)
    task.cancel()
    await asyncio.wait_for(handler.cancelled.wait(), 5)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await client.ping(payload=b"still") == c.PingResult(payload=b"still", server_time_ms=1)


async def test_closing_subscription_stops_server_generator(
    client: RpcClient, handler: FakeHandler
) -> None:
    sub = client.fetch_wait(after_seq=0)
    await anext(sub)
    assert len(handler.subscribers) == 1
    await sub.aclose()
    await asyncio.wait_for(handler.sub_cancelled.wait(), 5)
    assert handler.subscribers == []


async def test_stream_limit_per_connection(handler: FakeHandler, tmp_path: Path) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path, max_streams_per_connection=2)
    async with RpcServer(handler, cfg) as srv, RpcClient(client_config(srv)) as cl:
        blocked = [asyncio.create_task(cl.ping(payload=b"block")) for _ in range(2)]
        await asyncio.wait_for(handler.block_started.wait(), 5)
        while srv.active_calls < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(LimitExceeded):
            await cl.ping(payload=b"x")
        for t in blocked:
            t.cancel()
        await asyncio.gather(*blocked, return_exceptions=True)


async def test_stream_credit_is_the_concurrency_limit(handler: FakeHandler, tmp_path: Path) -> None:
    # QUIC MAX_STREAMS follows max_streams_per_connection (never below
    # aioquic's 128), so clients with many calls in flight are not blocked
    # waiting for stream credit long before the node's own limit.
    for limit, credit in ((256, 256), (2, 128)):
        cfg = ServerConfig(
            host="127.0.0.1", port=0, tls_dir=tmp_path, max_streams_per_connection=limit
        )
        async with RpcServer(handler, cfg) as srv, RpcClient(client_config(srv)) as cl:
            await cl.ping(payload=b"x")
            assert cl._proto is not None
            assert cl._proto._quic._remote_max_streams_bidi == credit


async def test_server_survives_client_that_vanishes(handler: FakeHandler, tmp_path: Path) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path, idle_timeout=0.5)
    async with RpcServer(handler, cfg) as srv:
        gone = RpcClient(client_config(srv, keepalive_interval=60.0, dead_timeout=60.0))
        task = asyncio.create_task(gone.ping(payload=b"block"))
        await asyncio.wait_for(handler.block_started.wait(), 5)
        # Vanish: drop the socket without a CONNECTION_CLOSE.
        proto = gone._proto
        assert proto is not None and proto._transport is not None
        proto._transport.close()
        await asyncio.wait_for(handler.cancelled.wait(), 5)  # idle timeout cancels work
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await gone.close()
        async with RpcClient(client_config(srv)) as other:
            assert (await other.health()) == samples.RESULTS["health"]
        while srv.connection_count > 0:  # the vanished connection is gone too
            await asyncio.sleep(0.05)


async def test_keepalive_holds_subscription_past_idle_timeout(
    handler: FakeHandler, tmp_path: Path
) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path, idle_timeout=0.6)
    async with RpcServer(handler, cfg) as srv:
        ccfg = client_config(srv, idle_timeout=0.6, keepalive_interval=0.15, dead_timeout=2.0)
        async with RpcClient(ccfg) as cl, cl.fetch_wait(after_seq=0) as sub:
            await anext(sub)
            await asyncio.sleep(2.0)  # > 3 idle timeouts with nothing to send
            handler.push(samples.ENV)
            assert (await asyncio.wait_for(anext(sub), 5)).envelopes == (samples.ENV,)
            assert cl.connects == 1


async def test_without_keepalive_idle_timeout_ends_subscription(
    handler: FakeHandler, tmp_path: Path
) -> None:
    """Control for the test above: the idle timeout really is short."""
    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path, idle_timeout=0.6)
    async with RpcServer(handler, cfg) as srv:
        ccfg = client_config(
            srv, idle_timeout=0.6, keepalive_interval=60, dead_timeout=60, reconnect=False
        )
        async with RpcClient(ccfg) as cl, cl.fetch_wait(after_seq=0) as sub:
            await anext(sub)
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(anext(sub), 5)


async def test_dead_node_detected_and_reconnect(handler: FakeHandler, tmp_path: Path) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path)
    srv = RpcServer(handler, cfg)
    await srv.start()
    port = srv.port
    ccfg = client_config(srv, keepalive_interval=0.2, dead_timeout=1.0, backoff_initial=0.05)
    async with RpcClient(ccfg) as cl:
        async with cl.fetch_wait(after_seq=0) as sub:
            await anext(sub)
            # The node "dies": its socket closes without any CONNECTION_CLOSE.
            assert srv._transport is not None
            srv._transport.close()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(anext(sub), 10)
            assert loop.time() - t0 < 3.0
        # A new node on the same port and key: the client reconnects by itself.
        srv2 = RpcServer(handler, ServerConfig(host="127.0.0.1", port=port, tls_dir=tmp_path))
        await srv2.start()
        try:
            assert await asyncio.wait_for(cl.health(), 10) == samples.RESULTS["health"]
            assert cl.connects == 2
        finally:
            await srv2.close(grace=1)


async def test_graceful_close_finishes_in_flight_calls(
    handler: FakeHandler, tmp_path: Path
) -> None:
    release = asyncio.Event()

    async def slow_health(ctx: object, params: object) -> c.HealthResult:
        await release.wait()
        return c.HealthResult(status="ok", version="v", uptime_ms=1, store_backend="x")

    handler.health = slow_health  # type: ignore[method-assign]
    srv = RpcServer(handler, ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path))
    await srv.start()
    async with RpcClient(client_config(srv, reconnect=False)) as cl:
        sub = cl.fetch_wait(after_seq=0)
        await anext(sub)
        call = asyncio.create_task(cl.health())
        while srv.active_calls < 2:
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(srv.close(grace=5))
        with pytest.raises(Unavailable):  # subscriptions end at once on shutdown
            await asyncio.wait_for(anext(sub), 5)
        with pytest.raises(Unavailable):  # no new calls while closing
            await cl.ping(payload=b"late")
        release.set()
        assert (await call).status == "ok"  # the in-flight call finished
        await closing


async def test_call_timeout_cancels_server_work(handler: FakeHandler, server: RpcServer) -> None:
    ccfg = client_config(server, call_timeout=0.3, keepalive_interval=0.2)
    async with RpcClient(ccfg) as cl:
        with pytest.raises(TransportError, match="timed out"):
            await cl.ping(payload=b"block")
        await asyncio.wait_for(handler.cancelled.wait(), 5)
        assert await cl.ping(payload=b"ok") == c.PingResult(payload=b"ok", server_time_ms=1)


async def test_missing_handler_method_answers_unavailable(tmp_path: Path) -> None:
    class Partial:
        async def health(self, ctx: object, params: object) -> c.HealthResult:
            return c.HealthResult(status="ok", version="v", uptime_ms=0, store_backend="x")

    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path)
    async with RpcServer(Partial(), cfg) as srv, RpcClient(client_config(srv)) as cl:  # type: ignore[arg-type]
        assert (await cl.health()).status == "ok"
        with pytest.raises(Unavailable):
            await cl.ack(upto_seq=1)
        with pytest.raises(Unavailable):
            async with cl.fetch_wait(after_seq=0) as sub:
                await anext(sub)


async def test_client_close_fails_pending_calls(client: RpcClient, handler: FakeHandler) -> None:
    task = asyncio.create_task(client.ping(payload=b"block"))
    await asyncio.wait_for(handler.block_started.wait(), 5)
    await client.close()
    with pytest.raises(ConnectionLost):
        await task
    await asyncio.wait_for(handler.cancelled.wait(), 5)  # the node noticed the close
    with pytest.raises(ConnectionLost):
        await client.health()


async def test_close_during_connect_leaves_no_socket(server: RpcServer) -> None:
    """A connect still in its handshake when close() runs ends without a connection."""
    cl = RpcClient(client_config(server))
    task = asyncio.create_task(cl.connect())
    await asyncio.sleep(0)  # the attempt has started: its socket exists
    await asyncio.sleep(0)
    await cl.close()
    with pytest.raises(ConnectionLost, match="client closed"):
        await task
    proto = cl._proto
    assert proto is None or proto.dead is not None
    with pytest.raises(ConnectionLost):
        await cl.health()


async def test_no_node_gives_connection_lost_in_time(server: RpcServer) -> None:
    port = server.port
    await server.close()  # nothing listens on this port any more
    cfg = client_config(server, reconnect_wait=1.0, connect_timeout=0.3)
    assert cfg.port == port
    cl = RpcClient(cfg)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ConnectionLost, match="no connection"):
        await cl.health()
    assert loop.time() - t0 < 3.0
    await cl.close()


async def test_errors_raised_after_the_handler_blocked(client: RpcClient) -> None:
    with pytest.raises(RateLimited):
        await client.ping(payload=b"rate-later")
    with pytest.raises(InternalError) as info:
        await client.ping(payload=b"boom-later")
    assert "secret" not in str(info.value)


async def test_context_vars_stay_per_call(client: RpcClient) -> None:
    for _ in range(3):  # a second call would see a leaked value and fail
        got = await client.ping(payload=b"ctxvar")
        assert got.payload == b"set-before-await"


async def test_sync_handler_method_answers_internal(tmp_path: Path) -> None:
    class Broken:
        def health(self, ctx: object, params: object) -> c.HealthResult:  # not async
            return c.HealthResult(status="ok", version="v", uptime_ms=0, store_backend="x")

        def fetch_wait(self, ctx: object, params: object) -> None:
            raise RuntimeError("not a generator")

    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path)
    async with RpcServer(Broken(), cfg) as srv, RpcClient(client_config(srv)) as cl:  # type: ignore[arg-type]
        with pytest.raises(InternalError):
            await cl.health()
        with pytest.raises(InternalError):
            async with cl.fetch_wait(after_seq=0) as sub:
                await anext(sub)
        with pytest.raises(Unavailable):
            await cl.ping()
