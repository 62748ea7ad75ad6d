"""Queue depth, rate limits, retention, fan-out and stock limits, metrics."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest

from node.config import NodeConfig
from node.embedded import start_embedded_node
from proto.codec import Recipient
from proto.errors import LimitExceeded, LoginFailed, PayloadTooLarge, QueueFull, RateLimited
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
            tmp_path, write_burst=5, write_rate_per_s=1.0, login_burst=3, login_rate_per_s=0.5
        )
    )
    try:
        alice = await make_account(node, "alice")  # 1 registration + 1 login
        async with connected(node) as c:
            await register(c, "bob", "pw")  # the third token
            with pytest.raises(RateLimited) as exc:
                await register(c, "carol", "pw")
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


async def test_waiting_retry_after_then_login_succeeds(tmp_path: Path) -> None:
    """A refused login succeeds after exactly ``retryAfterMs``; loginFinish is never refused."""
    node = await start_embedded_node(node_config(tmp_path, login_burst=2, login_rate_per_s=2.0))
    try:
        alice = await make_account(node, "alice")  # both tokens spent
        async with connected(node) as c:
            with pytest.raises(RateLimited) as exc:
                await login(c, "alice", alice.password, alice.device_id)
            wait_ms = exc.value.retry_after_ms
            assert 0 < wait_ms <= 500
            await asyncio.sleep(wait_ms / 1000)
            # loginStart takes the one refilled token; loginFinish is paid by it
            token = await login(c, "alice", alice.password, alice.device_id)
            assert token
            with pytest.raises(RateLimited) as exc:  # and the bucket is empty again
                await register(c, "bob", "pw")
            await asyncio.sleep(exc.value.retry_after_ms / 1000)
            await register(c, "bob", "pw")  # registerFinish is paid by registerStart
        await alice.client.close()
    finally:
        await node.stop()


def _default_login_limits() -> dict[str, object]:
    d = NodeConfig()
    return {"login_burst": d.login_burst, "login_rate_per_s": d.login_rate_per_s}


async def test_default_limits_allow_five_accounts_in_a_row(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path, **_default_login_limits()))
    try:
        accounts = [await make_account(node, f"user{i}") for i in range(5)]
        async with connected(node) as c:
            # the bucket refilled by about a token a second while those ran:
            # the next few registrations drain it, then one is refused
            with pytest.raises(RateLimited) as exc:
                for i in range(5, 15):
                    await register(c, f"user{i}", "pw")
            assert 0 < exc.value.retry_after_ms <= 1000
            await asyncio.sleep(exc.value.retry_after_ms / 1000)
            await register(c, f"user{i}", "pw")
        for a in accounts:
            await a.client.close()
    finally:
        await node.stop()


async def test_default_limits_hold_a_password_guesser(tmp_path: Path) -> None:
    """Documented rate: a burst of 10 guesses, then one per second per address and account."""
    node = await start_embedded_node(node_config(tmp_path, **_default_login_limits()))
    try:
        victim = await make_account(node, "victim")  # 2 of this address's 10 tokens
        async with connected(node) as c:
            failed = 0
            with pytest.raises(RateLimited) as exc:
                for _ in range(20):
                    with pytest.raises(LoginFailed):
                        await login(c, "victim", "guess", b"\x01" * 32)
                    failed += 1
            # the 8 left of the burst, plus what refilled while they ran (~1/s)
            assert 8 <= failed < 12
            assert 0 < exc.value.retry_after_ms <= 1000
            await asyncio.sleep(exc.value.retry_after_ms / 1000)
            with pytest.raises(LoginFailed):  # one guess per second
                await login(c, "victim", "guess", b"\x01" * 32)
            with pytest.raises(RateLimited):
                await login(c, "victim", "guess", b"\x01" * 32)
        await victim.client.close()
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
        assert 'qpc_node_calls_total{method="enqueue"} 1.0' in text
        assert 'qpc_node_errors_total{code="payload_too_large",method="ping"} 1.0' in text
        assert "qpc_node_fetchwait_subscribers 1.0" in text
        assert 'qpc_node_store_seconds_count{op="enqueue"} 1.0' in text
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
