"""The shared group-commit writer on a real SQLite file: batching, isolation,
order, typed errors, durability per unit, where commits run, back-pressure,
shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from proto import dbwriter
from proto.dbwriter import (
    BatchWriter,
    CommitFailed,
    OpenFailed,
    UnitFailed,
    WriterBusy,
    WriterClosed,
    WriterConfig,
)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return db


async def _open(path: Path, **config: Any) -> tuple[BatchWriter, list[int]]:
    batches: list[int] = []
    writer = await BatchWriter.open(
        functools.partial(_connect, path),
        WriterConfig(**config),
        observer=lambda n, _s: batches.append(n),
    )
    return writer, batches


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[BatchWriter]:
    w, _ = await _open(tmp_path / "w.db")
    yield w
    await w.close()


def insert(v: str) -> dbwriter.Unit:
    def unit(db: sqlite3.Connection) -> int:
        cur = db.execute("INSERT INTO t (v) VALUES (?)", (v,))
        assert cur.lastrowid is not None
        return cur.lastrowid

    return unit


def rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT v FROM t ORDER BY id")]


def sync_mode(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA synchronous").fetchone()[0])  # 1 NORMAL, 2 FULL


def thread_id(db: sqlite3.Connection) -> int:
    return threading.get_ident()


async def test_concurrent_units_share_one_commit_in_order(tmp_path: Path) -> None:
    w, batches = await _open(tmp_path / "w.db")
    try:
        futures = [w.submit(insert(f"v{i}")) for i in range(50)]
        ids = await asyncio.gather(*futures)
        assert batches == [50]  # one transaction, one fsync
        assert ids == sorted(ids)
        assert rows(tmp_path / "w.db") == [f"v{i}" for i in range(50)]
    finally:
        await w.close()


async def test_order_holds_across_batches_and_strengths(tmp_path: Path) -> None:
    w, batches = await _open(tmp_path / "w.db", max_batch=7)
    try:
        futures = [w.submit(insert(f"v{i}"), durable=i % 3 == 0) for i in range(40)]
        ids = await asyncio.gather(*futures)
        assert batches == [7, 7, 7, 7, 7, 5]
        assert ids == sorted(ids)
        assert rows(tmp_path / "w.db") == [f"v{i}" for i in range(40)]
    finally:
        await w.close()


async def test_a_failing_unit_is_rolled_back_alone_with_a_typed_error(
    tmp_path: Path,
) -> None:
    w, batches = await _open(tmp_path / "w.db")

    def driver_error(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (v) VALUES ('half of driver_error')")
        db.execute("INSERT INTO nowhere VALUES (1)")

    def domain_error(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (v) VALUES ('half of domain_error')")
        raise KeyError("not here")

    def too_big(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (id, v) VALUES (?, 'x')", (2**63,))

    try:
        futures = [
            w.submit(insert("a")),
            w.submit(driver_error),
            w.submit(insert("b")),
            w.submit(domain_error),
            w.submit(too_big),
            w.submit(insert("c")),
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert batches == [6]
        assert isinstance(results[0], int) and isinstance(results[2], int)
        assert isinstance(results[1], UnitFailed)
        assert isinstance(results[1].__cause__, sqlite3.OperationalError)
        assert isinstance(results[3], KeyError)  # the unit's own error, unchanged
        assert isinstance(results[4], UnitFailed)
        assert isinstance(results[4].__cause__, OverflowError)
        assert rows(tmp_path / "w.db") == ["a", "b", "c"]
    finally:
        await w.close()


async def test_a_unit_that_ends_the_transaction_does_not_take_its_batch_down(
    tmp_path: Path,
) -> None:
    """Some errors end SQLite's transaction; then the batch is retried one
    transaction per unit, and only the culprit fails."""
    w, _ = await _open(tmp_path / "w.db")

    def ends_transaction(db: sqlite3.Connection) -> None:
        db.execute("ROLLBACK")

    try:
        futures = [w.submit(insert("a")), w.submit(ends_transaction), w.submit(insert("b"))]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[0], int) and isinstance(results[2], int)
        assert isinstance(results[1], CommitFailed)
        assert rows(tmp_path / "w.db") == ["a", "b"]
        assert await w.write(insert("c")) > 0  # and the writer goes on
    finally:
        await w.close()


async def test_a_broken_batch_fails_its_units_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, _ = await _open(tmp_path / "w.db")
    real = w._commit

    def crash_once(units: list[Any], mode: str) -> Any:
        monkeypatch.setattr(w, "_commit", real)
        raise MemoryError  # something no batch handler expects

    try:
        monkeypatch.setattr(w, "_commit", crash_once)
        results = await asyncio.gather(
            *(w.write(insert("lost")) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, CommitFailed) for r in results)
        assert await w.write(insert("kept")) > 0
        assert rows(tmp_path / "w.db") == ["kept"]
    finally:
        await w.close()


async def test_durability_per_unit(tmp_path: Path) -> None:
    w, _ = await _open(tmp_path / "w.db")
    try:
        assert await w.write(sync_mode) == 2  # durable: FULL, the WAL is fsynced
        assert await w.write(sync_mode, durable=False) == 1  # crash-safe: NORMAL
        # any durable unit makes its whole batch FULL
        mixed = await asyncio.gather(w.submit(sync_mode, durable=False), w.submit(insert("d")))
        assert mixed[0] == 2
    finally:
        await w.close()
    w, _ = await _open(tmp_path / "n.db", synchronous="NORMAL")
    try:
        assert await w.write(sync_mode) == 1  # a NORMAL writer never fsyncs at commit
    finally:
        await w.close()


async def test_fsyncing_batches_run_on_the_thread_others_on_the_loop(tmp_path: Path) -> None:
    loop_thread = threading.get_ident()
    w, _ = await _open(tmp_path / "w.db")
    try:
        assert await w.write(thread_id) != loop_thread
        assert await w.write(thread_id, durable=False) == loop_thread
    finally:
        await w.close()
    w, _ = await _open(tmp_path / "x.db", inline_without_fsync=False)
    try:
        assert await w.write(thread_id, durable=False) != loop_thread
    finally:
        await w.close()


async def test_checkpoints_run_on_the_thread_every_n_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = dbwriter._checkpoint

    def spy(db: sqlite3.Connection) -> None:
        seen.append(threading.get_ident())
        real(db)

    monkeypatch.setattr(dbwriter, "_checkpoint", spy)
    w, _ = await _open(tmp_path / "w.db", checkpoint_every=3)
    try:
        assert await w.write(lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        for i in range(8):
            await w.write(insert(f"v{i}"), durable=False)  # inline commits
        await w.write(insert("last"))  # after the third checkpoint (the writer is serial)
        assert len(seen) == 3 and loop_thread not in seen
    finally:
        await w.close()


async def test_close_commits_queued_units_then_refuses(tmp_path: Path) -> None:
    w, _ = await _open(tmp_path / "w.db")
    futures = [w.submit(insert(f"v{i}"), durable=i % 2 == 0) for i in range(20)]
    await w.close()
    assert all(f.done() and isinstance(f.result(), int) for f in futures)
    with pytest.raises(WriterClosed):
        w.submit(insert("late"))
    with pytest.raises(WriterClosed):
        await w.write(insert("late"))
    await w.close()  # idempotent
    assert rows(tmp_path / "w.db") == [f"v{i}" for i in range(20)]


async def test_a_cancelled_caller_does_not_withdraw_its_unit(tmp_path: Path) -> None:
    w, _ = await _open(tmp_path / "w.db")
    try:
        task = asyncio.ensure_future(w.write(insert("kept")))
        await asyncio.sleep(0)  # one loop pass: queued
        assert w.pending == 1
        task.cancel()
        await w.write(insert("after"))
        assert rows(tmp_path / "w.db") == ["kept", "after"]
    finally:
        await w.close()


async def test_back_pressure(tmp_path: Path) -> None:
    w, batches = await _open(tmp_path / "w.db", max_pending=4)
    try:
        first = [w.submit(insert(f"v{i}")) for i in range(4)]
        with pytest.raises(WriterBusy):
            w.submit(insert("refused"))
        waiting = asyncio.ensure_future(w.write(insert("waited")))
        await asyncio.gather(*first)
        await waiting
        assert batches[0] == 4
        assert rows(tmp_path / "w.db") == ["v0", "v1", "v2", "v3", "waited"]
    finally:
        await w.close()


async def test_a_writer_waiting_for_room_is_refused_at_close(tmp_path: Path) -> None:
    w, _ = await _open(tmp_path / "w.db", max_pending=1)
    started, release = threading.Event(), threading.Event()

    def busy(db: sqlite3.Connection) -> None:  # holds the writer thread
        started.set()
        release.wait()

    running = w.submit(busy)
    await asyncio.get_running_loop().run_in_executor(None, started.wait)
    queued = w.submit(insert("queued"))  # the queue is full now
    waiting = asyncio.ensure_future(w.write(insert("waiting")))
    await asyncio.sleep(0)  # one loop pass: it waits for room
    closing = asyncio.ensure_future(w.close())
    await asyncio.sleep(0)
    release.set()
    await closing
    assert running.result() is None and isinstance(queued.result(), int)
    with pytest.raises(WriterClosed):
        await waiting
    assert rows(tmp_path / "w.db") == ["queued"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Many:
    v: str
    calls: list[int]
    fail_many: bool = False

    def __call__(self, db: sqlite3.Connection) -> int:
        return insert(self.v)(db)  # type: ignore[no-any-return]

    @staticmethod
    def run_many(db: sqlite3.Connection, units: Sequence[_Many]) -> list[tuple[bool, Any]]:
        units[0].calls.append(len(units))
        out: list[tuple[bool, Any]] = [(True, u(db)) for u in units]
        if any(u.fail_many for u in units):
            raise RuntimeError("half done")
        return out


async def test_runs_of_a_many_unit_type_share_statements(tmp_path: Path) -> None:
    w, _ = await _open(tmp_path / "w.db")
    calls: list[int] = []
    try:
        units = [_Many(f"m{i}", calls) for i in range(5)]
        futures = [w.submit(u) for u in units[:3]]
        futures.append(w.submit(insert("plain")))
        futures += [w.submit(u) for u in units[3:]]
        ids = await asyncio.gather(*futures)
        assert calls == [3, 2] and ids == sorted(ids)
        # a run_many that fails is rolled back and its units run one by one
        failing = [_Many(f"f{i}", calls, fail_many=i == 1) for i in range(3)]
        assert len(await asyncio.gather(*(w.submit(u) for u in failing))) == 3
        assert rows(tmp_path / "w.db") == [
            "m0", "m1", "m2", "plain", "m3", "m4", "f0", "f1", "f2",
        ]  # fmt: skip
    finally:
        await w.close()


async def test_open_failure_is_typed(tmp_path: Path) -> None:
    with pytest.raises(OpenFailed):
        await BatchWriter.open(functools.partial(_connect, tmp_path / "missing" / "w.db"))


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        WriterConfig(max_batch=0)
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        WriterConfig(synchronous="OFF")  # type: ignore[arg-type]


class _Mine(Exception):
    pass


async def test_errors_are_mapped_by_the_users_function(tmp_path: Path) -> None:
    w = await BatchWriter.open(
        functools.partial(_connect, tmp_path / "w.db"),
        errors=lambda err: _Mine(type(err).__name__),
    )
    bad = w.submit(lambda db: db.execute("INSERT INTO nowhere VALUES (1)"))
    good = w.submit(insert("a"))
    with pytest.raises(_Mine, match="UnitFailed"):
        await bad
    assert await good > 0
    with pytest.raises(KeyError):  # a unit's own error is not the writer's
        await w.write(lambda db: dict[str, int]()["x"])
    await w.close()
    with pytest.raises(_Mine, match="WriterClosed"):
        w.submit(insert("late"))


async def test_a_lone_unit_on_an_idle_writer_commits_on_the_loop(tmp_path: Path) -> None:
    """``inline_lone_after_idle`` (the node's setting): a lone durable unit on
    an idle writer commits on the loop; units queued together, or arriving
    while commits are recent, go to the thread."""
    loop_thread = threading.get_ident()
    w, batches = await _open(tmp_path / "w.db", inline_lone_after_idle=60.0)
    try:
        assert await w.write(thread_id) == loop_thread  # never committed: idle
        assert await w.write(thread_id) != loop_thread  # a commit ended < 60 s ago
        w._last_end = -float("inf")  # as if 60 s had passed, without waiting for it
        together = await asyncio.gather(*(w.submit(thread_id) for _ in range(5)))
        assert loop_thread not in together and batches[-1] == 5
    finally:
        await w.close()


async def test_a_lone_failing_unit_is_rolled_back(writer: BatchWriter, tmp_path: Path) -> None:
    def half(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t (v) VALUES ('half')")
        raise KeyError("no")

    with pytest.raises(KeyError):
        await writer.write(half)
    with pytest.raises(UnitFailed):
        await writer.write(lambda db: db.execute("INSERT INTO nowhere VALUES (1)"))
    assert await writer.write(insert("after")) > 0
    assert rows(tmp_path / "w.db") == ["after"]


async def test_run_on_thread_runs_alone_between_batches(tmp_path: Path) -> None:
    loop_thread = threading.get_ident()
    w, batches = await _open(tmp_path / "w.db")
    try:
        before = [w.submit(insert(f"b{i}")) for i in range(3)]  # on the thread

        def outside(db: sqlite3.Connection) -> tuple[bool, int, int]:
            n = db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
            return db.in_transaction, n, threading.get_ident()

        special = w.run_on_thread(outside)
        task = asyncio.ensure_future(special)
        await asyncio.sleep(0)  # queued behind the three
        after = [w.submit(insert(f"a{i}"), durable=False) for i in range(2)]
        in_tx, seen, thread = await task
        await asyncio.gather(*before, *after)
        assert (in_tx, seen) == (False, 3) and thread != loop_thread
        assert batches == [3, 2]
        with pytest.raises(UnitFailed):
            await w.run_on_thread(lambda db: db.execute("SELECT * FROM nowhere"))
    finally:
        await w.close()
