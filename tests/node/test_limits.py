"""Queue depth, rate limits, retention, fan-out and stock limits, metrics."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from node.config import NodeConfig
from node.embedded import start_embedded_node
from proto.codec import Recipient
from proto.errors import (
    BadRequest,
    LimitExceeded,
    LoginFailed,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
)
from tests.node.helpers import connected, login, make_account, node_config, register

pytestmark = pytest.mark.network


async def test_queue_full_and_recovery(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path, max_queue_depth=3, max_fanout=2))
    try:
        alice = await make_account(node, "alice")
        bob = await make_account(node, "bob")
        for _ in range(3):
            await alice.client.enqueue(recipient=bob.device_id, channel_id=b"c", payload=b"m")
        with pytest.raises(QueueFull):
            await alice.client.enqueue(recipient=bob.device_id, channel_id=b"c", payload=b"m")
        with pytest.raises(QueueFull):  # a commit to a full inbox stores nothing
            await alice.client.enqueue_commit(
                channel_id=b"g", epoch=0, fanout=[Recipient(recipient=bob.device_id, payload=b"c")]
            )
        with pytest.raises(LimitExceeded):
            await alice.client.enqueue_commit(
                channel_id=b"g",
                epoch=0,
                fanout=[Recipient(recipient=bob.device_id, payload=b"c")] * 3,
            )
        await bob.client.ack(upto_seq=1)
        r = await alice.client.enqueue(recipient=bob.device_id, channel_id=b"c", payload=b"m")
        assert r.seq == 4
        r2 = await alice.client.enqueue_commit(  # channel still at epoch 0
            channel_id=b"g", epoch=0, fanout=[Recipient(recipient=alice.device_id, payload=b"c")]
        )
        assert r2.new_epoch == 1
        await alice.client.close()
        await bob.client.close()
    finally:
        await node.stop()


async def test_rate_limits_answer_retry_after(tmp_path: Path) -> None:
    node = await start_embedded_node(
        node_config(
            tmp_path, write_burst=5, write_rate_per_s=1.0, login_burst=2, login_rate_per_s=0.5
        )
    )
    try:
        alice = await make_account(node, "alice")  # one registration + one login attempt
        with pytest.raises(RateLimited) as exc:
            async with connected(node) as c:
                await register(c, "bob", "pw")
        assert exc.value.retry_after_ms > 0
        for _ in range(4):  # registerDevice took one token
            await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"m")
        with pytest.raises(RateLimited) as exc:
            await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"m")
        assert 0 < exc.value.retry_after_ms <= 1000
        # reads are not write-limited
        assert len((await alice.client.fetch(after_seq=0, limit=10)).envelopes) == 4
        await asyncio.sleep(exc.value.retry_after_ms / 1000)
        await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"m")
        await alice.client.close()
    finally:
        await node.stop()


async def test_retention_expires_messages(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    node = await start_embedded_node(
        node_config(tmp_path, retention_s=3600, session_ttl_s=10**6), wall_clock=lambda: now[0]
    )
    try:
        alice = await make_account(node, "alice")
        await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"old")
        now[0] += 1800
        await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"new")
        now[0] += 1801
        assert await node.purge_now() == 1
        got = await alice.client.fetch(after_seq=0, limit=10)
        assert [(e.seq, e.data) for e in got.envelopes] == [(2, b"new")]
        await alice.client.close()
    finally:
        await node.stop()


async def test_key_package_stock_limit(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path, max_key_package_stock=5))
    try:
        alice = await make_account(node, "alice")
        assert (await alice.client.upload_key_packages(packages=[b"a"] * 4)).stock == 4
        with pytest.raises(LimitExceeded):
            await alice.client.upload_key_packages(packages=[b"b"] * 2)
        assert (await alice.client.key_package_count()).count == 4
        await alice.client.close()
    finally:
        await node.stop()


async def test_metrics_endpoint(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path, metrics_port=0))
    assert node.metrics_port is None  # 0 = off
    await node.stop()
    node = await start_embedded_node(node_config(tmp_path, metrics_port=_free_port()))
    try:
        alice = await make_account(node, "alice")
        await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"m")
        with pytest.raises(PayloadTooLarge):
            await alice.client.ping(payload=b"x" * 5000)
        async with alice.client.fetch_wait(after_seq=1) as sub:
            await anext(sub)
            text = await asyncio.to_thread(_scrape, node.metrics_port)
        own = f'pid="{os.getpid()}",worker="-"'  # every sample names its process
        assert f'qpc_node_calls_total{{method="enqueue",{own}}} 1.0' in text
        assert f'qpc_node_errors_total{{code="payload_too_large",method="ping",{own}}} 1.0' in text
        assert f"qpc_node_fetchwait_subscribers{{{own}}} 1.0" in text
        assert f'qpc_node_store_seconds_count{{op="enqueue",{own}}} 1.0' in text
        assert "qpc_node_queued_messages" in text
        assert alice.device_id.hex() not in text
        await alice.client.close()
    finally:
        await node.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _scrape(port: int | None) -> str:
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body: bytes = r.read()
        return body.decode()


async def test_waiting_retry_after_lets_the_whole_login_through(tmp_path: Path) -> None:
    """One attempt costs one token, charged at loginStart: waiting exactly the
    retryAfterMs the node answered is enough (the node's clock only moves when
    the test moves it, so the wait is exact and load on the box cannot refill)."""
    now = [1000.0]
    node = await start_embedded_node(
        node_config(tmp_path, login_burst=2, login_rate_per_s=4.0), mono_clock=lambda: now[0]
    )
    try:
        alice = await make_account(node, "alice")  # registerStart + loginStart: 2 tokens
        async with connected(node) as c:
            with pytest.raises(RateLimited) as exc:
                await login(c, "alice", alice.password, alice.device_id)
            assert exc.value.retry_after_ms == 250
            now[0] += exc.value.retry_after_ms / 1000
            token = await login(c, "alice", alice.password, alice.device_id)
            assert len(token) == 32
        await alice.client.close()
    finally:
        await node.stop()


async def test_register_waiting_retry_after_completes(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path, login_burst=1, login_rate_per_s=4.0))
    try:
        async with connected(node) as c:
            await register(c, "alice", "pw")  # registerFinish is not charged again
            with pytest.raises(RateLimited) as exc:
                await register(c, "bob", "pw")
            await asyncio.sleep(exc.value.retry_after_ms / 1000)
            await register(c, "bob", "pw")
    finally:
        await node.stop()


async def test_second_steps_without_first_steps_are_refused(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path))
    try:
        async with connected(node) as c:
            with pytest.raises(BadRequest):
                await c.register_finish(username="mallory", upload=b"u" * 64)
            with pytest.raises(LoginFailed):
                await c.login_finish(
                    login_id=b"L" * 16, finalization=b"f" * 64, device_id=b"d" * 32
                )
    finally:
        await node.stop()


async def test_default_limits_hold_a_password_guesser(tmp_path: Path) -> None:
    """Defaults: a burst of 10 attempts per address and per account, then 1 per second."""
    defaults = NodeConfig()
    now = [1000.0]
    node = await start_embedded_node(
        node_config(
            tmp_path,
            login_burst=defaults.login_burst,
            login_rate_per_s=defaults.login_rate_per_s,
        ),
        mono_clock=lambda: now[0],
    )
    try:
        async with connected(node) as c:
            await register(c, "victim", "the real password")
            refused = 0
            for i in range(defaults.login_burst + 2):
                try:
                    await login(c, "victim", f"guess {i}", b"d" * 32)
                except LoginFailed:
                    pass
                except RateLimited as exc:
                    refused += 1
                    assert exc.retry_after_ms == 1000
            # registerStart took 1 token: 9 guesses went through, then 3 refused.
            assert refused == 3
            for second in range(3):  # then exactly one guess per second
                now[0] += 1.0
                with pytest.raises(LoginFailed):
                    await login(c, "victim", f"later {second}", b"d" * 32)
                with pytest.raises(RateLimited):
                    await login(c, "victim", f"later {second}", b"d" * 32)
    finally:
        await node.stop()
