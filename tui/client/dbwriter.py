"""Group commit for the client database (the pattern of ``node/store/sqlite.py``).

Every write to the profile's database is a small synchronous function of the
raw ``sqlite3`` connection. Callers queue it with :meth:`GroupWriter.write` and
await its result; one writer task takes everything queued (up to
:data:`MAX_BATCH`), runs it in one ``BEGIN IMMEDIATE`` … ``COMMIT`` (on the
writer's own thread in a single hand-off, or inline when it holds no durable
write; see :class:`GroupWriter`), and resolves each caller's future only
after that commit returned. So:

* a write is reported done only once its transaction committed, and N
  concurrent writes share one commit instead of queueing for N;
* two strengths: a *durable* write (the default) commits with
  ``synchronous=FULL``, so the WAL is fsynced and the write survives a power
  cut; a *crash-safe* write (``durable=False``, used for history appends)
  commits with ``synchronous=NORMAL``: appended to the WAL, it survives the
  process being killed but not an OS crash, and costs no fsync. A batch holding
  any durable write commits FULL, and that fsync of the WAL also makes every
  crash-safe write committed before it durable. The engine relies on this:
  it acks the node only after a durable save, so nothing the node deletes
  exists only in unsynced WAL frames (see docs/CLIENT.md, "Durability");
* writes apply in the order they were queued;
* each write runs in its own savepoint, so a failing write is rolled back
  alone and its error goes to its caller, never to its batch neighbours; if
  the commit itself fails, every write of the batch gets the error.

Reads keep using the profile's aiosqlite connection; in WAL mode a reader
sees only committed transactions, so no read sees half a batch. The writer
owns a separate stdlib connection on a one-thread executor rather than
reaching into aiosqlite's private thread API.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from proto.errors import ProfileError

__all__ = ["MAX_BATCH", "GroupWriter"]

MAX_BATCH = 256
"""Most writes committed in one transaction."""
CHECKPOINT_EVERY = 256
"""Commits between WAL checkpoints (run on the writer thread; see :class:`GroupWriter`)."""

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]
_Queued = tuple[_Op, "asyncio.Future[Any]", bool]


class GroupWriter:
    """Group-committing writer with its own connection (see module docstring).

    Durable batches run on the writer thread (the fsync must not block the
    event loop). A batch of crash-safe writes only (history appends) runs on
    the event loop's thread instead: without an fsync its commit takes tens of
    microseconds, less than the two thread wake-ups a hand-off costs (~1 ms
    of a received message's latency on an idle machine, docs/perf/e2e.md).
    Batches never overlap, so the connection is used by one thread at a time.
    SQLite's automatic WAL checkpoint (which fsyncs) is off on this
    connection; the writer runs a passive checkpoint on its thread every
    :data:`CHECKPOINT_EVERY` commits instead.
    """

    def __init__(self, raw: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        """Use :meth:`open`; ``raw`` is only ever touched on ``executor``'s one thread."""
        self._raw = raw
        self._executor: ThreadPoolExecutor | None = executor
        self._queue: list[_Queued] = []
        self._commits = 0  # since the last checkpoint
        self._full = True  # the connection's synchronous mode (FULL after _connect)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, db_path: Path) -> GroupWriter:
        """Open a writer connection on ``db_path`` (already created, in WAL mode).

        Raises:
            ProfileError: the database cannot be opened.
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qpc-dbwriter")
        loop = asyncio.get_running_loop()
        try:
            raw = await loop.run_in_executor(executor, _connect, db_path)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise ProfileError(f"client database unusable: {exc}") from exc
        return cls(raw, executor)

    async def write(self, op: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``op`` in the next group commit; returns its result once committed.

        ``durable=False``: crash-safe only (no fsync; see the module docstring).

        Raises:
            ProfileError: the writer is closed, or the database failed ``op`` or the commit.
            Exception: whatever ``op`` itself raised (its write is rolled back).
        """
        # Shielded: a cancelled caller does not cancel the batch; its write still
        # commits (or not) together with its neighbours.
        return await asyncio.shield(self.submit(op, durable=durable))

    def submit(
        self, op: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> asyncio.Future[T]:
        """Queue ``op`` now (order is call order); the future resolves once committed.

        ``durable=False``: crash-safe only (no fsync; see the module docstring).

        Raises:
            ProfileError: the writer is closed.
        """
        if self._closed:
            raise ProfileError("profile is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, fut, durable))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return fut

    async def purge_wal(self) -> None:
        """Wait for the queued writes, then copy the WAL into the database and
        truncate it, so overwritten rows (a deleted message) leave no old copy
        in the WAL file. Best effort: a busy reader defers it to the next call."""
        await self.write(lambda conn: None)
        await self._on_thread(_checkpoint_truncate, self._raw)

    async def close(self) -> None:
        """Refuse new writes, wait until the queued ones have committed, close (idempotent)."""
        if self._closed and self._executor is None:
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        executor, self._executor = self._executor, None
        if executor is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(executor, self._raw.close)
            executor.shutdown(wait=False)

    def _on_thread(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        # One hand-off to the writer thread runs the whole batch.
        if self._executor is None:
            raise ProfileError("profile is closed")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                if self._executor is None:
                    raise ProfileError("profile is closed")
                durable = any(d for _op, _fut, d in batch)
                if durable != self._full:  # a pragma flag, no I/O: set only on a change
                    self._raw.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    self._full = durable
                if durable:  # FULL: the commit fsyncs, off the event loop
                    results = await self._on_thread(_run_batch, self._raw, batch)
                else:  # crash-safe only: no fsync, so no hand-off (see class docstring)
                    results = _run_batch(self._raw, batch)
                self._commits += 1
                if self._commits >= CHECKPOINT_EVERY:
                    self._commits = 0
                    await self._on_thread(_checkpoint, self._raw)
            except BaseException as exc:  # connection closed under us, or cancelled
                err = exc if isinstance(exc, Exception) else ProfileError("profile is closed")
                for _op, fut, _durable in batch:
                    if not fut.done():
                        fut.set_exception(err)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_op, fut, _durable), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)


def _connect(db_path: Path) -> sqlite3.Connection:
    """On the writer thread: a connection in manual-transaction mode."""
    raw = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        raw.execute("PRAGMA busy_timeout=5000")
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute("PRAGMA secure_delete=ON")
        raw.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on the writer thread
    except sqlite3.Error:
        raw.close()
        raise
    return raw


def _checkpoint(raw: sqlite3.Connection) -> None:
    """On the writer thread: copy the WAL back into the database (never blocks readers)."""
    with contextlib.suppress(sqlite3.Error):  # busy: the next one catches up
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _checkpoint_truncate(raw: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _run_batch(raw: sqlite3.Connection, batch: list[_Queued]) -> list[tuple[bool, Any]]:
    """``batch`` in one transaction, one savepoint per write (see :class:`GroupWriter`).

    The caller has set the connection's synchronous mode for the batch: FULL
    (fsync at commit) if any write of it is durable, else NORMAL.
    """
    results: list[tuple[bool, Any]] = []
    try:
        raw.execute("BEGIN IMMEDIATE")
        for op, _fut, _durable in batch:
            raw.execute("SAVEPOINT w")
            try:
                value = op(raw)
            except Exception as exc:  # handed to the caller
                raw.execute("ROLLBACK TO w")
                raw.execute("RELEASE w")
                err = (
                    ProfileError(f"client database error: {exc}")
                    if isinstance(exc, sqlite3.Error)
                    else exc
                )
                results.append((False, err))
                continue
            raw.execute("RELEASE w")
            results.append((True, value))
        raw.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            if raw.in_transaction:
                raw.execute("ROLLBACK")
        err = ProfileError(f"client database error: {exc}")
        return [(False, err)] * len(batch)
    return results
