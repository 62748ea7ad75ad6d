"""One batching SQLite writer, used by the node store and the client profile.

A *unit* is a synchronous function of a raw :class:`sqlite3.Connection` that
reads and writes the database and returns a value. Callers hand units to
:meth:`BatchWriter.submit` (returns a future at once) or
:meth:`BatchWriter.write` (awaits the result). The writer owns the one
connection that writes the database and runs *group commit*: everything
queued when it becomes free (up to :attr:`WriterConfig.max_batch` units) runs
in one ``BEGIN IMMEDIATE`` … ``COMMIT``, so N concurrent units share one
transaction and one fsync instead of queueing for N. The contract:

* **Committed before answered.** A unit's future resolves only after the
  transaction holding it committed.
* **Order.** Units apply in the order they were queued.
* **Isolation.** Each unit runs inside its own savepoint (a unit alone in
  its batch: its own transaction, two statements fewer). A unit that raises
  is rolled back alone and its caller gets the error; its batch neighbours
  commit. Should the error abort the whole transaction (SQLite does so for
  some I/O and memory errors) the batch is rolled back and its units retried
  one transaction each, so a unit's effects outside the database must not
  depend on it running once.
* **Errors are typed.** What a unit raises reaches its caller unchanged,
  except driver errors (``sqlite3.Error``, and ``OverflowError`` for an
  integer SQLite cannot store), which become :class:`UnitFailed`. A commit
  that fails gives every unit of the batch :class:`CommitFailed`; a closed
  writer refuses with :class:`WriterClosed`; a full queue makes
  :meth:`~BatchWriter.submit` raise :class:`WriterBusy`. All derive from
  :class:`WriterError`; each user translates them into its own errors at its
  module boundary, by handing :meth:`~BatchWriter.open` an ``errors``
  function that the writer applies before raising or answering (no wrapper
  future per unit).
* **Durability per unit.** A *durable* unit (the default) commits with
  ``synchronous=FULL`` (when so configured): the WAL is fsynced, the write
  survives a power cut. A *crash-safe* unit (``durable=False``) needs only
  ``NORMAL``: it survives the process being killed, not an OS crash, and
  costs no fsync. A batch holding any durable unit commits FULL, and that
  fsync also covers every crash-safe commit before it (same WAL file).
* **Where commits run.** A batch that fsyncs runs on the writer's own
  thread, in one hand-off, so the event loop keeps serving while the disk
  syncs. A batch that does not fsync runs on the event loop
  (:attr:`WriterConfig.inline_without_fsync`): its commit costs tens of
  microseconds, less than the thread wake-ups of a hand-off. Optionally
  (:attr:`WriterConfig.inline_lone_after_idle`, the node) a lone unit on an
  idle writer commits on the loop too, fsync included. Batches never
  overlap, so the connection is used by one thread at a time. SQLite's
  automatic WAL checkpoint (which fsyncs inside a commit) is turned off; the
  writer runs a passive checkpoint on its thread every
  :attr:`WriterConfig.checkpoint_every` commits.
* **Cancellation.** Once queued, a unit runs: cancelling the task awaiting
  :meth:`~BatchWriter.write` does not withdraw it.
* **Back-pressure.** At most :attr:`WriterConfig.max_pending` units wait.
  :meth:`~BatchWriter.write` then waits for room before queueing;
  :meth:`~BatchWriter.submit`, which must not wait, raises :class:`WriterBusy`.
* **Shutdown.** :meth:`~BatchWriter.close` refuses new units, commits every
  queued one, then closes the connection and the thread.

Benchmark: ``bench/writer.py`` (figures in ``docs/perf/writer.md``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar, cast

__all__ = [
    "BatchObserver",
    "BatchWriter",
    "CommitFailed",
    "ManyUnit",
    "UnitFailed",
    "WriterBusy",
    "WriterClosed",
    "WriterConfig",
    "WriterError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]
"""(True, value) or (False, exception), one per unit."""
BatchObserver = Callable[[int, float], None]
"""Called on the event loop with (units, seconds) after each commit."""
ErrorMap = Callable[["WriterError"], Exception]
"""Turns the writer's own errors into the user's (set at :meth:`BatchWriter.open`)."""

_DRIVER_ERRORS = (sqlite3.Error, OverflowError)


class WriterError(Exception):
    """Base of the writer's own errors."""


class WriterClosed(WriterError):
    """The writer is closed (or closing): the unit was not queued, or never ran."""


class WriterBusy(WriterError):
    """:meth:`BatchWriter.submit` found :attr:`WriterConfig.max_pending` units waiting."""


class UnitFailed(WriterError):
    """The database refused this unit; it was rolled back alone (cause chained)."""


class CommitFailed(WriterError):
    """The batch's transaction could not commit; nothing of this unit was stored."""


class OpenFailed(WriterError):
    """The writer's connection could not be opened (cause chained)."""


class ManyUnit(Protocol):
    """A unit type that can run a consecutive run of its instances in fewer
    statements than one by one (the node's ``EnqueueOp``)."""

    def __call__(self, db: sqlite3.Connection) -> Any: ...

    @staticmethod
    def run_many(db: sqlite3.Connection, units: Sequence[Any]) -> list[Outcome]:
        """The outcomes running ``units`` one after another would give."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WriterConfig:
    """How a :class:`BatchWriter` commits (see the module docstring)."""

    max_batch: int = 256
    """Most units in one transaction."""
    max_pending: int = 65_536
    """Most units waiting to run (back-pressure beyond)."""
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """``FULL``: durable units fsync; ``NORMAL``: nothing ever fsyncs at commit."""
    checkpoint_every: int = 256
    """Commits between passive WAL checkpoints (on the writer thread)."""
    inline_without_fsync: bool = True
    """Run batches that do not fsync on the event loop instead of the thread."""
    inline_lone_after_idle: float | None = None
    """Seconds: a *lone* unit (nothing else queued by the end of the event-loop
    pass that queued it) arriving when no commit ended for this long commits
    on the event loop even if it fsyncs; on an idle writer the thread
    wake-ups cost more than the commit and nothing else waits meanwhile.
    Under a steady stream the loop must keep serving while the disk syncs, so
    recent commits send it to the thread. ``None``: off (the client: an fsync
    on the loop is a UI hitch)."""
    run_many: bool = True
    """Give runs of one :class:`ManyUnit` type to its ``run_many``."""
    thread_name: str = "qpc-dbwriter"

    def __post_init__(self) -> None:
        """Reject nonsense at construction."""
        if self.max_batch < 1 or self.max_pending < 1 or self.checkpoint_every < 1:
            raise ValueError("max_batch, max_pending and checkpoint_every must be positive")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")


@dataclasses.dataclass(slots=True)
class _Queued:
    unit: Unit
    future: asyncio.Future[Any]
    durable: bool
    outside: bool = False  # run alone on the thread, outside any transaction


class BatchWriter:
    """The group-committing writer (see the module docstring). Create with :meth:`open`."""

    def __init__(
        self,
        db: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        config: WriterConfig,
        observer: BatchObserver | None,
        errors: ErrorMap | None,
    ) -> None:
        """Use :meth:`open`."""
        self._errors: ErrorMap = errors or _same
        self._db = db
        self._executor = executor
        self._config = config
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        self._queue: collections.deque[_Queued] = collections.deque()
        self._room: collections.deque[asyncio.Future[None]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._mode = ""  # the connection's synchronous pragma as last set
        self._commits = 0  # since the last checkpoint
        self._last_end = -float("inf")  # time.monotonic() when the last commit ended
        self._closing = False
        self._closed = False

    @classmethod
    async def open(
        cls,
        connect: Callable[[], sqlite3.Connection],
        config: WriterConfig | None = None,
        *,
        observer: BatchObserver | None = None,
        errors: ErrorMap | None = None,
    ) -> BatchWriter:
        """Open the writer; ``connect`` runs on the writer thread and returns a
        connection in manual-transaction mode (``isolation_level=None``,
        ``check_same_thread=False``, WAL). ``errors`` maps every
        :class:`WriterError` the writer later raises or answers with (not the
        :class:`OpenFailed` of this call).

        Raises:
            OpenFailed: ``connect`` raised a driver error.
        """
        config = config or WriterConfig()
        executor = ThreadPoolExecutor(1, thread_name_prefix=config.thread_name)
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(executor, _connect, connect)
        except _DRIVER_ERRORS as exc:
            executor.shutdown(wait=False)
            raise OpenFailed(f"cannot open the database: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor, config, observer, errors)

    @property
    def config(self) -> WriterConfig:
        """The configuration the writer was opened with."""
        return self._config

    @property
    def pending(self) -> int:
        """Units queued and not yet taken into a batch."""
        return len(self._queue)

    def submit(
        self, unit: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> asyncio.Future[T]:
        """Queue ``unit`` now (order is call order); the future resolves once committed.

        Raises:
            WriterClosed: the writer is closed or closing.
            WriterBusy: :attr:`WriterConfig.max_pending` units are waiting.
        """
        if self._closing:
            raise self._errors(WriterClosed("writer is closed"))
        if len(self._queue) >= self._config.max_pending:
            raise self._errors(WriterBusy("too many writes waiting"))
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.append(_Queued(unit, future, durable))
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())
        return future

    async def write(self, unit: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Queue ``unit`` (waiting for room if the queue is full) and return its
        result once committed.

        Raises:
            WriterClosed: the writer is closed or closing.
            UnitFailed: the database refused the unit (rolled back alone).
            CommitFailed: the batch's transaction did not commit.
            Exception: whatever the unit itself raised (rolled back alone).
        """
        while len(self._queue) >= self._config.max_pending and not self._closing:
            room: asyncio.Future[None] = self._loop.create_future()
            self._room.append(room)
            await room
        # A cancelled caller cancels only this future: its unit still runs (the
        # writer never filters a batch by its futures), no shield hop needed.
        return await self.submit(unit, durable=durable)

    async def run_on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """After every unit queued before it has committed, run ``fn`` on the
        writer thread outside any transaction (a ``wal_checkpoint(TRUNCATE)``,
        say); units queued after it wait for it.

        Raises:
            WriterClosed: the writer is closed or closing.
            UnitFailed: ``fn`` raised a driver error.
            Exception: whatever else ``fn`` raised.
        """
        # Queued like a unit, so no batch can use the connection meanwhile.
        future = self.submit(fn)
        self._queue[-1].outside = True
        return await future

    async def close(self) -> None:
        """Refuse new units, commit the queued ones, close the connection (idempotent)."""
        if self._closed:
            return
        self._closing = True
        self._wake_room()
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        self._closed = True
        with contextlib.suppress(sqlite3.Error):
            await self._loop.run_in_executor(self._executor, self._db.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ internals

    def _wake_room(self) -> None:
        if not self._room:
            return
        room = max(self._config.max_pending - len(self._queue), 0)
        while self._room and (room > 0 or self._closing):
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    async def _run(self) -> None:
        """The writer task: take a batch, commit it, answer its units; until the queue is empty."""
        while self._queue:
            if self._queue[0].outside:
                await self._run_outside(self._queue.popleft())
                continue
            n, limit = 0, min(len(self._queue), self._config.max_batch)
            while n < limit and not self._queue[n].outside:
                n += 1
            batch = [self._queue.popleft() for _ in range(n)]
            self._wake_room()
            started = time.perf_counter() if self._observer is not None else 0.0
            try:
                mode = "NORMAL"
                if self._config.synchronous == "FULL" and any(q.durable for q in batch):
                    mode = "FULL"
                units = [q.unit for q in batch]
                if self._inline(mode, n):
                    outcomes = self._commit(units, mode)
                else:
                    outcomes = await self._loop.run_in_executor(
                        self._executor, self._commit, units, mode
                    )
            except BaseException as exc:  # a bug, or the task cancelled: nothing may hang
                if isinstance(exc, Exception):
                    log.exception("writer batch failed")
                err = self._errors(
                    CommitFailed("store failure")
                    if isinstance(exc, Exception)
                    else WriterClosed("writer stopped")
                )
                for q in batch:
                    if not q.future.done():
                        q.future.set_exception(err)
                if not isinstance(exc, Exception):
                    raise
                continue
            self._last_end = time.monotonic()
            if self._observer is not None:
                self._observer(len(batch), time.perf_counter() - started)
            for q, (ok, value) in zip(batch, outcomes, strict=True):
                if q.future.done():
                    continue
                if ok:
                    q.future.set_result(value)
                else:
                    q.future.set_exception(
                        self._errors(value) if isinstance(value, WriterError) else value
                    )
            self._commits += 1
            if self._commits >= self._config.checkpoint_every:
                self._commits = 0
                await self._loop.run_in_executor(self._executor, _checkpoint, self._db)

    async def _run_outside(self, q: _Queued) -> None:
        """A :meth:`run_on_thread` function, alone on the thread."""
        self._wake_room()
        try:
            value = await self._loop.run_in_executor(self._executor, q.unit, self._db)
        except Exception as exc:  # handed to the caller
            _ok, err = _unit_error(exc)
            if not q.future.done():
                q.future.set_exception(self._errors(err) if isinstance(err, WriterError) else err)
            return
        if not q.future.done():
            q.future.set_result(value)

    def _inline(self, mode: str, units: int) -> bool:
        """Whether this batch commits on the event loop (see :class:`WriterConfig`)."""
        if mode == "NORMAL" and self._config.inline_without_fsync:
            return True
        idle = self._config.inline_lone_after_idle
        return units == 1 and idle is not None and time.monotonic() - self._last_end >= idle

    def _commit(self, units: list[Unit], mode: str) -> list[Outcome]:
        """Run ``units`` in one transaction (on the writer thread, or on the
        loop while that thread is idle); fall back to one transaction each if
        the transaction itself fails."""
        db = self._db
        try:
            if mode != self._mode:  # a pragma flag, no I/O: set only on a change
                db.execute(f"PRAGMA synchronous={mode}")
                self._mode = mode
            db.execute("BEGIN IMMEDIATE")
            if len(units) == 1:  # alone: its transaction is its savepoint
                try:
                    outcomes = [(True, units[0](db))]
                except Exception as exc:  # handed to the unit's caller
                    db.execute("ROLLBACK")  # raises if the error ended the transaction
                    return [_unit_error(exc)]
            else:
                outcomes = self._run_units(db, units)
            db.execute("COMMIT")
            return outcomes
        except _DRIVER_ERRORS as exc:
            log.error("sqlite transaction failed (%s)", type(exc).__name__)
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            if len(units) == 1:
                return [(False, CommitFailed(f"database error: {type(exc).__name__}"))]
            return [self._commit([u], mode)[0] for u in units]

    def _run_units(self, db: sqlite3.Connection, units: list[Unit]) -> list[Outcome]:
        """Every unit's outcome, each unit (or ``run_many`` run) in its savepoint."""
        outcomes: list[Outcome] = []
        i = 0
        while i < len(units):
            kind = type(units[i])
            run_many = getattr(kind, "run_many", None) if self._config.run_many else None
            j = i + 1
            if run_many is not None:
                while j < len(units) and type(units[j]) is kind:
                    j += 1
            if j - i > 1:
                run = units[i:j]
                db.execute("SAVEPOINT w")
                try:
                    many = cast("list[Outcome]", run_many(db, run))  # type: ignore[misc]
                except Exception:  # roll the run back; its units run one by one
                    db.execute("ROLLBACK TO w")
                    db.execute("RELEASE w")
                    outcomes += [_run_one(db, u) for u in run]
                else:
                    db.execute("RELEASE w")
                    outcomes += many
            else:
                outcomes.append(_run_one(db, units[i]))
            i = j
        return outcomes


def _run_one(db: sqlite3.Connection, unit: Unit) -> Outcome:
    """One unit in its own savepoint; its error rolls back only its writes."""
    db.execute("SAVEPOINT w")
    try:
        value = unit(db)
    except Exception as exc:  # handed to the unit's caller
        db.execute("ROLLBACK TO w")  # raises if the error ended the transaction
        db.execute("RELEASE w")
        return _unit_error(exc)
    db.execute("RELEASE w")
    return (True, value)


def _unit_error(exc: Exception) -> Outcome:
    """A unit's failure as its outcome: driver errors typed, its own as they are."""
    if isinstance(exc, _DRIVER_ERRORS):
        err = UnitFailed(f"database error: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return (False, err)
    return (False, exc)


def _same(err: WriterError) -> Exception:
    return err


def _connect(connect: Callable[[], sqlite3.Connection]) -> sqlite3.Connection:
    """On the writer thread: open, and turn off checkpoints inside commits."""
    db = connect()
    try:
        db.execute("PRAGMA wal_autocheckpoint=0")
    except BaseException:
        db.close()
        raise
    return db


def _checkpoint(db: sqlite3.Connection) -> None:
    """On the writer thread: copy the WAL back into the database (never waits for readers)."""
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:  # busy: the next one catches up
        log.info("wal checkpoint skipped (%s)", type(exc).__name__)
