"""Bad input on every method: a typed error, and nothing stored."""

from __future__ import annotations

import os

import pytest

from node.embedded import EmbeddedNode
from proto.codec import Recipient
from proto.crypto import opaque
from proto.errors import (
    BadRequest,
    InvalidSignature,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
)
from tests.node.helpers import connected, make_account, register

pytestmark = pytest.mark.network

BAD_NAMES = ["", "ab", "a" * 33, "bad name", "bob!", "ünïcödé"]


async def test_bad_auth_input(node: EmbeddedNode) -> None:
    async with connected(node) as c:
        req = opaque.client_registration_start("pw").request
        for name in BAD_NAMES:
            with pytest.raises(BadRequest):
                await c.register_start(username=name, request=req)
            with pytest.raises(BadRequest):
                await c.login_start(username=name, request=req)
            with pytest.raises(BadRequest):
                await c.register_finish(username=name, upload=b"x" * 192)
        for blob in (b"", b"x" * 2000):
            with pytest.raises(BadRequest):
                await c.register_start(username="alice", request=blob)
            with pytest.raises(BadRequest):
                await c.register_finish(username="alice", upload=blob)
            with pytest.raises(BadRequest):
                await c.login_start(username="alice", request=blob)
        with pytest.raises(BadRequest):  # garbage upload: no account is created
            await c.register_finish(username="alice", upload=b"\xff" * 192)
        with pytest.raises(BadRequest):
            await c.login_finish(login_id=os.urandom(16), finalization=b"", device_id=bytes(32))
        with pytest.raises(BadRequest):
            await c.login_finish(
                login_id=os.urandom(16), finalization=bytes(64), device_id=bytes(31)
            )
        await register(c, "alice", "pw")  # the name is still free


async def test_bad_device_registration_stores_nothing(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice", device=False)
    c = alice.client
    try:
        hybrid = os.urandom(1216)
        good_sig = alice.identity.sign_device_registration(hybrid)
        cases: list[tuple[bytes, bytes, bytes, type[Exception]]] = [
            (b"", good_sig, b"", BadRequest),
            (hybrid[:-1], good_sig, b"", BadRequest),
            (hybrid + b"x", good_sig, b"", BadRequest),
            (hybrid, b"", b"", BadRequest),
            (hybrid, good_sig[:-1], b"", BadRequest),
            (hybrid, good_sig, os.urandom(31), BadRequest),
            (hybrid, bytes(64), b"", InvalidSignature),
            (os.urandom(1216), good_sig, b"", InvalidSignature),  # signature over another key
        ]
        for key, sig, access, error in cases:
            with pytest.raises(error):
                await c.register_device(hybrid_key=key, signature=sig, delivery_access_key=access)
            assert not (await c.whoami()).device_registered
        with pytest.raises(NotFound):
            await c.fetch_hybrid_key(device_id=alice.device_id)
        assert (await c.list_devices(username="alice")).devices == ()
    finally:
        await c.close()


async def test_bad_key_package_input_stores_nothing(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    c = alice.client
    try:
        limit = node.config.max_key_packages_per_upload
        big = b"k" * (node.config.max_key_package_bytes + 1)
        with pytest.raises(LimitExceeded):
            await c.upload_key_packages(packages=[b"kp"] * (limit + 1))
        with pytest.raises(BadRequest):
            await c.upload_key_packages(packages=[])
        with pytest.raises(BadRequest):
            await c.upload_key_packages(packages=[b"kp", b""])
        with pytest.raises(PayloadTooLarge):
            await c.upload_key_packages(packages=[b"kp", big])
        with pytest.raises(PayloadTooLarge):
            await c.upload_key_packages(packages=[b"kp"], last_resort=big)
        count = await c.key_package_count()
        assert (count.count, count.has_last_resort) == (0, False)
        with pytest.raises(BadRequest):
            await c.fetch_key_package(username="alice", device_id=b"short")
        with pytest.raises(BadRequest):
            await c.fetch_key_package(username="", device_id=alice.device_id)
        with pytest.raises(NotFound):
            await c.fetch_key_package(username="alice", device_id=os.urandom(32))
        with pytest.raises(BadRequest):
            await c.list_devices(username="x")
        with pytest.raises(BadRequest):
            await c.fetch_hybrid_key(device_id=b"")
    finally:
        await c.close()


async def test_bad_delivery_input_stores_nothing(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    bob = await make_account(node, "bob")
    try:
        big = b"p" * (node.config.max_payload_bytes + 1)
        for kwargs, error in (
            ({"recipient": b"short"}, BadRequest),
            ({"recipient": os.urandom(32)}, NotFound),
            ({"channel_id": b""}, BadRequest),
            ({"channel_id": b"c" * 65}, BadRequest),
            ({"payload": b""}, BadRequest),
            ({"payload": big}, PayloadTooLarge),
        ):
            args: dict[str, bytes] = {
                "recipient": bob.device_id,
                "channel_id": b"c",
                "payload": b"ok",
            }
            args.update(kwargs)
            with pytest.raises(error):
                await alice.client.enqueue(**args)
        ok = Recipient(recipient=bob.device_id, payload=b"ok")
        for fanout, channel, error in (
            ([ok, Recipient(recipient=os.urandom(32), payload=b"x")], b"g", NotFound),
            ([ok, Recipient(recipient=b"short", payload=b"x")], b"g", BadRequest),
            ([ok, Recipient(recipient=bob.device_id, payload=big)], b"g", PayloadTooLarge),
            ([ok, Recipient(recipient=bob.device_id, payload=b"")], b"g", BadRequest),
            ([ok], b"", BadRequest),
        ):
            with pytest.raises(error):
                await alice.client.enqueue_commit(channel_id=channel, epoch=0, fanout=fanout)
        with pytest.raises(BadRequest):
            await alice.client.enqueue_commit(channel_id=b"g", epoch=2**64 - 1, fanout=[ok])
        assert (await bob.client.fetch(after_seq=0, limit=10)).envelopes == ()
        # the largest cursors are fine (clamped to what a store can hold)
        assert (await bob.client.fetch(after_seq=2**64 - 1, limit=2**32 - 1)).envelopes == ()
        await bob.client.ack(upto_seq=2**64 - 1)
        async with bob.client.fetch_wait(after_seq=2**64 - 1, timeout_ms=2**32 - 1) as sub:
            assert (await anext(sub)).envelopes == ()
        # the channel was never created: epoch 0 is still accepted
        r = await alice.client.enqueue_commit(channel_id=b"g", epoch=0, fanout=[ok])
        assert (r.new_epoch, r.seqs) == (1, (1,))
    finally:
        await alice.client.close()
        await bob.client.close()
