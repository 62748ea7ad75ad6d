"""Channel logs: one stored ciphertext, a reference per inbox, post capabilities.

Every test runs on both store backends (``backend`` in conftest.py: SQLite
in a temp dir, PostgreSQL in a fresh schema).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator

import asyncpg
import pytest

from node.embedded import EmbeddedNode
from node.store import Store, TreePart, WelcomeParts, WelcomeTree
from proto import codec
from proto.errors import BadRequest, PermissionDenied, StaleEpoch
from proto.messages import Params, Request
from tests.node.backends import Backend
from tests.node.helpers import make_account

A, B, C, D, E = b"a" * 32, b"b" * 32, b"c" * 32, b"d" * 32, b"e" * 32
K1, K2 = b"1" * 32, b"2" * 32
CH = b"chan"


def h(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


@pytest.fixture
async def store(any_store: Store) -> AsyncIterator[Store]:
    yield any_store


def _ids(n: int) -> tuple[bytes, ...]:
    """``n`` distinct 32-byte deviceIds."""
    return tuple(bytes([i % 256, i // 256]) * 16 for i in range(n))


def _request_bytes(params: Params) -> int:
    """Encoded size of a request carrying ``params``."""
    return len(codec.encode_request(Request(auth=b"", call=params)))


async def scalar(backend: Backend, sql: str) -> int:
    """One integer from the backend's database, read beside the store."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.target) as db:
            return int(db.execute(sql).fetchone()[0] or 0)
    conn = await asyncpg.connect(backend.target)
    try:
        return int(await conn.fetchval(sql) or 0)
    finally:
        await conn.close()


async def _keyed(store: Store, *, members: list[bytes]) -> None:
    """A channel at epoch 1 made by A, whose post key is K1."""
    r = await store.commit_channel(CH, 0, None, A, b"commit0", members, b"", [], 1, 100)
    assert r.new_epoch == 1
    await store.set_channel_key(CH, 1, A, h(K1))


WHOLE = WelcomeTree(group_info=b"gi", ratchet_tree=b"tree", tree_deltas=())


async def test_welcome_parts_stored_once_until_acked_or_purged(store: Store) -> None:
    """Welcomes by reference: the shared parts once per epoch, each joiner its
    own entry; readable only by a joiner holding an entry; deleted with the
    last joiner's ack, or by retention."""
    await _keyed(store, members=[B])
    parts = WelcomeParts(group_info=b"gi", entries=(b"\x02eC", b"\x02eD"))
    tree = TreePart(data=b"tree", base=True)
    r = await store.commit_channel(
        CH, 1, h(K1), A, b"add", [B], b"", [C, D], 2, 100, parts=parts, tree=tree
    )
    assert r.new_epoch == 2 and len(r.welcome_seqs) == 2
    assert [e.data for e in await store.fetch(C, 0, 10)] == [b"\x02eC"]
    assert await store.fetch_welcome(CH, 2, C) == WHOLE
    assert await store.fetch_welcome(CH, 2, B) is None  # not a joiner
    assert await store.fetch_welcome(CH, 1, C) is None  # another epoch
    await store.ack(C, 10)
    assert await store.fetch_welcome(CH, 2, C) is None
    assert await store.fetch_welcome(CH, 2, D) == WHOLE  # D has not acked
    await store.ack(D, 10)
    assert await store.fetch_welcome(CH, 2, D) is None
    # retention: a Welcome nobody acked is purged with its entries
    await store.set_channel_key(CH, 2, A, h(K2))
    one = WelcomeParts(group_info=b"gi", entries=(b"\x02eE",))
    await store.commit_channel(
        CH, 2, h(K2), A, b"add2", [B], b"", [E], 3, 100, parts=one, tree=tree
    )
    assert await store.fetch_welcome(CH, 3, E) == WHOLE
    await store.purge_messages(10)
    assert await store.fetch_welcome(CH, 3, E) is None


async def test_post_stored_once_and_read_by_each(store: Store, backend: Backend) -> None:
    await _keyed(store, members=[B, C])
    seqs = await store.post_channel(CH, h(K1), [B, C], b"m" * 1000, 2, 100)
    assert seqs == (2, 2)
    for dev in (B, C):
        got = await store.fetch(dev, 1, 10)
        assert [(e.seq, e.channel_id, e.data) for e in got] == [(2, CH, b"m" * 1000)]
    # the bytes are stored once
    n = "SELECT COUNT(*) FROM channel_payloads WHERE length(payload) = 1000"
    assert await scalar(backend, n) == 1
    assert await scalar(backend, "SELECT SUM(length(payload)) FROM messages") == 0


async def test_payload_dropped_when_every_reader_acked(store: Store, backend: Backend) -> None:
    await _keyed(store, members=[B, C])
    await store.post_channel(CH, h(K1), [B, C], b"x", 2, 100)
    await store.ack(B, 10)
    assert [e.data for e in await store.fetch(C, 1, 10)] == [b"x"]  # C still reads it
    await store.ack(C, 10)
    assert await store.fetch(C, 0, 10) == []
    assert await scalar(backend, "SELECT COUNT(*) FROM channel_payloads") == 0


async def test_retention_drops_payloads(store: Store, backend: Backend) -> None:
    await _keyed(store, members=[B])
    await store.post_channel(CH, h(K1), [B], b"x", 5, 100)
    assert await store.purge_messages(10) == 2  # the commit and the post
    assert await store.fetch(B, 0, 10) == []
    assert await scalar(backend, "SELECT COUNT(*) FROM channel_payloads") == 0


async def test_post_needs_the_current_key(store: Store) -> None:
    with pytest.raises(PermissionDenied):  # no such channel
        await store.post_channel(CH, h(K1), [B], b"x", 2, 100)
    await store.commit_channel(CH, 0, None, A, b"c", [B], b"", [], 1, 100)
    with pytest.raises(PermissionDenied):  # key not set yet for epoch 1
        await store.post_channel(CH, h(K1), [B], b"x", 2, 100)
    await store.set_channel_key(CH, 1, A, h(K1))
    with pytest.raises(PermissionDenied):
        await store.post_channel(CH, h(K2), [B], b"x", 2, 100)
    assert await store.post_channel(CH, h(K1), [B], b"x", 2, 100) == (2,)


async def test_commit_rotates_the_key(store: Store) -> None:
    await _keyed(store, members=[B, C])
    with pytest.raises(StaleEpoch):
        await store.commit_channel(CH, 0, h(K1), B, b"c", [A], b"", [], 2, 100)
    with pytest.raises(PermissionDenied):  # right epoch, wrong key
        await store.commit_channel(CH, 1, h(K2), B, b"c", [A], b"", [], 2, 100)
    r = await store.commit_channel(CH, 1, h(K1), B, b"c1", [A, C], b"w", [C], 2, 100)
    assert r.new_epoch == 2 and r.commit_seqs == (1, 2) and r.welcome_seqs == (3,)
    # the old key posts no more; only B, the committer, sets the new one, once
    with pytest.raises(PermissionDenied):
        await store.post_channel(CH, h(K1), [A], b"x", 3, 100)
    with pytest.raises(PermissionDenied):
        await store.set_channel_key(CH, 2, A, h(K2))
    with pytest.raises(StaleEpoch):
        await store.set_channel_key(CH, 1, B, h(K2))
    await store.set_channel_key(CH, 2, B, h(K2))
    with pytest.raises(PermissionDenied):
        await store.set_channel_key(CH, 2, B, h(K1))
    assert await store.post_channel(CH, h(K2), [A], b"x", 3, 100) == (2,)
    assert [e.data for e in await store.fetch(C, 0, 10)] == [b"commit0", b"c1", b"w"]


async def test_full_inbox_is_skipped_not_fatal(store: Store) -> None:
    await _keyed(store, members=[B, C])
    for _ in range(2):
        await store.enqueue(B, b"dm", b"d", 1, 3)
    assert await store.post_channel(CH, h(K1), [B, C], b"x", 2, 3) == (0, 2)
    assert [e.data for e in await store.fetch(C, 1, 10)] == [b"x"]


async def test_enqueue_commit_cannot_bypass_keys(store: Store) -> None:
    from node.store import FanoutItem

    await _keyed(store, members=[B])
    with pytest.raises(PermissionDenied):
        await store.enqueue_commit(CH, 1, [FanoutItem(recipient=B, payload=b"x")], 2, 100)
    # and a channel made by enqueueCommit takes no commitChannel
    await store.enqueue_commit(b"old", 0, [], 1, 100)
    with pytest.raises(PermissionDenied):
        await store.commit_channel(b"old", 1, None, A, b"c", [B], b"", [], 2, 100)


# ------------------------------------------------------------- over the wire


async def test_removed_member_can_neither_post_nor_read(backend_node: EmbeddedNode) -> None:
    """Over QUIC: posts need no token (sealed sender) but the current key."""
    alice = await make_account(backend_node, "alice")
    bob = await make_account(backend_node, "bob")
    carol = await make_account(backend_node, "carol")
    try:
        devs = [bob.device_id, carol.device_id]
        r = await alice.client.commit_channel(
            channel_id=CH,
            epoch=0,
            post_key=b"",
            commit=b"add",
            members=[],
            welcome=b"w",
            joiners=devs,
        )
        assert r.new_epoch == 1
        await alice.client.set_channel_key(channel_id=CH, epoch=1, key_hash=h(K1))
        with pytest.raises(PermissionDenied):  # only the committer sets the key
            await bob.client.set_channel_key(channel_id=CH, epoch=1, key_hash=h(K2))
        res = await bob.client.post_channel(
            channel_id=CH,
            post_key=K1,
            recipients=[alice.device_id, carol.device_id],
            payload=b"hi",
        )
        assert res.stored == 2
        # alice removes carol: the commit goes to bob and carol, the key rotates
        await alice.client.commit_channel(
            channel_id=CH, epoch=1, post_key=K1, commit=b"remove", members=devs
        )
        await alice.client.set_channel_key(channel_id=CH, epoch=2, key_hash=h(K2))
        with pytest.raises(PermissionDenied):  # carol holds only the old key
            await carol.client.post_channel(
                channel_id=CH, post_key=K1, recipients=[alice.device_id], payload=b"x"
            )
        with pytest.raises(PermissionDenied):  # nor may she commit
            await carol.client.commit_channel(
                channel_id=CH, epoch=2, post_key=K1, commit=b"c", members=[alice.device_id]
            )
        await bob.client.post_channel(
            channel_id=CH, post_key=K2, recipients=[alice.device_id], payload=b"after"
        )
        got = await carol.client.fetch(after_seq=0, limit=10)
        assert [e.data for e in got.envelopes] == [b"w", b"hi", b"remove"]
        got = await alice.client.fetch(after_seq=0, limit=10)
        assert [e.data for e in got.envelopes] == [b"hi", b"after"]
    finally:
        for a in (alice, bob, carol):
            await a.client.close()


async def test_packed_recipients(backend_node: EmbeddedNode) -> None:
    """recipientIds (32-byte deviceIds concatenated) reach the same inboxes as
    the list, cost 32 B per recipient on the wire, and bad packing is refused."""
    from proto.messages import PostChannelParams

    alice = await make_account(backend_node, "alice")
    bob = await make_account(backend_node, "bob")
    carol = await make_account(backend_node, "carol")
    try:
        devs = [bob.device_id, carol.device_id]
        await alice.client.commit_channel(
            channel_id=CH, epoch=0, post_key=b"", commit=b"add", members=[], welcome=b"w",
            joiners=devs,
        )  # fmt: skip
        await alice.client.set_channel_key(channel_id=CH, epoch=1, key_hash=h(K1))
        res = await alice.client.post_channel(
            channel_id=CH, post_key=K1, recipient_ids=b"".join(devs), payload=b"packed"
        )
        assert res.stored == 2
        for who in (bob, carol):
            got = await who.client.fetch(after_seq=0, limit=10)
            assert [e.data for e in got.envelopes] == [b"w", b"packed"]
        for bad in (
            {"recipient_ids": bob.device_id + b"x"},  # not a multiple of 32
            {"recipient_ids": bob.device_id, "recipients": [carol.device_id]},  # both
        ):
            with pytest.raises(BadRequest):
                await alice.client.post_channel(
                    channel_id=CH,
                    post_key=K1,
                    payload=b"x",
                    **bad,
                )
        for who in (bob, carol):  # nothing was stored by the refused posts
            got = await who.client.fetch(after_seq=0, limit=10)
            assert [e.data for e in got.envelopes] == [b"w", b"packed"]

        def size(n: int, packed: bool) -> int:
            ids = _ids(n)
            return _request_bytes(
                PostChannelParams(
                    channel_id=CH,
                    post_key=K1,
                    payload=b"m",
                    **({"recipient_ids": b"".join(ids)} if packed else {"recipients": ids}),
                )
            )

        assert size(100, packed=True) - size(0, packed=True) == 100 * 32
        assert size(100, packed=False) - size(0, packed=False) == 100 * 40
    finally:
        for a in (alice, bob, carol):
            await a.client.close()


async def test_packed_members(backend_node: EmbeddedNode) -> None:
    """commitChannel's memberIds (deviceIds concatenated) reach the same
    inboxes as the members list, cost 32 B per member on the wire, and bad
    packing is refused with nothing stored."""
    from proto.messages import CommitChannelParams

    alice = await make_account(backend_node, "alice")
    bob = await make_account(backend_node, "bob")
    carol = await make_account(backend_node, "carol")
    try:
        devs = [bob.device_id, carol.device_id]
        await alice.client.commit_channel(
            channel_id=CH, epoch=0, post_key=b"", commit=b"c0", welcome=b"w", joiners=devs
        )
        await alice.client.set_channel_key(channel_id=CH, epoch=1, key_hash=h(K1))
        for bad in (
            {"member_ids": bob.device_id + b"x"},  # not a multiple of 32
            {"member_ids": bob.device_id, "members": [carol.device_id]},  # both
        ):
            with pytest.raises(BadRequest):
                await alice.client.commit_channel(
                    channel_id=CH, epoch=1, post_key=K1, commit=b"bad", **bad
                )
        await alice.client.commit_channel(
            channel_id=CH, epoch=1, post_key=K1, commit=b"c1", member_ids=b"".join(devs)
        )
        for who in (bob, carol):
            got = await who.client.fetch(after_seq=0, limit=10)
            assert [e.data for e in got.envelopes] == [b"w", b"c1"]

        def size(n: int, packed: bool) -> int:
            ids = _ids(n)
            return _request_bytes(
                CommitChannelParams(
                    channel_id=CH,
                    epoch=1,
                    post_key=K1,
                    commit=b"c",
                    **({"member_ids": b"".join(ids)} if packed else {"members": ids}),
                )
            )

        assert size(100, packed=True) - size(0, packed=True) == 100 * 32
        assert size(100, packed=False) - size(0, packed=False) == 100 * 40
    finally:
        for a in (alice, bob, carol):
            await a.client.close()
