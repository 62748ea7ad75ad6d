"""PostgreSQL store only: several stores (node processes) on one database,
LISTEN/NOTIFY wake-ups and cache invalidation, migrations, failures."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

import migrations
from node.store import DeviceRecord, FanoutItem
from node.store.postgres import PostgresStore
from proto.errors import StaleEpoch, Unavailable
from tests.node.backends import fresh_postgres

pytestmark = pytest.mark.postgres

A = b"a" * 32
B = b"b" * 32


class Woken:
    """Collects wake-ups and resyncs of one store, with an event per arrival."""

    def __init__(self) -> None:
        self.inboxes: list[bytes] = []
        self.resyncs = 0
        self.event = asyncio.Event()

    def wakeup(self, recipient: bytes) -> None:
        self.inboxes.append(recipient)
        self.event.set()

    def resync(self) -> None:
        self.resyncs += 1
        self.event.set()

    async def until(self, predicate: object) -> None:
        async with asyncio.timeout(10):
            while not predicate():  # type: ignore[operator]
                self.event.clear()
                await self.event.wait()


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with fresh_postgres() as d:
        yield d


async def test_migrations_apply_once_even_when_processes_start_together(dsn: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(dsn, pool_size=1) for _ in range(4)))
    for s in stores:
        await s.close()
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        tables = {
            r[0]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        }
    finally:
        await conn.close()
    assert [(r[0], r[1]) for r in rows] == [
        (m.version, m.name) for m in migrations.load("postgres")
    ]
    assert {
        "accounts",
        "opaque_records",
        "sessions",
        "devices",
        "key_packages",
        "last_resort_key_packages",
        "messages",
        "channels",
        "delivery_seq_counters",
        "node_secrets",
    } <= tables


async def test_two_processes_share_seqs_commits_and_key_packages(dsn: str) -> None:
    one, two = await PostgresStore.open(dsn), await PostgresStore.open(dsn)
    try:
        seqs = await asyncio.gather(
            *(s.enqueue(A, b"c", b"m%d" % i, 1, 1000) for i in range(60) for s in (one, two))
        )
        assert sorted(seqs) == list(range(1, 121))
        assert [e.seq for e in await two.fetch(A, 0, 500)] == list(range(1, 121))
        fan = [FanoutItem(recipient=A, payload=b"c"), FanoutItem(recipient=B, payload=b"c")]
        results = await asyncio.gather(
            *(s.enqueue_commit(b"g", 0, fan, 1, 1000) for s in (one, two, one, two)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert sum(isinstance(r, StaleEpoch) for r in results) == 3
        await one.create_account("alice", b"pf", 1)
        await one.upsert_device(
            DeviceRecord(
                device_id=A, username="alice", hybrid_key=b"k", signature=b"s", access_key_hash=None
            ),
            1,
        )
        await one.add_key_packages(A, [b"kp%d" % i for i in range(20)], None, 100)
        got = await asyncio.gather(
            *(s.consume_key_package(A) for _ in range(15) for s in (one, two))
        )
        handed = [r[0] for r in got if r is not None]
        assert sorted(handed) == sorted(b"kp%d" % i for i in range(20))  # each once
        assert got.count(None) == 10
    finally:
        await one.close()
        await two.close()


async def test_a_write_through_one_process_wakes_the_other(dsn: str) -> None:
    w1, w2 = Woken(), Woken()
    one = await PostgresStore.open(dsn, wakeup=w1.wakeup, resync=w1.resync)
    two = await PostgresStore.open(dsn, wakeup=w2.wakeup, resync=w2.resync)
    try:
        await one.enqueue(A, b"c", b"m", 1, 1000)
        await w2.until(lambda: A in w2.inboxes)
        fan = [FanoutItem(recipient=i.to_bytes(2) * 16, payload=b"x") for i in range(300)]
        await one.enqueue_commit(b"g", 0, fan, 1, 1000)  # > 8,000 bytes of ids: several NOTIFYs
        await w2.until(lambda: len(set(w2.inboxes)) == 301)
        assert w1.inboxes == []  # a store skips its own notifications
    finally:
        await one.close()
        await two.close()


async def test_logout_and_rekey_in_one_process_reach_the_others_cache(dsn: str) -> None:
    one, two = await PostgresStore.open(dsn), await PostgresStore.open(dsn)
    try:
        await one.create_account("alice", b"pf", 1)
        await one.create_session(b"h" * 32, "alice", A, 1, 10**15)
        assert await two.get_session(b"h" * 32) is not None  # now cached in two
        dev = DeviceRecord(
            device_id=A, username="alice", hybrid_key=b"k1", signature=b"s", access_key_hash=None
        )
        await one.upsert_device(dev, 1)
        assert await two.get_device(A) == dev  # cached in two
        await one.delete_session(b"h" * 32)
        await one.upsert_device(
            DeviceRecord(
                device_id=A,
                username="alice",
                hybrid_key=b"k2",
                signature=b"s",
                access_key_hash=None,
            ),
            2,
        )
        async with asyncio.timeout(10):
            while await two.get_session(b"h" * 32) is not None:
                await asyncio.sleep(0.005)
            while (d := await two.get_device(A)) is None or d.hybrid_key != b"k2":
                await asyncio.sleep(0.005)
    finally:
        await one.close()
        await two.close()


async def test_a_lost_listener_resyncs_bypasses_caches_and_comes_back(dsn: str) -> None:
    woken = Woken()
    store = await PostgresStore.open(dsn, wakeup=woken.wakeup, resync=woken.resync)
    other = await PostgresStore.open(dsn)
    admin = await asyncpg.connect(dsn)
    try:
        await store.create_account("alice", b"pf", 1)
        await store.create_session(b"h" * 32, "alice", A, 1, 10**15)
        assert await store.get_session(b"h" * 32) is not None
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
        await woken.until(lambda: woken.resyncs >= 1)
        # meanwhile a logout elsewhere is not missed: no cache while deaf
        await other.delete_session(b"h" * 32)
        assert await store.get_session(b"h" * 32) is None
        await woken.until(lambda: store.listening and woken.resyncs >= 2)
        await other.enqueue(B, b"c", b"m", 1, 1000)
        await woken.until(lambda: B in woken.inboxes)
    finally:
        await admin.close()
        await store.close()
        await other.close()


async def test_database_failures_are_unavailable_and_the_pool_recovers(dsn: str) -> None:
    store = await PostgresStore.open(dsn, pool_size=2)
    admin = await asyncpg.connect(dsn)
    try:
        assert await store.enqueue(A, b"c", b"m", 1, 1000) == 1
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
            " AND query NOT LIKE 'LISTEN%'"
        )
        outcomes = await asyncio.gather(
            *(store.fetch(A, 0, 10) for _ in range(4)), return_exceptions=True
        )
        assert all(isinstance(o, Unavailable | list) for o in outcomes), outcomes
        async with asyncio.timeout(15):  # replaced connections serve again
            while True:
                try:
                    assert await store.enqueue(A, b"c", b"m", 1, 1000) >= 2
                    break
                except Unavailable:
                    await asyncio.sleep(0.05)
    finally:
        await admin.close()
        await store.close()
    with pytest.raises(Unavailable):
        await PostgresStore.open(
            "postgresql://nobody@/nowhere?host=/nonexistent", connect_timeout=2
        )


async def test_channel_logs_across_processes(dsn: str) -> None:
    """Commits racing through two stores: one per epoch, the rest StaleEpoch,
    nothing half stored; a post wakes the other process by inbox id; acks
    racing for a payload's last references drop it."""
    w2 = Woken()
    one = await PostgresStore.open(dsn)
    two = await PostgresStore.open(dsn, wakeup=w2.wakeup, resync=w2.resync)
    members = [i.to_bytes(2) * 16 for i in range(40)]
    k1 = hashlib.sha256(b"k1").digest()
    try:
        results = await asyncio.gather(
            *(
                s.commit_channel(b"g", 0, None, dev, b"c", members, b"", [], 1, 1000)
                for s, dev in ((one, A), (two, B), (one, B), (two, A))
            ),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        assert len(won) == 1 and sum(isinstance(r, StaleEpoch) for r in results) == 3
        committer = A if results.index(won[0]) in (0, 3) else B
        await two.set_channel_key(b"g", 1, committer, k1)
        w2.inboxes.clear()
        assert await one.post_channel(b"g", k1, members, b"p", 2, 1000) == (2,) * 40
        await w2.until(lambda: set(w2.inboxes) == set(members))
        # a post racing the next commit lands before it or is refused: never after
        outcomes = await asyncio.gather(
            two.post_channel(b"g", k1, members, b"late", 3, 1000),
            one.commit_channel(b"g", 1, k1, A, b"c2", members, b"", [], 3, 1000),
            return_exceptions=True,
        )
        assert not isinstance(outcomes[1], BaseException)
        for m in members:
            data = [e.data for e in await one.fetch(m, 0, 10)]
            assert data in ([b"c", b"p", b"late", b"c2"], [b"c", b"p", b"c2"])
        await asyncio.gather(*(s.ack(m, 10) for m in members for s in (one, two)))
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM channel_payloads") == 0
            assert await conn.fetchval("SELECT count(*) FROM messages") == 0
        finally:
            await conn.close()
    finally:
        await one.close()
        await two.close()
