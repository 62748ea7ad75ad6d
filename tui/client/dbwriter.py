"""The client database's writer: the shared group-commit writer
(:class:`proto.dbwriter.BatchWriter`) on the profile's database.

Every write to the profile's database is a small synchronous function of the
raw ``sqlite3`` connection. Callers queue it with :meth:`GroupWriter.write` (or
:meth:`GroupWriter.submit` to fix its place in the order without waiting) and
get its result only after the transaction holding it committed. The rules
(group commit, order, one savepoint per write, where commits run, shutdown)
are the shared writer's; what this module adds is the profile's connection
settings and the translation of the writer's errors into
:class:`~proto.errors.ProfileError`.

Two strengths: a *durable* write (the default) commits with
``synchronous=FULL``, so the WAL is fsynced and the write survives a power
cut; a *crash-safe* write (``durable=False``, used for history appends)
commits with ``synchronous=NORMAL``: it survives the process being killed but
not an OS crash, and costs no fsync. A batch holding any durable write commits
FULL, and that fsync of the WAL also makes every crash-safe write committed
before it durable. The engine relies on this: it acks the node only after a
durable save, so nothing the node deletes exists only in unsynced WAL frames
(see docs/CLIENT.md, "Durability").

Reads keep using the profile's aiosqlite connection; in WAL mode a reader
sees only committed transactions, so no read sees half a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from proto.dbwriter import BatchWriter, WriterClosed, WriterConfig, WriterError
from proto.errors import ProfileError

__all__ = ["GroupWriter"]

T = TypeVar("T")


def _profile_error(err: WriterError) -> Exception:
    """The shared writer's errors as :class:`ProfileError` (module boundary)."""
    if isinstance(err, WriterClosed):
        mapped = ProfileError("profile is closed")
    else:
        mapped = ProfileError(f"client database error: {err.__cause__ or err}")
    mapped.__cause__ = err
    return mapped


class GroupWriter:
    """The profile's group-committing writer (see module docstring)."""

    def __init__(self, writer: BatchWriter) -> None:
        """Use :meth:`open`."""
        self._writer = writer

    @classmethod
    async def open(cls, db_path: Path, config: WriterConfig | None = None) -> GroupWriter:
        """Open a writer connection on ``db_path`` (already created, in WAL mode).

        Raises:
            ProfileError: the database cannot be opened.
        """
        config = config or WriterConfig(thread_name="qpc-dbwriter")
        try:
            writer = await BatchWriter.open(
                functools.partial(_connect, db_path), config, errors=_profile_error
            )
        except WriterError as exc:
            raise ProfileError(f"client database unusable: {exc.__cause__}") from exc
        return cls(writer)

    @property
    def shared(self) -> BatchWriter:
        """The underlying shared writer."""
        return self._writer

    async def write(self, op: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``op`` in the next group commit; returns its result once committed.

        ``durable=False``: crash-safe only (no fsync; see the module docstring).
        A cancelled caller does not withdraw its write.

        Raises:
            ProfileError: the writer is closed, or the database failed ``op`` or the commit.
            Exception: whatever ``op`` itself raised (its write is rolled back).
        """
        return await self._writer.write(op, durable=durable)

    def submit(
        self, op: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> asyncio.Future[T]:
        """Queue ``op`` now (order is call order); the future resolves once committed.

        Raises:
            ProfileError: the writer is closed or its queue is full (the future
                carries the errors :meth:`write` lists).
        """
        return self._writer.submit(op, durable=durable)

    async def purge_wal(self) -> None:
        """Wait for the queued writes, then copy the WAL into the database and
        truncate it, so overwritten rows (a deleted message) leave no old copy
        in the WAL file. Best effort: a busy reader defers it to the next call."""
        await self._writer.run_on_thread(_checkpoint_truncate)

    async def close(self) -> None:
        """Refuse new writes, wait until the queued ones have committed, close (idempotent)."""
        await self._writer.close()


def _connect(db_path: Path) -> sqlite3.Connection:
    """On the writer thread: a connection in manual-transaction mode."""
    raw = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        raw.execute("PRAGMA busy_timeout=5000")
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute("PRAGMA secure_delete=ON")
    except sqlite3.Error:
        raw.close()
        raise
    return raw


def _checkpoint_truncate(raw: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
