"""Group commit for the client database (the pattern of ``node/store/sqlite.py``).

Every write to the profile's database is a small synchronous function of the
raw ``sqlite3`` connection. Callers queue it with :meth:`GroupWriter.write` and
await its result; one writer task takes everything queued (up to
:data:`MAX_BATCH`), runs it in one ``BEGIN IMMEDIATE`` … ``COMMIT`` on
aiosqlite's thread in a single hand-off, and resolves each caller's future
only after that commit returned. So:

* durability is unchanged: a write is reported done only once its transaction
  committed (``synchronous=FULL`` in WAL mode: the WAL is fsynced), but N
  concurrent writes share one commit and one fsync instead of queueing for N;
* writes apply in the order they were queued;
* each write runs in its own savepoint, so a failing write is rolled back
  alone and its error goes to its caller, never to its batch neighbours; if
  the commit itself fails, every write of the batch gets the error.

Reads keep using the aiosqlite connection directly: a batch runs as one
function on the connection's thread, so no read sees half a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import aiosqlite

from proto.errors import ProfileError

__all__ = ["MAX_BATCH", "GroupWriter"]

MAX_BATCH = 256
"""Most writes committed in one transaction."""

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]


class GroupWriter:
    """Group-committing writer over one aiosqlite connection (see module docstring)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        """Write through ``conn`` (which must not be used for writes elsewhere)."""
        self._conn = conn
        self._queue: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in the next group commit; returns its result once committed.

        Raises:
            ProfileError: the writer is closed, or the database failed ``op`` or the commit.
            Exception: whatever ``op`` itself raised (its write is rolled back).
        """
        # Shielded: a cancelled caller does not cancel the batch; its write still
        # commits (or not) together with its neighbours.
        return await asyncio.shield(self.submit(op))

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``op`` now (order is call order); the future resolves once committed.

        Raises:
            ProfileError: the writer is closed.
        """
        if self._closed:
            raise ProfileError("profile is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return fut

    async def close(self) -> None:
        """Refuse new writes and wait until the queued ones have committed."""
        self._closed = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    def _on_thread(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        # aiosqlite runs queued functions on its connection thread; one hand-off
        # runs the whole batch (instead of one per statement).
        run = cast(Callable[..., Awaitable[Any]], self._conn._execute)
        return run(fn, *args)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                results = await self._on_thread(_run_batch, self._conn._conn, batch)
            except BaseException as exc:  # connection closed under us, or cancelled
                err = exc if isinstance(exc, Exception) else ProfileError("profile is closed")
                for _op, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_op, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)


def _run_batch(
    raw: sqlite3.Connection, batch: list[tuple[_Op, asyncio.Future[Any]]]
) -> list[tuple[bool, Any]]:
    """On aiosqlite's thread: ``batch`` in one transaction, one savepoint per write."""
    results: list[tuple[bool, Any]] = []
    try:
        raw.execute("BEGIN IMMEDIATE")
        for op, _fut in batch:
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
        raw.commit()
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            raw.rollback()
        err = ProfileError(f"client database error: {exc}")
        return [(False, err)] * len(batch)
    return results
