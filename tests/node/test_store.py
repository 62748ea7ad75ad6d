"""The stores on their own: group commit isolation, caches, seq counters.

Tests taking ``store`` or ``backend`` run on both backends (SQLite and, marked
``postgres``, PostgreSQL); the rest test the SQLite store's fsync modes (the
shared writer itself is tested in ``tests/proto/test_dbwriter.py``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.store import DeviceRecord, FanoutItem, Store
from node.store import sqlite_ops as ops
from node.store.cache import LruCache
from node.store.sqlite import SqliteStore
from proto.errors import AlreadyExists, LimitExceeded, QueueFull, StaleEpoch, Unavailable
from tests.node.backends import Backend

R = b"r" * 32


@pytest.fixture
async def store(any_store: Store) -> Store:
    return any_store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = await SqliteStore.open(tmp_path / "n.db")
    yield s
    await s.close()


async def test_one_bad_write_does_not_fail_its_batch(store: Store) -> None:
    # 2**63 does not fit SQLite's INTEGER: that op fails inside the shared transaction
    results = await asyncio.gather(
        *(store.enqueue(R, b"c", b"m", 1, 1000) for _ in range(10)),
        store.ack(R, 2**63),
        *(store.enqueue(R, b"c", b"m", 1, 1000) for _ in range(10)),
        return_exceptions=True,
    )
    assert isinstance(results[10], Unavailable)
    seqs = sorted(r for r in results if isinstance(r, int))
    assert seqs == list(range(1, 21))
    assert [e.seq for e in await store.fetch(R, 0, 100)] == seqs


async def test_domain_errors_inside_a_batch(store: Store) -> None:
    results = await asyncio.gather(
        *(store.enqueue(R, b"c", b"m", 1, 5) for _ in range(8)), return_exceptions=True
    )
    assert sorted(r for r in results if isinstance(r, int)) == [1, 2, 3, 4, 5]
    assert sum(isinstance(r, QueueFull) for r in results) == 3
    # the commit check counts every recipient's extra messages
    with pytest.raises(QueueFull):
        await store.enqueue_commit(b"g", 0, [FanoutItem(recipient=R, payload=b"x")], 1, 5)
    assert await store.ack(R, 2) == 2
    result = await store.enqueue_commit(b"g", 0, [FanoutItem(recipient=R, payload=b"x")] * 2, 1, 5)
    assert result.seqs == (6, 7)


async def test_writes_queued_at_close_are_committed(backend: Backend) -> None:
    s = await backend.open()
    pending = [asyncio.ensure_future(s.enqueue(R, b"c", b"m", 1, 1000)) for _ in range(5)]
    await asyncio.sleep(0)  # queued, not yet answered
    await s.close()
    assert sorted([await p for p in pending]) == [1, 2, 3, 4, 5]
    s = await backend.open()
    try:
        assert [e.seq for e in await s.fetch(R, 0, 100)] == [1, 2, 3, 4, 5]
    finally:
        await s.close()


async def test_session_cache_follows_writes(store: Store) -> None:
    await store.create_account("alice", b"pf", 1)
    await store.create_session(b"h" * 32, "alice", R, 1, 10**15)
    assert (await store.get_session(b"h" * 32)) is not None
    assert (await store.get_session(b"h" * 32)) is not None  # cached
    await store.delete_session(b"h" * 32)
    assert await store.get_session(b"h" * 32) is None
    await store.create_session(b"e" * 32, "alice", R, 1, 5)
    assert await store.get_session(b"e" * 32) is not None
    assert await store.purge_sessions(10) == 1
    assert await store.get_session(b"e" * 32) is None


async def test_device_cache_follows_writes(store: Store) -> None:
    await store.create_account("alice", b"pf", 1)
    await store.create_account("bob", b"pf", 1)
    dev = DeviceRecord(
        device_id=R, username="alice", hybrid_key=b"k1", signature=b"s", access_key_hash=None
    )
    await store.upsert_device(dev, 1)
    assert (await store.get_device(R)) == dev
    await store.upsert_device(
        DeviceRecord(
            device_id=R, username="alice", hybrid_key=b"k2", signature=b"s", access_key_hash=b"a"
        ),
        2,
    )
    got = await store.get_device(R)
    assert got is not None and got.hybrid_key == b"k2" and got.access_key_hash == b"a"
    with pytest.raises(AlreadyExists):
        await store.upsert_device(
            DeviceRecord(
                device_id=R, username="bob", hybrid_key=b"k3", signature=b"s", access_key_hash=None
            ),
            3,
        )
    got = await store.get_device(R)
    assert got is not None and got.username == "alice"


async def test_secrets_are_created_once(store: Store) -> None:
    first = await store.get_or_create_secret("s", b"one")
    assert first == b"one"
    assert await store.get_or_create_secret("s", b"two") == b"one"


async def test_closed_store_refuses_writes(backend: Backend) -> None:
    s = await backend.open()
    await s.close()
    with pytest.raises(Unavailable):
        await s.enqueue(R, b"c", b"m", 1, 10)


def test_lru_cache_generation() -> None:
    cache: LruCache[str, int] = LruCache(2)
    gen = cache.generation
    cache.invalidate("a")  # a write raced the read
    cache.put("a", 1, gen)
    assert cache.get("a") is None
    cache.put("a", 1, cache.generation)
    cache.put("b", 2, cache.generation)
    cache.get("a")
    cache.put("c", 3, cache.generation)  # evicts b, the least recently used
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


async def test_cleanups_commit_without_fsync_and_deliveries_with_it(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    """ack alone commits NORMAL (redoing it is harmless); enqueue commits FULL."""
    seen: dict[str, int] = {}

    def spy(name: str, real: Any) -> Any:
        def op(db: sqlite3.Connection, *args: Any, **kw: Any) -> Any:
            seen[name] = int(db.execute("PRAGMA synchronous").fetchone()[0])
            return real(db, *args, **kw)

        return op

    monkeypatch.setattr(ops, "ack", spy("ack", ops.ack))
    monkeypatch.setattr(ops, "enqueue", spy("enqueue", ops.enqueue))
    await store.enqueue(R, b"c", b"m", 1, 5)
    assert seen["enqueue"] == 2  # FULL: the WAL is fsynced before the seq is returned
    assert await store.ack(R, 1) == 1
    assert seen["ack"] == 1  # NORMAL
    # an ack sharing a batch with an enqueue rides on its fsync
    await asyncio.gather(store.ack(R, 1), store.enqueue(R, b"c", b"m2", 1, 5))
    assert seen["ack"] == 2
    assert [e.data for e in await store.fetch(R, 0, 10)] == [b"m2"]


async def test_normal_store_never_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = ops.enqueue

    def op(db: sqlite3.Connection, *args: Any, **kw: Any) -> Any:
        seen.append(int(db.execute("PRAGMA synchronous").fetchone()[0]))
        return real(db, *args, **kw)

    monkeypatch.setattr(ops, "enqueue", op)
    s = await SqliteStore.open(tmp_path / "n.db", synchronous="NORMAL")
    try:
        await s.enqueue(R, b"c", b"m", 1, 5)
    finally:
        await s.close()
    assert seen == [1]


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(
        st.tuples(st.sampled_from([b"a" * 32, b"b" * 32, b"c" * 32]), st.integers(1, 4)),
        min_size=1,
        max_size=12,
    ),
    prefill=st.integers(0, 4),
)
def test_batched_enqueues_match_one_by_one(
    batch: list[tuple[bytes, int]], prefill: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A run of enqueues in one group commit gives the seqs and QueueFull errors
    that applying them one at a time gives (depth limits straddled included)."""
    path = tmp_path_factory.mktemp("batch") / "n.db"
    db = ops.connect_writer(path, "NORMAL")
    try:
        for r in (b"a" * 32, b"b" * 32, b"c" * 32):
            for i in range(prefill):
                ops.enqueue(db, r, b"c", b"pre%d" % i, 1, 100)
        db.execute("SAVEPOINT s")
        items = [
            ops.EnqueueOp(r, b"c", b"m%d" % i, 2, prefill + room)
            for i, (r, room) in enumerate(batch)
        ]
        expected: list[tuple[bool, object]] = []
        for it in items:
            try:
                expected.append((True, it(db)))
            except QueueFull:
                expected.append((False, "full"))
        stored_expected = db.execute(
            "SELECT recipient, seq, payload FROM messages ORDER BY recipient, seq"
        ).fetchall()
        db.execute("ROLLBACK TO s")
        got = [(ok, value if ok else "full") for ok, value in ops.enqueue_many(db, items)]
        stored = db.execute(
            "SELECT recipient, seq, payload FROM messages ORDER BY recipient, seq"
        ).fetchall()
        assert got == expected
        assert stored == stored_expected
        db.execute("RELEASE s")
    finally:
        db.close()


# ------------------------------------------------- semantics, both backends


async def test_concurrent_enqueues_get_gapless_seqs_per_inbox(store: Store) -> None:
    inboxes = [bytes([i]) * 32 for i in range(3)]
    results = await asyncio.gather(
        *(store.enqueue(inboxes[i % 3], b"c", b"m%d" % i, 1, 1000) for i in range(150))
    )
    for k, inbox in enumerate(inboxes):
        mine = sorted(seq for i, seq in enumerate(results) if i % 3 == k)
        assert mine == list(range(1, 51))
        got = await store.fetch(inbox, 0, 100)
        assert [e.seq for e in got] == mine
        by_seq = {seq: b"m%d" % i for i, seq in enumerate(results) if i % 3 == k}
        assert all(e.data == by_seq[e.seq] for e in got)


async def test_ack_deletes_and_seqs_are_never_reused(store: Store) -> None:
    for _ in range(3):
        await store.enqueue(R, b"c", b"m", 1, 1000)
    assert await store.ack(R, 2) == 2
    assert [e.seq for e in await store.fetch(R, 0, 10)] == [3]
    assert await store.ack(R, 3) == 1
    assert await store.fetch(R, 0, 10) == []
    assert await store.ack(R, 3) == 0  # acking again is harmless
    assert await store.enqueue(R, b"c", b"m", 1, 1000) == 4  # an empty inbox keeps counting
    assert await store.queued_total() == 1


async def test_fetch_pages_in_seq_order(store: Store) -> None:
    for i in range(7):
        await store.enqueue(R, bytes([i + 1]), b"m%d" % i, 1, 1000)
    page = await store.fetch(R, 2, 3)
    assert [(e.seq, e.channel_id, e.data) for e in page] == [
        (3, b"\x03", b"m2"),
        (4, b"\x04", b"m3"),
        (5, b"\x05", b"m4"),
    ]


async def test_queue_depth_limit_counts_waiting_messages(store: Store) -> None:
    for _ in range(3):
        await store.enqueue(R, b"c", b"m", 1, 3)
    with pytest.raises(QueueFull):
        await store.enqueue(R, b"c", b"m", 1, 3)
    await store.ack(R, 1)
    assert await store.enqueue(R, b"c", b"m", 1, 3) == 4


async def test_retention_purges_old_messages_only(store: Store) -> None:
    await store.enqueue(R, b"c", b"old", 100, 1000)
    await store.enqueue(R, b"c", b"new", 200, 1000)
    assert await store.purge_messages(150) == 1
    assert [e.data for e in await store.fetch(R, 0, 10)] == [b"new"]


async def test_commit_epochs_and_races(store: Store) -> None:
    a, b = b"a" * 32, b"b" * 32
    fan = [FanoutItem(recipient=a, payload=b"ca"), FanoutItem(recipient=b, payload=b"cb")]
    first = await store.enqueue_commit(b"g", 3, fan, 1, 1000)  # unknown channel: created at 3
    assert (first.seqs, first.new_epoch) == ((1, 1), 4)
    with pytest.raises(StaleEpoch):
        await store.enqueue_commit(b"g", 3, fan, 1, 1000)
    # ten concurrent commits for epoch 4: exactly one wins, the others store nothing
    results = await asyncio.gather(
        *(store.enqueue_commit(b"g", 4, fan, 1, 1000) for _ in range(10)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1 and winners[0].new_epoch == 5
    assert all(isinstance(r, StaleEpoch) for r in results if r is not winners[0])
    assert [e.seq for e in await store.fetch(a, 0, 10)] == [1, 2]
    # a full inbox fails the whole commit and leaves the epoch as it was
    with pytest.raises(QueueFull):
        await store.enqueue_commit(b"g", 5, fan, 1, 2)
    assert (await store.enqueue_commit(b"g", 5, fan, 1, 1000)).new_epoch == 6
    assert (await store.enqueue_commit(b"h", 0, [], 1, 1000)).seqs == ()


async def _device(store: Store, device_id: bytes = R, username: str = "alice") -> None:
    if not await store.account_exists(username):
        await store.create_account(username, b"pf", 1)
    await store.upsert_device(
        DeviceRecord(
            device_id=device_id,
            username=username,
            hybrid_key=b"k",
            signature=b"s",
            access_key_hash=None,
        ),
        1,
    )


async def test_key_packages_are_consumed_once_under_concurrency(store: Store) -> None:
    await _device(store)
    packages = [b"kp%d" % i for i in range(30)]
    assert await store.add_key_packages(R, packages, b"last", 100) == 30
    results = await asyncio.gather(*(store.consume_key_package(R) for _ in range(50)))
    one_time = [p for p, last in (r for r in results if r is not None) if not last]
    assert sorted(one_time) == sorted(packages)
    assert [r for r in results if r is not None and r[1]] == [(b"last", True)] * 20
    count = await store.key_package_count(R)
    assert (count.count, count.has_last_resort) == (0, True)
    with pytest.raises(LimitExceeded):
        await store.add_key_packages(R, [b"x"] * 3, None, 2)
    assert (await store.key_package_count(R)).count == 0  # nothing stored
    assert await store.consume_key_package(b"z" * 32) is None


async def test_accounts_sessions_devices(store: Store) -> None:
    await store.create_account("alice", b"pf", 1)
    with pytest.raises(AlreadyExists):
        await store.create_account("alice", b"other", 1)
    assert await store.get_password_file("alice") == b"pf"
    assert await store.get_password_file("nobody") is None
    await _device(store, b"1" * 32)
    await _device(store, b"2" * 32)
    assert [d.device_id for d in await store.list_devices("alice")] == [b"1" * 32, b"2" * 32]
    assert await store.get_device(b"3" * 32) is None


@pytest.mark.parametrize(
    "batch",
    [
        [(0, 9)] * 5,  # all fit: one inbox
        [(0, 3), (1, 9), (0, 3), (2, 4), (0, 3), (1, 9)],  # inbox 0 straddles its limit
        [(0, 2), (0, 9), (0, 2), (0, 9)],  # one inbox, limits differing per write
        [(1, 2), (2, 2), (1, 2), (2, 3), (1, 3), (2, 3)],
    ],
)
async def test_a_batch_of_enqueues_matches_the_one_by_one_model(
    store: Store, batch: list[tuple[int, int]]
) -> None:
    """Writes queued together (one group commit) get the seqs and QueueFull
    errors that applying them one at a time in order gives."""
    inboxes = [bytes([65 + i]) * 32 for i in range(3)]
    for inbox in inboxes:  # one message waiting in each inbox
        await store.enqueue(inbox, b"c", b"pre", 1, 100)
    depth = {i: 1 for i in range(3)}
    last = {i: 1 for i in range(3)}
    expected: list[int | str] = []
    for i, limit in batch:
        if depth[i] < limit:
            depth[i] += 1
            last[i] += 1
            expected.append(last[i])
        else:
            expected.append("full")
    results = await asyncio.gather(
        *(store.enqueue(inboxes[i], b"c", b"m%d" % k, 2, lim) for k, (i, lim) in enumerate(batch)),
        return_exceptions=True,
    )
    got = ["full" if isinstance(r, QueueFull) else r for r in results]
    assert got == expected
    for i, inbox in enumerate(inboxes):
        stored = [(e.seq, e.data) for e in await store.fetch(inbox, 0, 100)]
        want = [(1, b"pre")] + [
            (seq, b"m%d" % k)
            for k, ((j, _), seq) in enumerate(zip(batch, expected, strict=True))
            if j == i and seq != "full"
        ]
        assert stored == want


async def test_delete_device_takes_its_keys_sessions_and_inbox(store: Store) -> None:
    one, two = b"1" * 32, b"2" * 32
    await _device(store, one)
    await _device(store, two)
    await _device(store, b"3" * 32, username="bob")
    await store.add_key_packages(two, [b"kp"], b"lr", 10)
    await store.create_session(b"s" * 32, "alice", two, 1, 10**15)
    await store.create_session(b"t" * 32, "alice", one, 1, 10**15)
    assert await store.get_session(b"s" * 32) is not None  # cached
    await store.enqueue(two, b"chan", b"payload", 1, 100)
    # another account's device is not the caller's to delete
    assert not await store.delete_device("alice", b"3" * 32)
    assert await store.get_device(b"3" * 32) is not None
    assert await store.delete_device("alice", two)
    assert await store.get_device(two) is None
    assert [d.device_id for d in await store.list_devices("alice")] == [one]
    assert await store.get_session(b"s" * 32) is None
    assert await store.get_session(b"t" * 32) is not None
    assert await store.consume_key_package(two) is None
    assert await store.fetch(two, 0, 10) == []
    assert not await store.delete_device("alice", two)


async def test_known_devices_in_one_lookup(store: Store) -> None:
    """A fan-out's recipients are checked in one call: cached and uncached
    ids, duplicates, unknown ids, more ids than one query takes, and an
    unlinked device that must no longer count."""
    ids = [i.to_bytes(2, "big") * 16 for i in range(1, 1_203)]
    for d in ids[:1_100]:
        await _device(store, d)
    unknown = [b"\xff" * 32, b"\xfe" * 32]
    # one device read once (cached), the rest not
    assert await store.get_device(ids[0]) is not None
    asked = [*ids, ids[5], *unknown]
    assert await store.known_devices(asked) == set(ids[:1_100])
    assert await store.known_devices([]) == set()
    assert await store.known_devices(unknown) == set()
    assert await store.delete_device("alice", ids[7])
    assert await store.known_devices(ids[:10]) == set(ids[:10]) - {ids[7]}
