"""Subscription limits, sealed sender without a key, log hygiene, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import pytest

from node.embedded import start_embedded_node
from proto.errors import ConnectionLost, LimitExceeded, PermissionDenied, TransportError
from tests.node.helpers import connected, make_account, node_config

pytestmark = pytest.mark.network


async def test_subscription_limit_per_device(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path, max_subscriptions_per_device=2))
    try:
        alice = await make_account(node, "alice")
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(2):
                sub = await stack.enter_async_context(alice.client.fetch_wait(after_seq=0))
                await anext(sub)
            with pytest.raises(LimitExceeded):
                async with alice.client.fetch_wait(after_seq=0) as extra:
                    await anext(extra)
        # closing subscriptions frees the slots (the node notices the reset)
        subscribers = node.ctx.metrics.registry.get_sample_value
        while subscribers("qpc_node_fetchwait_subscribers") != 0:
            await asyncio.sleep(0.02)
        async with alice.client.fetch_wait(after_seq=0) as sub:
            await anext(sub)
        await alice.client.close()
    finally:
        await node.stop()


async def test_sealed_sender_needs_a_registered_access_key(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path))
    try:
        bob = await make_account(node, "bob")
        # re-register without an access key: sealed sender is off for this device
        await bob.client.register_device(
            hybrid_key=bob.hybrid_key,
            signature=bob.identity.sign_device_registration(bob.hybrid_key),
        )
        async with connected(node) as anon:
            for key in (bob.access_key, b"", os.urandom(16)):
                with pytest.raises(PermissionDenied):
                    await anon.enqueue(
                        recipient=bob.device_id, channel_id=b"c", payload=b"x", access_key=key
                    )
        assert (await bob.client.fetch(after_seq=0, limit=10)).envelopes == ()
        await bob.client.close()
    finally:
        await node.stop()


async def test_logs_carry_no_content_tokens_or_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node = await start_embedded_node(node_config(tmp_path))
    try:
        alice = await make_account(node, "alice")
        secret = b"SECRET-PAYLOAD-" + os.urandom(8).hex().encode()
        await alice.client.enqueue(recipient=alice.device_id, channel_id=b"chan", payload=secret)
        await alice.client.upload_key_packages(packages=[b"KP-" + secret])
        await alice.client.fetch(after_seq=0, limit=10)
        await alice.client.close()
        text = caplog.text
        for needle in (
            secret.decode(),
            alice.token.hex(),
            alice.device_id.hex(),
            alice.hybrid_key.hex()[:64],
            alice.access_key.hex(),
            alice.password,
        ):
            assert needle not in text
    finally:
        await node.stop()


async def test_stop_finishes_in_flight_calls(tmp_path: Path) -> None:
    node = await start_embedded_node(node_config(tmp_path))
    alice = await make_account(node, "alice")
    calls = [
        asyncio.create_task(
            alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"m")
        )
        for _ in range(50)
    ]
    await asyncio.sleep(0)
    await node.stop()
    results = await asyncio.gather(*calls, return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, ConnectionLost | TransportError) for r in failed), failed
    await alice.client.close()
    # whatever was answered is durable
    node = await start_embedded_node(node_config(tmp_path))
    try:
        async with connected(node, token=alice.token) as c:
            got = await c.fetch(after_seq=0, limit=100)
        assert {e.seq for e in got.envelopes} >= {r.seq for r in done}
    finally:
        await node.stop()
