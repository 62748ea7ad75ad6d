"""SQLite backend of the :class:`~node.store.base.Store` protocol (aiosqlite).

Layout: one *writer* connection owned by a single writer task, and one
*reader* connection for queries. WAL mode lets the reader see the last
committed state while the writer works.

Group commit: every write is queued to the writer task, which runs all queued
writes (up to ``write_batch``) inside one ``BEGIN IMMEDIATE`` transaction and
resolves their futures only after ``COMMIT`` returned. One fsync is shared by
the whole batch, so durability costs little per call under load, and because
writes are serialised, read-check-write sequences (queue depth, epoch check,
KeyPackage consumption) are atomic without extra locking.

Durability: ``synchronous=FULL`` in WAL mode fsyncs the WAL on every commit, so
a returned seq survives a process kill *and* an OS crash or power loss.
(``NORMAL`` would survive only a process kill.) With group commit the fsync is
amortised over the batch, so we keep the stronger setting.

A write op must do all its checks before its first write, so raising a domain
error (``QueueFull``, ``StaleEpoch``…) never leaves half an op in the batch.
If SQLite itself fails, the batch is rolled back and its ops are retried one
transaction each, so one bad op cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

import migrations
from node.store.base import (
    CommitResult,
    DeviceRecord,
    FanoutItem,
    KeyPackageCount,
    SessionRecord,
    StoredEnvelope,
)
from proto.errors import AlreadyExists, LimitExceeded, QpcError, QueueFull, StaleEpoch, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Observer = Callable[[str, float], None]
_Op = Callable[[aiosqlite.Connection], Awaitable[Any]]


@dataclasses.dataclass(slots=True)
class _Write:
    name: str
    op: _Op
    future: asyncio.Future[Any]


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """Translate driver exceptions into :class:`Unavailable` at the module boundary."""
    try:
        yield
    except (sqlite3.Error, ValueError, OverflowError) as exc:
        log.error("sqlite failure: %s", type(exc).__name__)
        raise Unavailable("store failure") from exc


async def _apply_migrations(db: aiosqlite.Connection) -> list[str]:
    """Apply pending migrations in order, each in its own transaction with its ledger row."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
    )
    async with db.execute("SELECT version FROM schema_migrations") as cur:
        done = {int(row[0]) for row in await cur.fetchall()}
    applied = []
    for m in migrations.load("sqlite"):
        if m.version in done:
            continue
        script = (
            "BEGIN IMMEDIATE;\n"
            + m.sql
            + f"\nINSERT INTO schema_migrations (version, name, applied_ms) "
            f"VALUES ({m.version}, '{m.name}', {int(time.time() * 1000)});\nCOMMIT;\n"
        )
        try:
            await db.executescript(script)
        except sqlite3.Error:
            if db.in_transaction:
                await db.rollback()
            raise
        applied.append(m.name)
        log.info("applied migration %s", m.name)
    return applied


class SqliteStore:
    """The SQLite store. Create with :meth:`open`; call :meth:`close` when done."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        write_batch: int,
        observer: Observer | None,
    ) -> None:
        self._w = writer
        self._r = reader
        self._batch = write_batch
        self._observer = observer
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._writer_loop())

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        write_batch: int = 256,
        synchronous: str = "FULL",
        observer: Observer | None = None,
    ) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and apply migrations.

        Args:
            path: database file.
            write_batch: most writes per group-commit transaction.
            synchronous: ``FULL`` (default, survives power loss) or ``NORMAL``.
            observer: called with (operation, seconds) after each store call.
        Raises:
            Unavailable: the database cannot be opened or migrated.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        with _map_errors():
            writer = await aiosqlite.connect(path, isolation_level=None)
            try:
                for pragma in (
                    "PRAGMA journal_mode=WAL",
                    f"PRAGMA synchronous={synchronous}",
                    "PRAGMA foreign_keys=ON",
                    "PRAGMA busy_timeout=5000",
                ):
                    await writer.execute(pragma)
                await _apply_migrations(writer)
                reader = await aiosqlite.connect(path, isolation_level=None)
                await reader.execute("PRAGMA busy_timeout=5000")
                await reader.execute("PRAGMA query_only=ON")
            except BaseException:
                await writer.close()
                raise
        return cls(writer, reader, write_batch=write_batch, observer=observer)

    @property
    def backend(self) -> str:
        """Always ``"sqlite"``."""
        return "sqlite"

    async def close(self) -> None:
        """Let queued writes commit, stop the writer task and close both connections."""
        if self._closed:
            return
        self._closed = True
        await self._queue.put(None)
        await self._task
        with _map_errors():
            await self._r.close()
            await self._w.close()

    # ------------------------------------------------------------------ plumbing

    def _observe(self, name: str, started: float) -> None:
        if self._observer is not None:
            self._observer(name, time.perf_counter() - started)

    async def _write(self, name: str, op: _Op) -> Any:
        if self._closed:
            raise Unavailable("store is closed")
        started = time.perf_counter()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(name, op, future))
        try:
            return await future
        finally:
            self._observe(name, started)

    async def _read(self, name: str, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        started = time.perf_counter()
        try:
            with _map_errors():
                return list(await self._r.execute_fetchall(sql, params))
        finally:
            self._observe(name, started)

    async def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                await self._run_batch(batch)
            except Exception:  # keep the writer alive whatever happens
                log.exception("writer batch failed")
                with contextlib.suppress(Exception):
                    if self._w.in_transaction:
                        await self._w.execute("ROLLBACK")
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(Unavailable("store failure"))

    async def _run_batch(self, batch: list[_Write]) -> None:
        live = [w for w in batch if not w.future.done()]
        if not live:
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            await self._w.execute_fetchall("BEGIN IMMEDIATE")
            for w in live:
                try:
                    outcomes.append((True, await w.op(self._w)))
                except QpcError as exc:
                    outcomes.append((False, exc))
            await self._w.execute_fetchall("COMMIT")
        except Exception as exc:  # sqlite3.Error, or a bad value (OverflowError...)
            log.error("sqlite write failed (%s); retrying ops singly", type(exc).__name__)
            with contextlib.suppress(sqlite3.Error):
                if self._w.in_transaction:
                    await self._w.execute("ROLLBACK")
            if len(live) > 1:
                for w in live:
                    await self._run_batch([w])
                return
            if not live[0].future.done():
                live[0].future.set_exception(Unavailable("store failure"))
            return
        for w, (ok, value) in zip(live, outcomes, strict=True):
            if w.future.done():
                continue
            if ok:
                w.future.set_result(value)
            else:
                w.future.set_exception(value)

    # ------------------------------------------------------------------ secrets

    async def get_or_create_secret(self, name: str, value: bytes) -> bytes:
        """Return the secret ``name``, storing ``value`` first if there is none."""

        async def op(db: aiosqlite.Connection) -> bytes:
            await db.execute(
                "INSERT INTO node_secrets (name, value, created_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, value, int(time.time() * 1000)),
            )
            async with db.execute("SELECT value FROM node_secrets WHERE name = ?", (name,)) as c:
                row = await c.fetchone()
            assert row is not None
            return bytes(row[0])

        result: bytes = await self._write("get_or_create_secret", op)
        return result

    # ------------------------------------------------------------------ accounts

    async def account_exists(self, username: str) -> bool:
        """Whether ``username`` is registered."""
        rows = await self._read(
            "account_exists", "SELECT 1 FROM accounts WHERE username = ?", (username,)
        )
        return bool(rows)

    async def create_account(self, username: str, password_file: bytes, now_ms: int) -> None:
        """Create an account; :class:`AlreadyExists` if the name is taken."""

        async def op(db: aiosqlite.Connection) -> None:
            async with db.execute("SELECT 1 FROM accounts WHERE username = ?", (username,)) as c:
                if await c.fetchone() is not None:
                    raise AlreadyExists("username is taken")
            await db.execute(
                "INSERT INTO accounts (username, created_ms) VALUES (?, ?)", (username, now_ms)
            )
            await db.execute(
                "INSERT INTO opaque_records (username, password_file) VALUES (?, ?)",
                (username, password_file),
            )

        await self._write("create_account", op)

    async def get_password_file(self, username: str) -> bytes | None:
        """The account's OPAQUE password file, or None."""
        rows = await self._read(
            "get_password_file",
            "SELECT password_file FROM opaque_records WHERE username = ?",
            (username,),
        )
        return bytes(rows[0][0]) if rows else None

    async def create_session(
        self, token_hash: bytes, username: str, device_id: bytes, now_ms: int, expires_ms: int
    ) -> None:
        """Store a new session under SHA-256 of its token."""

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO sessions (token_hash, username, device_id, created_ms, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash, username, device_id, now_ms, expires_ms),
            )

        await self._write("create_session", op)

    async def get_session(self, token_hash: bytes) -> SessionRecord | None:
        """A session by token hash, expired or not."""
        rows = await self._read(
            "get_session",
            "SELECT username, device_id, expires_ms FROM sessions WHERE token_hash = ?",
            (token_hash,),
        )
        if not rows:
            return None
        username, device_id, expires_ms = rows[0]
        return SessionRecord(username=username, device_id=bytes(device_id), expires_ms=expires_ms)

    async def delete_session(self, token_hash: bytes) -> None:
        """Remove a session; missing ones are ignored."""

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

        await self._write("delete_session", op)

    async def purge_sessions(self, now_ms: int) -> int:
        """Delete expired sessions."""

        async def op(db: aiosqlite.Connection) -> int:
            cur = await db.execute("DELETE FROM sessions WHERE expires_ms <= ?", (now_ms,))
            return cur.rowcount

        result: int = await self._write("purge_sessions", op)
        return result

    # ------------------------------------------------------------------ devices

    async def upsert_device(self, device: DeviceRecord, now_ms: int) -> None:
        """Register or update a device; :class:`AlreadyExists` if another account holds it."""

        async def op(db: aiosqlite.Connection) -> None:
            async with db.execute(
                "SELECT username FROM devices WHERE device_id = ?", (device.device_id,)
            ) as c:
                row = await c.fetchone()
            if row is not None and row[0] != device.username:
                raise AlreadyExists("device id is registered to another account")
            await db.execute(
                "INSERT INTO devices (device_id, username, hybrid_key, signature,"
                " access_key_hash, created_ms) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET hybrid_key = excluded.hybrid_key,"
                " signature = excluded.signature, access_key_hash = excluded.access_key_hash",
                (
                    device.device_id,
                    device.username,
                    device.hybrid_key,
                    device.signature,
                    device.access_key_hash,
                    now_ms,
                ),
            )

        await self._write("upsert_device", op)

    @staticmethod
    def _device(row: sqlite3.Row) -> DeviceRecord:
        device_id, username, hybrid_key, signature, access_key_hash = row
        return DeviceRecord(
            device_id=bytes(device_id),
            username=username,
            hybrid_key=bytes(hybrid_key),
            signature=bytes(signature),
            access_key_hash=None if access_key_hash is None else bytes(access_key_hash),
        )

    async def get_device(self, device_id: bytes) -> DeviceRecord | None:
        """A device by id."""
        rows = await self._read(
            "get_device",
            "SELECT device_id, username, hybrid_key, signature, access_key_hash"
            " FROM devices WHERE device_id = ?",
            (device_id,),
        )
        return self._device(rows[0]) if rows else None

    async def list_devices(self, username: str) -> list[DeviceRecord]:
        """An account's devices, oldest first."""
        rows = await self._read(
            "list_devices",
            "SELECT device_id, username, hybrid_key, signature, access_key_hash"
            " FROM devices WHERE username = ? ORDER BY created_ms, device_id",
            (username,),
        )
        return [self._device(r) for r in rows]

    async def add_key_packages(
        self, device_id: bytes, packages: Sequence[bytes], last_resort: bytes | None, max_stock: int
    ) -> int:
        """Add one-time KeyPackages (and the last-resort one); return the new stock."""
        packages = list(packages)

        async def op(db: aiosqlite.Connection) -> int:
            async with db.execute(
                "SELECT COUNT(*) FROM key_packages WHERE device_id = ?", (device_id,)
            ) as c:
                row = await c.fetchone()
            stock = int(row[0]) if row else 0
            if stock + len(packages) > max_stock:
                raise LimitExceeded(f"KeyPackage stock would exceed {max_stock}")
            if packages:
                await db.executemany(
                    "INSERT INTO key_packages (device_id, package) VALUES (?, ?)",
                    [(device_id, p) for p in packages],
                )
            if last_resort is not None:
                await db.execute(
                    "INSERT INTO last_resort_key_packages (device_id, package) VALUES (?, ?)"
                    " ON CONFLICT (device_id) DO UPDATE SET package = excluded.package",
                    (device_id, last_resort),
                )
            return stock + len(packages)

        result: int = await self._write("add_key_packages", op)
        return result

    async def consume_key_package(self, device_id: bytes) -> tuple[bytes, bool] | None:
        """Hand out (and delete) the oldest one-time package, else the last-resort one."""

        async def op(db: aiosqlite.Connection) -> tuple[bytes, bool] | None:
            async with db.execute(
                "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages"
                " WHERE device_id = ? ORDER BY id LIMIT 1) RETURNING package",
                (device_id,),
            ) as c:
                row = await c.fetchone()
            if row is not None:
                return bytes(row[0]), False
            async with db.execute(
                "SELECT package FROM last_resort_key_packages WHERE device_id = ?", (device_id,)
            ) as c:
                row = await c.fetchone()
            return None if row is None else (bytes(row[0]), True)

        result: tuple[bytes, bool] | None = await self._write("consume_key_package", op)
        return result

    async def key_package_count(self, device_id: bytes) -> KeyPackageCount:
        """The device's KeyPackage stock."""
        rows = await self._read(
            "key_package_count",
            "SELECT (SELECT COUNT(*) FROM key_packages WHERE device_id = ?),"
            " EXISTS (SELECT 1 FROM last_resort_key_packages WHERE device_id = ?)",
            (device_id, device_id),
        )
        return KeyPackageCount(count=int(rows[0][0]), has_last_resort=bool(rows[0][1]))

    # ------------------------------------------------------------------ delivery

    @staticmethod
    async def _depth(db: aiosqlite.Connection, recipient: bytes) -> int:
        rows = await db.execute_fetchall(
            "SELECT last_seq + 1 - COALESCE((SELECT MIN(seq) FROM messages WHERE recipient = ?),"
            " last_seq + 1) FROM delivery_seq_counters WHERE recipient = ?",
            (recipient, recipient),
        )
        found = list(rows)
        return int(found[0][0]) if found else 0

    @staticmethod
    async def _append(
        db: aiosqlite.Connection,
        recipient: bytes,
        channel_id: bytes,
        payload: bytes,
        now_ms: int,
        max_depth: int,
    ) -> int | None:
        """Take the next seq and store the message; None if the inbox is full.

        The depth check rides on the counter UPSERT (its ``WHERE`` leaves the
        counter alone and returns no row when the inbox is full) to save a
        round trip to the database thread. Depth is ``last_seq - MIN(seq) + 1``
        (one index probe): seqs are handed out contiguously and only removed
        oldest-first (ack, retention), so the waiting seqs form one range. A
        missing counter row means an empty inbox: migration 002 creates
        counters for all existing messages.
        """
        rows = list(
            await db.execute_fetchall(
                "INSERT INTO delivery_seq_counters (recipient, last_seq) VALUES (?, 1)"
                " ON CONFLICT (recipient) DO UPDATE SET last_seq = last_seq + 1"
                " WHERE last_seq + 1 - COALESCE((SELECT MIN(seq) FROM messages"
                " WHERE recipient = excluded.recipient), last_seq + 1) < ?"
                " RETURNING last_seq",
                (recipient, max_depth),
            )
        )
        if not rows:
            return None
        seq = int(rows[0][0])
        await db.execute_fetchall(
            "INSERT INTO messages (recipient, channel_id, payload, created_ms, seq)"
            " VALUES (?, ?, ?, ?, ?)",
            (recipient, channel_id, payload, now_ms, seq),
        )
        return seq

    async def enqueue(
        self, recipient: bytes, channel_id: bytes, payload: bytes, now_ms: int, max_depth: int
    ) -> int:
        """Append to an inbox and return the seq after commit; :class:`QueueFull` at the limit."""

        async def op(db: aiosqlite.Connection) -> int:
            seq = await self._append(db, recipient, channel_id, payload, now_ms, max_depth)
            if seq is None:
                raise QueueFull("recipient inbox is full")
            return seq

        result: int = await self._write("enqueue", op)
        return result

    async def enqueue_commit(
        self,
        channel_id: bytes,
        epoch: int,
        fanout: Sequence[FanoutItem],
        now_ms: int,
        max_depth: int,
    ) -> CommitResult:
        """Epoch check + bump + fan-out, all or nothing."""
        fanout = list(fanout)

        async def op(db: aiosqlite.Connection) -> CommitResult:
            rows = list(
                await db.execute_fetchall(
                    "SELECT epoch FROM channels WHERE channel_id = ?", (channel_id,)
                )
            )
            if rows and int(rows[0][0]) != epoch:
                raise StaleEpoch(f"channel is at epoch {int(rows[0][0])}")
            extra: dict[bytes, int] = {}
            for item in fanout:
                extra[item.recipient] = extra.get(item.recipient, 0) + 1
            for recipient, n in extra.items():
                if await self._depth(db, recipient) + n > max_depth:
                    raise QueueFull("a recipient inbox is full")
            await db.execute_fetchall(
                "INSERT INTO channels (channel_id, epoch, updated_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (channel_id) DO UPDATE SET epoch = excluded.epoch,"
                " updated_ms = excluded.updated_ms",
                (channel_id, epoch + 1, now_ms),
            )
            seqs = []
            for item in fanout:
                # depths were checked above for the whole fan-out, so no limit here
                seq = await self._append(
                    db, item.recipient, channel_id, item.payload, now_ms, max_depth + len(fanout)
                )
                assert seq is not None
                seqs.append(seq)
            return CommitResult(seqs=tuple(seqs), new_epoch=epoch + 1)

        result: CommitResult = await self._write("enqueue_commit", op)
        return result

    async def fetch(self, recipient: bytes, after_seq: int, limit: int) -> list[StoredEnvelope]:
        """Messages after ``after_seq`` in seq order."""
        rows = await self._read(
            "fetch",
            "SELECT seq, channel_id, payload FROM messages"
            " WHERE recipient = ? AND seq > ? ORDER BY seq LIMIT ?",
            (recipient, after_seq, limit),
        )
        return [
            StoredEnvelope(seq=int(seq), channel_id=bytes(ch), data=bytes(data))
            for seq, ch, data in rows
        ]

    async def ack(self, recipient: bytes, upto_seq: int) -> int:
        """Delete messages up to and including ``upto_seq``."""

        async def op(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
                "DELETE FROM messages WHERE recipient = ? AND seq <= ?", (recipient, upto_seq)
            )
            return cur.rowcount

        result: int = await self._write("ack", op)
        return result

    async def purge_messages(self, before_ms: int) -> int:
        """Delete messages stored before ``before_ms``."""

        async def op(db: aiosqlite.Connection) -> int:
            cur = await db.execute("DELETE FROM messages WHERE created_ms < ?", (before_ms,))
            return cur.rowcount

        result: int = await self._write("purge_messages", op)
        return result

    async def queued_total(self) -> int:
        """Messages waiting in all inboxes."""
        rows = await self._read("queued_total", "SELECT COUNT(*) FROM messages", ())
        return int(rows[0][0])
