"""SQLite backend of the :class:`~node.store.base.Store` protocol.

Layout:

* **Writes go through the shared group-commit writer**
  (:class:`proto.dbwriter.BatchWriter`, the one the client uses too): every
  write is a unit queued on it; concurrent writes share one ``BEGIN
  IMMEDIATE`` … ``COMMIT`` and one fsync, each in its own savepoint so one
  failing write never fails its neighbours, and a write is answered only once
  committed. Fsyncing commits run on the writer's thread, except a lone write
  to an idle store (no other write queued in the same event-loop pass, no
  commit for :data:`INLINE_AFTER_IDLE_S`), which commits on the event loop:
  there the two thread wake-ups cost more than the commit and nothing else
  waits. See that module for the rules (order, isolation, back-pressure,
  shutdown). Since writes are
  serialised, read-check-write sequences (queue depth, epoch check,
  KeyPackage consumption) are atomic without locks. The operations themselves
  are in :mod:`node.store.sqlite_ops`; a run of plain enqueues shares
  statements (``EnqueueOp.run_many``).
* **One aiosqlite reader connection** for queries; WAL lets it read the last
  committed state while the writer works.
* **Caches of sessions and devices** (bounded LRU), exact because this store
  is the only writer of its database: every write that changes a cached row
  drops it, and a generation counter keeps a read that raced such a write from
  re-caching the old row.

Durability: ``synchronous=FULL`` in WAL mode fsyncs the WAL on every commit,
so a returned seq survives a process kill *and* an OS crash or power loss;
``NORMAL`` survives only a process kill. Group commit amortises the fsync, so
FULL is the default. With FULL, a batch made only of *idempotent cleanups*
(``ack``, ``purge_messages``, ``purge_sessions``) commits NORMAL (the writer's
crash-safe units): losing one to a power cut only means it is redone (an
un-acked message is delivered again and the client skips seqs at or below its
saved cursor; an expired row is purged next time), so it need not cost an
fsync, nor delay the enqueues queued behind it. Any other write in the batch
makes it FULL, and that fsync covers the earlier NORMAL commits too (same WAL
file). Logout (``delete_session``) stays durable: a revoked token must not
come back.

Driver and writer exceptions never leave this module: what fails in the
database is :class:`~proto.errors.Unavailable`; domain errors raised by an
operation (:class:`~proto.errors.QueueFull`, ...) reach the caller as they are.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from node.store import sqlite_ops as ops
from node.store.base import (
    DEVICE_LOOKUP_CHUNK,
    FETCH_WELCOME_SQL,
    ChannelCommitResult,
    CommitResult,
    DeviceRecord,
    FanoutItem,
    KeyPackageCount,
    SessionRecord,
    StoredEnvelope,
    TreePart,
    WelcomeParts,
    WelcomeTree,
    welcome_tree,
)
from node.store.cache import LruCache
from proto.dbwriter import BatchObserver, BatchWriter, WriterClosed, WriterConfig, WriterError
from proto.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Observer = Callable[[str, float], None]
_Op = Callable[[sqlite3.Connection], Any]
CACHE_ENTRIES = 10_000
INLINE_AFTER_IDLE_S = 0.005
"""A lone write commits on the event loop when no commit ended this recently
(``WriterConfig.inline_lone_after_idle``; measured in docs/perf/writer.md)."""


def _unavailable(err: WriterError) -> Exception:
    """The shared writer's errors as :class:`Unavailable` (module boundary)."""
    if isinstance(err, WriterClosed):
        mapped = Unavailable("store is closed")
    else:
        log.error("sqlite failure: %s", type(err.__cause__ or err).__name__)
        mapped = Unavailable("store failure")
    mapped.__cause__ = err
    return mapped


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """Translate driver and writer exceptions into :class:`Unavailable` at the module boundary."""
    try:
        yield
    except WriterClosed as exc:
        raise Unavailable("store is closed") from exc
    except (WriterError, sqlite3.Error, ValueError, OverflowError) as exc:
        log.error("sqlite failure: %s", type(exc).__name__)
        raise Unavailable("store failure") from exc


class SqliteStore:
    """The SQLite store. Create with :meth:`open`; call :meth:`close` when done."""

    def __init__(
        self,
        writer: BatchWriter,
        reader: aiosqlite.Connection,
        *,
        observer: Observer | None,
    ) -> None:
        """Use :meth:`open`."""
        self._writer = writer
        self._r = reader
        self._observer = observer
        self._closed = False
        self._sessions: LruCache[bytes, SessionRecord] = LruCache(CACHE_ENTRIES)
        self._devices: LruCache[bytes, DeviceRecord] = LruCache(CACHE_ENTRIES)

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        write_batch: int = 256,
        synchronous: str = "FULL",
        observer: Observer | None = None,
        batch_observer: BatchObserver | None = None,
    ) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and apply migrations.

        Args:
            path: database file.
            write_batch: most writes per group-commit transaction.
            synchronous: ``FULL`` (default, survives power loss) or ``NORMAL``.
            observer: called with (operation, seconds) after each store call.
            batch_observer: called with (writes, seconds) after each group commit.
        Raises:
            Unavailable: the database cannot be opened or migrated.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        config = WriterConfig(
            max_batch=write_batch,
            synchronous="FULL" if synchronous == "FULL" else "NORMAL",
            thread_name="qpc-sqlite-w",
            inline_lone_after_idle=INLINE_AFTER_IDLE_S,
        )
        with _map_errors():
            writer = await BatchWriter.open(
                functools.partial(ops.connect_writer, path, synchronous),
                config,
                observer=batch_observer,
                errors=_unavailable,
            )
            try:
                reader = await aiosqlite.connect(path, isolation_level=None)
                try:
                    await reader.execute("PRAGMA busy_timeout=5000")
                    await reader.execute("PRAGMA query_only=ON")
                except BaseException:
                    await reader.close()
                    raise
            except BaseException:
                await writer.close()
                raise
        return cls(writer, reader, observer=observer)

    @property
    def backend(self) -> str:
        """Always ``"sqlite"``."""
        return "sqlite"

    async def close(self) -> None:
        """Let queued writes commit, stop the writer and close both connections."""
        if self._closed:
            return
        self._closed = True
        with _map_errors():
            await self._writer.close()
            await self._r.close()

    # ------------------------------------------------------------------ plumbing

    def _observe(self, name: str, started: float) -> None:
        if self._observer is not None:
            self._observer(name, time.perf_counter() - started)

    async def _write(self, name: str, op: _Op, *, durable: bool = True) -> Any:
        """Queue ``op`` for the next group commit; ``durable=False`` only for
        idempotent cleanups (see the module docstring)."""
        started = time.perf_counter()
        try:
            return await self._writer.write(op, durable=durable)
        except ValueError as exc:  # a value the driver refused before any SQL ran
            raise Unavailable("store failure") from exc
        finally:
            self._observe(name, started)

    async def _read(self, name: str, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        started = time.perf_counter()
        try:
            with _map_errors():
                return list(await self._r.execute_fetchall(sql, params))
        finally:
            self._observe(name, started)

    # ------------------------------------------------------------------ secrets

    async def get_or_create_secret(self, name: str, value: bytes) -> bytes:
        """Return the secret ``name``, storing ``value`` first if there is none."""
        op = functools.partial(
            ops.get_or_create_secret, name=name, value=value, now_ms=int(time.time() * 1000)
        )
        result: bytes = await self._write("get_or_create_secret", op)
        return result

    # ------------------------------------------------------------------ accounts

    async def account_exists(self, username: str) -> bool:
        """Whether ``username`` is registered."""
        sql = "SELECT 1 FROM accounts WHERE username = ?"
        return bool(await self._read("account_exists", sql, (username,)))

    async def create_account(self, username: str, password_file: bytes, now_ms: int) -> None:
        """Create an account; :class:`AlreadyExists` if the name is taken."""
        await self._write(
            "create_account",
            functools.partial(
                ops.create_account, username=username, password_file=password_file, now_ms=now_ms
            ),
        )

    async def get_password_file(self, username: str) -> bytes | None:
        """The account's OPAQUE password file, or None."""
        sql = "SELECT password_file FROM opaque_records WHERE username = ?"
        rows = await self._read("get_password_file", sql, (username,))
        return bytes(rows[0][0]) if rows else None

    async def create_session(
        self, token_hash: bytes, username: str, device_id: bytes, now_ms: int, expires_ms: int
    ) -> None:
        """Store a new session under SHA-256 of its token."""
        await self._write(
            "create_session",
            functools.partial(
                ops.create_session,
                token_hash=token_hash,
                username=username,
                device_id=device_id,
                now_ms=now_ms,
                expires_ms=expires_ms,
            ),
        )

    async def get_session(self, token_hash: bytes) -> SessionRecord | None:
        """A session by token hash, expired or not."""
        cached = self._sessions.get(token_hash)
        if cached is not None:
            return cached
        generation = self._sessions.generation
        rows = await self._read(
            "get_session",
            "SELECT username, device_id, expires_ms FROM sessions WHERE token_hash = ?",
            (token_hash,),
        )
        if not rows:
            return None
        username, device_id, expires_ms = rows[0]
        record = SessionRecord(username=username, device_id=bytes(device_id), expires_ms=expires_ms)
        self._sessions.put(token_hash, record, generation)
        return record

    async def delete_session(self, token_hash: bytes) -> None:
        """Remove a session; missing ones are ignored."""
        self._sessions.invalidate(token_hash)
        try:
            await self._write(
                "delete_session", functools.partial(ops.delete_session, token_hash=token_hash)
            )
        finally:
            self._sessions.invalidate(token_hash)

    async def purge_sessions(self, now_ms: int) -> int:
        """Delete expired sessions."""
        try:
            result: int = await self._write(
                "purge_sessions",
                functools.partial(ops.purge_sessions, now_ms=now_ms),
                durable=False,
            )
        finally:
            self._sessions.invalidate()
        return result

    # ------------------------------------------------------------------ devices

    async def upsert_device(self, device: DeviceRecord, now_ms: int) -> None:
        """Register or update a device; :class:`AlreadyExists` if another account holds it."""
        self._devices.invalidate(device.device_id)
        try:
            await self._write(
                "upsert_device", functools.partial(ops.upsert_device, device=device, now_ms=now_ms)
            )
        finally:
            self._devices.invalidate(device.device_id)

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
        cached = self._devices.get(device_id)
        if cached is not None:
            return cached
        generation = self._devices.generation
        rows = await self._read(
            "get_device",
            "SELECT device_id, username, hybrid_key, signature, access_key_hash"
            " FROM devices WHERE device_id = ?",
            (device_id,),
        )
        if not rows:
            return None
        record = self._device(rows[0])
        self._devices.put(device_id, record, generation)
        return record

    async def known_devices(self, device_ids: Sequence[bytes]) -> set[bytes]:
        """Which of ``device_ids`` are registered devices."""
        known = {d for d in device_ids if self._devices.get(d) is not None}
        missing = list(dict.fromkeys(d for d in device_ids if d not in known))
        for start in range(0, len(missing), DEVICE_LOOKUP_CHUNK):
            chunk = missing[start : start + DEVICE_LOOKUP_CHUNK]
            generation = self._devices.generation
            marks = ",".join("?" * len(chunk))  # placeholders only, never values
            rows = await self._read(
                "known_devices",
                (  # placeholders only
                    "SELECT device_id, username, hybrid_key, signature, access_key_hash"  # noqa: S608
                    f" FROM devices WHERE device_id IN ({marks})"
                ),
                chunk,
            )
            for row in rows:
                record = self._device(row)
                self._devices.put(record.device_id, record, generation)
                known.add(record.device_id)
        return known

    async def list_devices(self, username: str) -> list[DeviceRecord]:
        """An account's devices, oldest first."""
        rows = await self._read(
            "list_devices",
            "SELECT device_id, username, hybrid_key, signature, access_key_hash"
            " FROM devices WHERE username = ? ORDER BY created_ms, device_id",
            (username,),
        )
        return [self._device(r) for r in rows]

    async def delete_device(self, username: str, device_id: bytes) -> bool:
        """Unlink a device: it, its KeyPackages, its sessions and its inbox."""
        self._devices.invalidate(device_id)
        try:
            deleted: bool = await self._write(
                "delete_device",
                functools.partial(ops.delete_device, username=username, device_id=device_id),
            )
        finally:
            self._devices.invalidate(device_id)
            self._sessions.invalidate()
        return deleted

    async def add_key_packages(
        self, device_id: bytes, packages: Sequence[bytes], last_resort: bytes | None, max_stock: int
    ) -> int:
        """Add one-time KeyPackages (and the last-resort one); return the new stock."""
        op = functools.partial(
            ops.add_key_packages,
            device_id=device_id,
            packages=list(packages),
            last_resort=last_resort,
            max_stock=max_stock,
        )
        result: int = await self._write("add_key_packages", op)
        return result

    async def consume_key_package(self, device_id: bytes) -> tuple[bytes, bool] | None:
        """Hand out (and delete) the oldest one-time package, else the last-resort one."""
        op = functools.partial(ops.consume_key_package, device_id=device_id)
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

    async def enqueue(
        self, recipient: bytes, channel_id: bytes, payload: bytes, now_ms: int, max_depth: int
    ) -> int:
        """Append to an inbox and return the seq after commit; :class:`QueueFull` at the limit."""
        op = ops.EnqueueOp(recipient, channel_id, payload, now_ms, max_depth)
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
        op = functools.partial(
            ops.enqueue_commit,
            channel_id=channel_id,
            epoch=epoch,
            fanout=list(fanout),
            now_ms=now_ms,
            max_depth=max_depth,
        )
        result: CommitResult = await self._write("enqueue_commit", op)
        return result

    async def post_channel(
        self,
        channel_id: bytes,
        key_hash: bytes,
        recipients: Sequence[bytes],
        payload: bytes,
        now_ms: int,
        max_depth: int,
    ) -> tuple[int, ...]:
        """Capability check, the message once, one reference per inbox."""
        op = functools.partial(
            ops.post_channel,
            channel_id=channel_id,
            key_hash=key_hash,
            recipients=list(recipients),
            payload=payload,
            now_ms=now_ms,
            max_depth=max_depth,
        )
        result: tuple[int, ...] = await self._write("post_channel", op)
        return result

    async def commit_channel(
        self,
        channel_id: bytes,
        epoch: int,
        key_hash: bytes | None,
        committer: bytes,
        commit: bytes,
        members: Sequence[bytes],
        welcome: bytes,
        joiners: Sequence[bytes],
        now_ms: int,
        max_depth: int,
        *,
        parts: WelcomeParts | None = None,
        tree: TreePart | None = None,
    ) -> ChannelCommitResult:
        """Capability and epoch check, epoch bump, commit and Welcome stored once."""
        op = functools.partial(
            ops.commit_channel,
            channel_id=channel_id,
            epoch=epoch,
            key_hash=key_hash,
            committer=committer,
            commit=commit,
            members=list(members),
            welcome=welcome,
            joiners=list(joiners),
            now_ms=now_ms,
            max_depth=max_depth,
            parts=parts,
            tree=tree,
        )
        result: ChannelCommitResult = await self._write("commit_channel", op)
        return result

    async def fetch_welcome(
        self, channel_id: bytes, epoch: int, recipient: bytes
    ) -> WelcomeTree | None:
        """Shared Welcome parts and tree chain for a joiner whose inbox refers to them."""
        rows = await self._read(
            "fetch_welcome",
            FETCH_WELCOME_SQL.replace("$1", "?1").replace("$2", "?2").replace("$3", "?3"),
            (channel_id, epoch, recipient),
        )
        return welcome_tree(rows, epoch)

    async def set_channel_key(
        self, channel_id: bytes, epoch: int, committer: bytes, key_hash: bytes
    ) -> None:
        """The committer of ``epoch`` sets its post capability hash."""
        op = functools.partial(
            ops.set_channel_key,
            channel_id=channel_id,
            epoch=epoch,
            committer=committer,
            key_hash=key_hash,
        )
        await self._write("set_channel_key", op)

    async def fetch(self, recipient: bytes, after_seq: int, limit: int) -> list[StoredEnvelope]:
        """Messages after ``after_seq`` in seq order (channel references resolved)."""
        rows = await self._read(
            "fetch",
            "SELECT m.seq, COALESCE(p.channel_id, m.channel_id), COALESCE(p.payload, m.payload)"
            " FROM messages AS m LEFT JOIN channel_payloads AS p ON p.id = m.payload_id"
            " WHERE m.recipient = ? AND m.seq > ? ORDER BY m.seq LIMIT ?",
            (recipient, after_seq, limit),
        )
        return [
            StoredEnvelope(seq=int(seq), channel_id=bytes(ch), data=bytes(data))
            for seq, ch, data in rows
        ]

    async def ack(self, recipient: bytes, upto_seq: int) -> int:
        """Delete messages up to and including ``upto_seq``."""
        op = functools.partial(ops.ack, recipient=recipient, upto_seq=upto_seq)
        result: int = await self._write("ack", op, durable=False)
        return result

    async def purge_messages(self, before_ms: int) -> int:
        """Delete messages stored before ``before_ms``."""
        op = functools.partial(ops.purge_messages, before_ms=before_ms)
        result: int = await self._write("purge_messages", op, durable=False)
        return result

    async def queued_total(self) -> int:
        """Messages waiting in all inboxes."""
        rows = await self._read("queued_total", "SELECT COUNT(*) FROM messages", ())
        return int(rows[0][0])
