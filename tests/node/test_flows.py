"""Full flows for every method, through the real QUIC RPC against a real node."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode
from proto.codec import Recipient
from proto.errors import (
    AlreadyExists,
    LoginFailed,
    NotFound,
    PayloadTooLarge,
)
from tests.node.helpers import connected, login, make_account, register

pytestmark = pytest.mark.network


async def test_health_and_ping(node: EmbeddedNode) -> None:
    async with connected(node) as c:
        h = await c.health()
        assert h.status == "ok"
        assert h.store_backend == "sqlite"
        assert h.version
        p = await c.ping(payload=b"hello")
        assert p.payload == b"hello"
        assert p.server_time_ms > 0
        with pytest.raises(PayloadTooLarge):
            await c.ping(payload=b"x" * 1025)


async def test_register_login_whoami_logout(node: EmbeddedNode) -> None:
    alice = await make_account(node, "Alice")
    try:
        who = await alice.client.whoami()
        assert who.username == "alice"  # case-folded
        assert who.device_id == alice.device_id
        assert who.device_registered
        assert who.session_expires_ms > 0
        # a duplicate registration is refused, in any case
        async with connected(node) as c:
            with pytest.raises(AlreadyExists):
                await register(c, "ALICE", "other password")
            # a second login gives a second, independent token
            token2 = await login(c, "alice", alice.password, alice.device_id)
            assert token2 != alice.token
        await alice.client.logout()
        from proto.errors import Unauthenticated

        with pytest.raises(Unauthenticated):
            await alice.client.whoami()
        async with connected(node, token=token2) as c:
            assert (await c.whoami()).username == "alice"
    finally:
        await alice.client.close()


async def test_wrong_password_fails(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice", device=False)
    await alice.client.close()
    async with connected(node) as c:
        from proto.crypto import opaque

        start = opaque.client_login_start("wrong password")
        resp = await c.login_start(username="alice", request=start.request)
        with pytest.raises(LoginFailed):
            opaque.client_login_finish("wrong password", start.state, resp.response)
        # a client that sends a bogus finalization anyway is refused too
        with pytest.raises(LoginFailed):
            await c.login_finish(
                login_id=resp.login_id, finalization=os.urandom(64), device_id=os.urandom(32)
            )


async def test_keys_flow(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    bob = await make_account(node, "bob")
    try:
        stock = await alice.client.upload_key_packages(
            packages=[b"kp1", b"kp2"], last_resort=b"last"
        )
        assert stock.stock == 2
        count = await alice.client.key_package_count()
        assert (count.count, count.has_last_resort) == (2, True)
        got = [
            await bob.client.fetch_key_package(username="alice", device_id=alice.device_id)
            for _ in range(4)
        ]
        assert [(g.package, g.last_resort) for g in got] == [
            (b"kp1", False),
            (b"kp2", False),
            (b"last", True),
            (b"last", True),
        ]
        count = await alice.client.key_package_count()
        assert (count.count, count.has_last_resort) == (0, True)
        devices = await bob.client.list_devices(username="ALICE")
        assert [d.device_id for d in devices.devices] == [alice.device_id]
        assert devices.devices[0].hybrid_key == alice.hybrid_key
        hk = await bob.client.fetch_hybrid_key(device_id=alice.device_id)
        assert hk.hybrid_key == alice.hybrid_key
        assert hk.signature == alice.identity.sign_device_registration(alice.hybrid_key)
        with pytest.raises(NotFound):
            await bob.client.list_devices(username="nobody")
        with pytest.raises(NotFound):
            await bob.client.fetch_hybrid_key(device_id=os.urandom(32))
        with pytest.raises(NotFound):  # device of another user
            await bob.client.fetch_key_package(username="bob", device_id=alice.device_id)
        with pytest.raises(NotFound):  # bob has no packages at all
            await alice.client.fetch_key_package(username="bob", device_id=bob.device_id)
    finally:
        await alice.client.close()
        await bob.client.close()


async def test_delivery_flow(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    bob = await make_account(node, "bob")
    try:
        seqs = [
            (
                await alice.client.enqueue(
                    recipient=bob.device_id, channel_id=b"ch", payload=f"m{i}".encode()
                )
            ).seq
            for i in range(5)
        ]
        assert seqs == [1, 2, 3, 4, 5]
        got = await bob.client.fetch(after_seq=0, limit=0)
        assert [(e.seq, e.channel_id, e.data) for e in got.envelopes] == [
            (i + 1, b"ch", f"m{i}".encode()) for i in range(5)
        ]
        got = await bob.client.fetch(after_seq=2, limit=2)
        assert [e.seq for e in got.envelopes] == [3, 4]
        await bob.client.ack(upto_seq=3)
        got = await bob.client.fetch(after_seq=0, limit=10)
        assert [e.seq for e in got.envelopes] == [4, 5]
        await bob.client.ack(upto_seq=5)
        assert (await bob.client.fetch(after_seq=0, limit=10)).envelopes == ()
        # seqs keep growing after the inbox was emptied
        r = await alice.client.enqueue(recipient=bob.device_id, channel_id=b"ch", payload=b"x")
        assert r.seq == 6
        # sealed sender: no token, the access key authorises
        async with connected(node) as anon:
            r = await anon.enqueue(
                recipient=bob.device_id,
                channel_id=b"ch",
                payload=b"sealed",
                access_key=bob.access_key,
            )
            assert r.seq == 7
            from proto.errors import PermissionDenied

            with pytest.raises(PermissionDenied):
                await anon.enqueue(
                    recipient=bob.device_id,
                    channel_id=b"ch",
                    payload=b"sealed",
                    access_key=os.urandom(32),
                )
            with pytest.raises(PermissionDenied):  # unknown device looks the same
                await anon.enqueue(
                    recipient=os.urandom(32),
                    channel_id=b"ch",
                    payload=b"sealed",
                    access_key=bob.access_key,
                )
        got = await bob.client.fetch(after_seq=6, limit=10)
        assert [(e.seq, e.data) for e in got.envelopes] == [(7, b"sealed")]
    finally:
        await alice.client.close()
        await bob.client.close()


async def test_fetch_wait_pushes(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    bob = await make_account(node, "bob")
    try:
        await alice.client.enqueue(recipient=bob.device_id, channel_id=b"c", payload=b"early")
        async with bob.client.fetch_wait(after_seq=0) as sub:
            first = await anext(sub)
            assert [e.data for e in first.envelopes] == [b"early"]
            await alice.client.enqueue(recipient=bob.device_id, channel_id=b"c", payload=b"late")
            second = await asyncio.wait_for(anext(sub), 5)
            assert [(e.seq, e.data) for e in second.envelopes] == [(2, b"late")]
        # an empty inbox answers at once with nothing, then times out with nothing
        async with bob.client.fetch_wait(after_seq=2, timeout_ms=200) as sub:
            pushes = [p.envelopes async for p in sub]
        assert pushes == [(), ()]
    finally:
        await alice.client.close()
        await bob.client.close()


async def test_enqueue_commit_flow(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    bob = await make_account(node, "bob")
    carol = await make_account(node, "carol")
    try:
        res = await alice.client.enqueue_commit(
            channel_id=b"group",
            epoch=0,
            fanout=[
                Recipient(recipient=bob.device_id, payload=b"c-bob"),
                Recipient(recipient=carol.device_id, payload=b"c-carol"),
            ],
        )
        assert res.new_epoch == 1
        assert res.seqs == (1, 1)
        from proto.errors import StaleEpoch

        with pytest.raises(StaleEpoch):
            await bob.client.enqueue_commit(
                channel_id=b"group",
                epoch=0,
                fanout=[Recipient(recipient=carol.device_id, payload=b"stale")],
            )
        res = await bob.client.enqueue_commit(
            channel_id=b"group",
            epoch=1,
            fanout=[Recipient(recipient=carol.device_id, payload=b"c2")],
        )
        assert res.new_epoch == 2
        got = await carol.client.fetch(after_seq=0, limit=10)
        assert [e.data for e in got.envelopes] == [b"c-carol", b"c2"]
    finally:
        for a in (alice, bob, carol):
            await a.client.close()


async def test_fetch_wait_pages_a_long_backlog(tmp_path: Path) -> None:
    from node.embedded import start_embedded_node
    from tests.node.helpers import node_config

    node = await start_embedded_node(node_config(tmp_path, max_fetch=3))
    try:
        alice = await make_account(node, "alice")
        for i in range(6):  # exactly two full pages
            await alice.client.enqueue(
                recipient=alice.device_id, channel_id=b"c", payload=b"%d" % i
            )
        async with alice.client.fetch_wait(after_seq=0) as sub:
            pages = [[e.seq for e in (await anext(sub)).envelopes] for _ in range(2)]
            assert pages == [[1, 2, 3], [4, 5, 6]]
            # no empty push after a full page: the next push is the next message
            await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"7")
            nxt = await asyncio.wait_for(anext(sub), 5)
            assert [e.seq for e in nxt.envelopes] == [7]
        assert [e.seq for e in (await alice.client.fetch(after_seq=0, limit=0)).envelopes] == [
            1,
            2,
            3,
        ]
        await alice.client.close()
    finally:
        await node.stop()
