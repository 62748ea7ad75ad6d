"""PostgreSQL backend of the :class:`~node.store.base.Store` protocol (asyncpg).

Several node processes may share one database; everything that must hold
across them is in the database (migrations ``migrations/postgres/``):

* **Writes are one round trip each.** The read-check-write sequences (seq
  allocation with the queue-depth limit, the epoch check of a commit, the
  KeyPackage stock) are SQL functions that lock what they check, in a fixed
  order (see ``001_initial.sql``), so they are atomic across processes and
  cannot deadlock each other. Consume-once KeyPackages use
  ``FOR UPDATE SKIP LOCKED``: concurrent consumers take different rows.
* **Enqueues share transactions (group commit).** ``enqueue`` calls queued in
  one event-loop pass, or while every pooled connection is busy, go to the
  database together as one ``qpc_enqueue`` call with arrays, one transaction
  and one WAL flush for the batch; up to :data:`ENQUEUE_BATCHES` batches run
  at once, the rest of the pool serves reads and the other writes.
  A batch that fails as a whole (a value the driver refuses, a lost
  connection) is retried one write per transaction, so one bad write cannot
  fail its neighbours.
* **Channel logs** (``002_channel_log.sql``): a group message is stored once
  in ``channel_payloads`` and referred to from each member's inbox;
  ``qpc_post_channel``, ``qpc_commit_channel`` and ``qpc_set_channel_key``
  lock the channel row first (posts ``FOR SHARE``, commits and key changes
  ``FOR UPDATE``), so a capability or epoch check holds until its write
  commits. More per-channel state (e.g. a tree or GroupInfo stored once per
  epoch) belongs in a new migration with its own function that takes the
  channel row lock the same way, and a method here calling it.
* **Wake-ups and cache invalidations cross processes by LISTEN/NOTIFY** on a
  dedicated connection. Writers NOTIFY inside their transaction (delivered on
  commit) with ids only: channel ``qpc_inbox`` carries the inboxes written,
  ``qpc_cache`` the session or device whose row changed. Each store skips its
  own notifications (the node already woke its subscribers, with the
  envelopes). The session and device caches are used only while the listener
  is connected; when it drops, they are cleared and bypassed, every local
  subscriber is told to re-read its inbox, and the listener reconnects.
* **Cleanups commit asynchronously** (``synchronous_commit = off`` for ack and
  purges), as the SQLite store commits them without fsync: losing one to a
  crash only means it is redone. Every other write returns after its commit is
  flushed.

Driver exceptions never leave this module: they become
:class:`~proto.errors.Unavailable` (domain errors raised by the SQL functions
carry their own SQLSTATE and become their :mod:`proto.errors` class).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg

import migrations
from node.store.base import (
    DEVICE_LOOKUP_CHUNK,
    FETCH_WELCOME_SQL,
    MAX_TREE_DELTAS,
    MIN_DELTA_BUDGET,
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
from proto.errors import (
    AlreadyExists,
    LimitExceeded,
    PermissionDenied,
    QpcError,
    QueueFull,
    StaleEpoch,
    TreeBaseRequired,
    Unavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Observer = Callable[[str, float], None]
BatchObserver = Callable[[int, float], None]
Wakeup = Callable[[bytes], None]
Resync = Callable[[], None]

CACHE_ENTRIES = 10_000
ENQUEUE_BATCHES = 2
"""Enqueue batches in flight at once (each on its own pooled connection). Fewer,
larger batches cost less CPU per write on the node and on the database
server (measured with bench/pg.py: at 64 in flight, 2 batches took ~70 µs of
server CPU per enqueue, 8 batches ~185 µs); two keep one batch filling while
the other commits."""
INBOX_CHANNEL = "qpc_inbox"
CACHE_CHANNEL = "qpc_cache"
MIGRATION_LOCK = 0x717063_6D6967  # pg_advisory_xact_lock key while migrating
LISTEN_RETRY_S = (0.1, 5.0)
"""First and largest delay between attempts to re-open the listener connection."""

_DOMAIN = {
    "QP001": StaleEpoch,
    "QP002": QueueFull,
    "QP003": LimitExceeded,
    "QP004": PermissionDenied,
    "QP005": TreeBaseRequired,
}
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    ValueError,
    OverflowError,
    TimeoutError,
)
_OUTCOME_UNKNOWN = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)
"""Errors after which a write may or may not have committed."""


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """Translate driver exceptions at the module boundary (see the module docstring)."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        domain = _DOMAIN.get(getattr(exc, "sqlstate", "") or "")
        if domain is not None:
            raise domain(str(getattr(exc, "message", "") or domain.__name__)) from None
        log.error("postgres failure: %s", type(exc).__name__)
        raise Unavailable("store failure") from exc
    except _DRIVER_ERRORS as exc:
        log.error("postgres failure: %s", type(exc).__name__)
        raise Unavailable("store failure") from exc


@dataclasses.dataclass(slots=True)
class _Enqueue:
    recipient: bytes
    channel_id: bytes
    payload: bytes
    now_ms: int
    max_depth: int
    future: asyncio.Future[int]


class _Pool:
    """A fixed-size pool of asyncpg connections, made for this store.

    asyncpg's own pool runs a reset round trip on every release and creates
    connections under ``asyncio.timeout``, which needs a current task, while
    the RPC layer runs a handler's first step eagerly outside any task. Here
    acquire and release are plain list operations; lost connections are
    replaced by a background task (backoff), and a caller waits at most
    ``acquire_timeout`` for a connection, then gets :class:`Unavailable`.
    """

    def __init__(self, dsn: str, size: int, *, connect_timeout: float, acquire_timeout: float):
        self._dsn = dsn
        self._size = size
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._loop = asyncio.get_running_loop()
        self._idle: list[asyncpg.Connection] = []
        self._all: set[asyncpg.Connection] = set()
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection]] = collections.deque()
        self._filler: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Open every connection (raises the driver's error if the first fails)."""
        for _ in range(self._size):
            conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
            self._all.add(conn)
            self._idle.append(conn)

    async def acquire(self) -> asyncpg.Connection:
        """An idle connection, waiting for one if all are busy."""
        if self._closed:
            raise Unavailable("store is closed")
        if self._idle:
            return self._idle.pop()
        future: asyncio.Future[asyncpg.Connection] = self._loop.create_future()
        self._waiters.append(future)
        timer = self._loop.call_later(self._acquire_timeout, self._expire, future)
        self._refill()
        try:
            return await future
        finally:
            timer.cancel()

    @staticmethod
    def _expire(future: asyncio.Future[asyncpg.Connection]) -> None:
        if not future.done():
            future.set_exception(Unavailable("no database connection"))

    def release(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        """Give a connection back; a closed, broken or mid-transaction one is replaced."""
        if broken or conn.is_closed() or conn.is_in_transaction():
            self._all.discard(conn)
            conn.terminate()
            self._refill()
            return
        if self._closed:
            self._idle.append(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _refill(self) -> None:
        if self._closed or len(self._all) >= self._size:
            return
        if self._filler is None or self._filler.done():
            self._filler = self._loop.create_task(self._fill())

    async def _fill(self) -> None:
        first, largest = LISTEN_RETRY_S
        delay = first
        while not self._closed and len(self._all) < self._size:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
            except _DRIVER_ERRORS as exc:
                log.warning("postgres connect failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(largest, delay * 2)
                continue
            delay = first
            self._all.add(conn)
            self.release(conn)

    async def close(self) -> None:
        """Close every connection (callers still waiting get Unavailable)."""
        self._closed = True
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        for waiter in self._waiters:
            self._expire(waiter)
        for conn in list(self._all):
            with contextlib.suppress(*_DRIVER_ERRORS):
                await conn.close(timeout=5)
        self._all.clear()
        self._idle.clear()


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations in order, in one transaction with their ledger
    rows, under an advisory lock (processes starting together apply each once)."""
    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
        )
        done = {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for m in migrations.load("postgres"):
            if m.version in done:
                continue
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                int(time.time() * 1000),
            )
            applied.append(m.name)
            log.info("applied migration %s", m.name)
    return applied


class PostgresStore:
    """The PostgreSQL store. Create with :meth:`open`; call :meth:`close` when done."""

    def __init__(
        self,
        dsn: str,
        pool: _Pool,
        *,
        pool_size: int,
        write_batch: int,
        observer: Observer | None,
        batch_observer: BatchObserver | None,
        wakeup: Wakeup | None,
        resync: Resync | None,
    ) -> None:
        """Use :meth:`open`."""
        self._dsn = dsn
        self._pool = pool
        self._max_batches = min(pool_size, ENQUEUE_BATCHES)
        self._batch = write_batch
        self._observer = observer
        self._batch_observer = batch_observer
        self._wakeup = wakeup
        self._resync = resync
        self.origin = os.urandom(6).hex()
        """Tag of this store's NOTIFYs (so it skips its own)."""
        self._loop = asyncio.get_running_loop()
        self._pending: list[_Enqueue] = []
        self._batches = 0  # enqueue batches in flight
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._listener: asyncpg.Connection | None = None
        self._listening = False
        self._listen_task: asyncio.Task[None] | None = None
        self._listen_lost = asyncio.Event()
        self._sessions: LruCache[bytes, SessionRecord] = LruCache(CACHE_ENTRIES)
        self._devices: LruCache[bytes, DeviceRecord] = LruCache(CACHE_ENTRIES)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_size: int = 8,
        write_batch: int = 256,
        observer: Observer | None = None,
        batch_observer: BatchObserver | None = None,
        wakeup: Wakeup | None = None,
        resync: Resync | None = None,
        connect_timeout: float = 10.0,
    ) -> PostgresStore:
        """Connect to ``dsn``, apply migrations and start listening.

        Args:
            dsn: ``postgresql://USER@HOST/DB`` (libpq URI; ``?host=/dir`` for a socket).
            pool_size: pooled connections.
            write_batch: most enqueues in one transaction.
            observer: called with (operation, seconds) after each store call.
            batch_observer: called with (writes, seconds) after each enqueue batch.
            wakeup: called with an inbox another process wrote to.
            resync: called when notifications may have been missed (listener lost).
        Raises:
            Unavailable: the database cannot be reached or migrated.
        """
        with _map_errors():
            conn = await asyncpg.connect(dsn, timeout=connect_timeout)
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
            pool = _Pool(
                dsn, pool_size, connect_timeout=connect_timeout, acquire_timeout=connect_timeout
            )
            try:
                await pool.start()
            except BaseException:
                await pool.close()
                raise
        store = cls(
            dsn,
            pool,
            pool_size=pool_size,
            write_batch=write_batch,
            observer=observer,
            batch_observer=batch_observer,
            wakeup=wakeup,
            resync=resync,
        )
        try:
            await store._listen()
        except BaseException:
            await pool.close()
            raise
        store._listen_task = store._loop.create_task(store._keep_listening())
        return store

    @property
    def backend(self) -> str:
        """Always ``"postgresql"``."""
        return "postgresql"

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up (caches in use, wake-ups arrive)."""
        return self._listening

    async def close(self) -> None:
        """Let queued writes commit, stop listening and close every connection."""
        if self._closed:
            return
        self._closed = True
        while self._pending or self._tasks:
            if self._pending and self._batches < self._max_batches:
                self._flush()
            if self._tasks:
                await asyncio.wait(set(self._tasks))
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
        listener, self._listener, self._listening = self._listener, None, False
        with contextlib.suppress(*_DRIVER_ERRORS):
            if listener is not None:
                await listener.close(timeout=5)
        await self._pool.close()

    # ------------------------------------------------------------------ listener

    async def _listen(self) -> None:
        with _map_errors():
            conn = await asyncpg.connect(self._dsn, timeout=10)
            try:
                await conn.add_listener(INBOX_CHANNEL, self._on_inbox)
                await conn.add_listener(CACHE_CHANNEL, self._on_cache)
            except BaseException:
                await conn.close()
                raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        self._listen_lost.clear()
        self._listening = True

    def _on_listener_lost(self, conn: object) -> None:
        if conn is self._listener:
            self._drop_listener()

    def _drop_listener(self) -> None:
        """Notifications may be lost from here on: bypass caches, make subscribers re-read."""
        self._listening = False
        self._listener = None
        self._sessions.invalidate()
        self._devices.invalidate()
        self._listen_lost.set()
        if self._resync is not None:
            self._resync()

    async def _keep_listening(self) -> None:
        """Re-open the listener whenever it is lost (backoff), until close."""
        first, largest = LISTEN_RETRY_S
        while not self._closed:
            await self._listen_lost.wait()
            delay = first
            while not self._closed:
                log.warning("postgres listener lost; reconnecting")
                try:
                    await self._listen()
                except Unavailable:
                    await asyncio.sleep(delay)
                    delay = min(largest, delay * 2)
                    continue
                # anything committed while deaf: subscribers re-read once more
                self._sessions.invalidate()
                self._devices.invalidate()
                if self._resync is not None:
                    self._resync()
                break

    def _parse(self, payload: str) -> list[str] | None:
        origin, _, rest = payload.partition(" ")
        if origin == self.origin:
            return None
        return rest.split()

    def _on_inbox(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if not isinstance(payload, str):
            return
        ids = self._parse(payload)
        if not ids or self._wakeup is None:
            return
        for h in ids:
            try:
                recipient = bytes.fromhex(h)
            except ValueError:
                continue
            self._wakeup(recipient)

    def _on_cache(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if not isinstance(payload, str):
            return
        words = self._parse(payload)
        if not words or len(words) != 2:
            return
        kind, key = words
        cache: LruCache[bytes, Any] = self._sessions if kind == "s" else self._devices
        if key == "*":
            cache.invalidate()
            return
        with contextlib.suppress(ValueError):
            cache.invalidate(bytes.fromhex(key))

    # ------------------------------------------------------------------ plumbing

    def _observe(self, name: str, started: float) -> None:
        if self._observer is not None:
            self._observer(name, time.perf_counter() - started)

    async def _run(self, name: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection, translating errors."""
        if self._closed:
            raise Unavailable("store is closed")
        started = time.perf_counter()
        try:
            conn = await self._pool.acquire()
            broken = True
            try:
                with _map_errors():
                    result = await fn(conn)
                broken = False
                return result
            except QpcError:  # the statement failed cleanly: the connection is fine
                broken = False
                raise
            finally:  # a cancelled or failed call: its connection is replaced
                self._pool.release(conn, broken=broken)
        finally:
            self._observe(name, started)

    async def _fetch(self, name: str, sql: str, *args: object) -> list[asyncpg.Record]:
        async def go(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return list(await conn.fetch(sql, *args))

        return await self._run(name, go)

    def _notify_cache(self, kind: str, key: bytes | None) -> str:
        return f"{self.origin} {kind} {'*' if key is None else key.hex()}"

    # ------------------------------------------------------------------ secrets

    async def get_or_create_secret(self, name: str, value: bytes) -> bytes:
        """Return the secret ``name``, storing ``value`` first if there is none."""

        async def go(conn: asyncpg.Connection) -> bytes:
            for _ in range(3):  # a concurrent creator commits between our statements
                stored = await conn.fetchval(
                    "WITH ins AS (INSERT INTO node_secrets (name, value, created_ms)"
                    " VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING value)"
                    " SELECT value FROM ins UNION ALL"
                    " SELECT value FROM node_secrets WHERE name = $1 LIMIT 1",
                    name,
                    value,
                    int(time.time() * 1000),
                )
                if stored is not None:
                    return bytes(stored)
            raise Unavailable("secret could not be stored")

        return await self._run("get_or_create_secret", go)

    # ------------------------------------------------------------------ accounts

    async def account_exists(self, username: str) -> bool:
        """Whether ``username`` is registered."""
        rows = await self._fetch(
            "account_exists", "SELECT 1 FROM accounts WHERE username = $1", username
        )
        return bool(rows)

    async def create_account(self, username: str, password_file: bytes, now_ms: int) -> None:
        """Create an account; :class:`AlreadyExists` if the name is taken."""
        rows = await self._fetch(
            "create_account",
            "WITH a AS (INSERT INTO accounts (username, created_ms) VALUES ($1, $3)"
            " ON CONFLICT (username) DO NOTHING RETURNING username)"
            " INSERT INTO opaque_records (username, password_file)"
            " SELECT username, $2 FROM a RETURNING 1",
            username,
            password_file,
            now_ms,
        )
        if not rows:
            raise AlreadyExists("username is taken")

    async def get_password_file(self, username: str) -> bytes | None:
        """The account's OPAQUE password file, or None."""
        rows = await self._fetch(
            "get_password_file",
            "SELECT password_file FROM opaque_records WHERE username = $1",
            username,
        )
        return bytes(rows[0][0]) if rows else None

    async def create_session(
        self, token_hash: bytes, username: str, device_id: bytes, now_ms: int, expires_ms: int
    ) -> None:
        """Store a new session under SHA-256 of its token."""
        await self._fetch(
            "create_session",
            "INSERT INTO sessions (token_hash, username, device_id, created_ms, expires_ms)"
            " VALUES ($1, $2, $3, $4, $5)",
            token_hash,
            username,
            device_id,
            now_ms,
            expires_ms,
        )

    async def get_session(self, token_hash: bytes) -> SessionRecord | None:
        """A session by token hash, expired or not."""
        cached = self._sessions.get(token_hash) if self._listening else None
        if cached is not None:
            return cached
        generation = self._sessions.generation
        listening = self._listening
        rows = await self._fetch(
            "get_session",
            "SELECT username, device_id, expires_ms FROM sessions WHERE token_hash = $1",
            token_hash,
        )
        if not rows:
            return None
        username, device_id, expires_ms = rows[0]
        record = SessionRecord(username=username, device_id=bytes(device_id), expires_ms=expires_ms)
        if listening and self._listening:
            self._sessions.put(token_hash, record, generation)
        return record

    async def delete_session(self, token_hash: bytes) -> None:
        """Remove a session (every process drops it from its cache)."""
        self._sessions.invalidate(token_hash)
        try:
            await self._fetch(
                "delete_session",
                "WITH d AS (DELETE FROM sessions WHERE token_hash = $1) SELECT pg_notify($2, $3)",
                token_hash,
                CACHE_CHANNEL,
                self._notify_cache("s", token_hash),
            )
        finally:
            self._sessions.invalidate(token_hash)

    async def purge_sessions(self, now_ms: int) -> int:
        """Delete expired sessions."""

        async def go(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                n = int(
                    await conn.fetchval(
                        "WITH d AS (DELETE FROM sessions WHERE expires_ms <= $1 RETURNING 1)"
                        " SELECT count(*) FROM d",
                        now_ms,
                    )
                )
                if n:
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CACHE_CHANNEL, self._notify_cache("s", None)
                    )
                return n

        try:
            return await self._run("purge_sessions", go)
        finally:
            self._sessions.invalidate()

    # ------------------------------------------------------------------ devices

    async def upsert_device(self, device: DeviceRecord, now_ms: int) -> None:
        """Register or update a device; :class:`AlreadyExists` if another account holds it."""
        self._devices.invalidate(device.device_id)
        try:
            rows = await self._fetch(
                "upsert_device",
                "WITH up AS (INSERT INTO devices (device_id, username, hybrid_key, signature,"
                " access_key_hash, created_ms) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (device_id) DO UPDATE SET hybrid_key = excluded.hybrid_key,"
                " signature = excluded.signature, access_key_hash = excluded.access_key_hash"
                " WHERE devices.username = excluded.username RETURNING 1)"
                " SELECT pg_notify($7, $8) FROM up",
                device.device_id,
                device.username,
                device.hybrid_key,
                device.signature,
                device.access_key_hash,
                now_ms,
                CACHE_CHANNEL,
                self._notify_cache("d", device.device_id),
            )
        finally:
            self._devices.invalidate(device.device_id)
        if not rows:
            raise AlreadyExists("device id is registered to another account")

    @staticmethod
    def _device(row: asyncpg.Record) -> DeviceRecord:
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
        cached = self._devices.get(device_id) if self._listening else None
        if cached is not None:
            return cached
        generation = self._devices.generation
        listening = self._listening
        rows = await self._fetch(
            "get_device",
            "SELECT device_id, username, hybrid_key, signature, access_key_hash"
            " FROM devices WHERE device_id = $1",
            device_id,
        )
        if not rows:
            return None
        record = self._device(rows[0])
        if listening and self._listening:
            self._devices.put(device_id, record, generation)
        return record

    async def known_devices(self, device_ids: Sequence[bytes]) -> set[bytes]:
        """Which of ``device_ids`` are registered devices."""
        listening = self._listening
        known = {d for d in device_ids if listening and self._devices.get(d) is not None}
        missing = list(dict.fromkeys(d for d in device_ids if d not in known))
        for start in range(0, len(missing), DEVICE_LOOKUP_CHUNK):
            chunk = missing[start : start + DEVICE_LOOKUP_CHUNK]
            generation = self._devices.generation
            rows = await self._fetch(
                "known_devices",
                "SELECT device_id, username, hybrid_key, signature, access_key_hash"
                " FROM devices WHERE device_id = ANY($1::bytea[])",
                chunk,
            )
            for row in rows:
                record = self._device(row)
                if listening and self._listening:
                    self._devices.put(record.device_id, record, generation)
                known.add(record.device_id)
        return known

    async def list_devices(self, username: str) -> list[DeviceRecord]:
        """An account's devices, oldest first."""
        rows = await self._fetch(
            "list_devices",
            "SELECT device_id, username, hybrid_key, signature, access_key_hash"
            " FROM devices WHERE username = $1 ORDER BY created_ms, device_id",
            username,
        )
        return [self._device(r) for r in rows]

    async def delete_device(self, username: str, device_id: bytes) -> bool:
        """Unlink a device: it, its KeyPackages, its sessions and its inbox (every
        process drops it and all sessions from its caches)."""

        async def go(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                gone = await conn.fetchval(
                    "DELETE FROM devices WHERE device_id = $1 AND username = $2 RETURNING 1",
                    device_id,
                    username,
                )
                if gone is None:
                    return False
                await conn.execute("DELETE FROM sessions WHERE device_id = $1", device_id)
                await conn.execute("DELETE FROM messages WHERE recipient = $1", device_id)
                await conn.execute(
                    "SELECT pg_notify($1, $2), pg_notify($1, $3)",
                    CACHE_CHANNEL,
                    self._notify_cache("d", device_id),
                    self._notify_cache("s", None),
                )
                return True

        self._devices.invalidate(device_id)
        try:
            return await self._run("delete_device", go)
        finally:
            self._devices.invalidate(device_id)
            self._sessions.invalidate()

    async def add_key_packages(
        self, device_id: bytes, packages: Sequence[bytes], last_resort: bytes | None, max_stock: int
    ) -> int:
        """Add one-time KeyPackages (and the last-resort one); return the new stock."""
        rows = await self._fetch(
            "add_key_packages",
            "SELECT qpc_add_key_packages($1, $2, $3, $4)",
            device_id,
            list(packages),
            last_resort,
            max_stock,
        )
        return int(rows[0][0])

    async def consume_key_package(self, device_id: bytes) -> tuple[bytes, bool] | None:
        """Hand out (and delete) the oldest one-time package, else the last-resort one."""
        rows = await self._fetch(
            "consume_key_package",
            "WITH taken AS (DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages"
            " WHERE device_id = $1 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING package)"
            " SELECT package, false FROM taken UNION ALL"
            " SELECT package, true FROM last_resort_key_packages"
            " WHERE device_id = $1 AND NOT EXISTS (SELECT 1 FROM taken)",
            device_id,
        )
        if not rows:
            return None
        return bytes(rows[0][0]), bool(rows[0][1])

    async def key_package_count(self, device_id: bytes) -> KeyPackageCount:
        """The device's KeyPackage stock."""
        rows = await self._fetch(
            "key_package_count",
            "SELECT (SELECT count(*) FROM key_packages WHERE device_id = $1),"
            " EXISTS (SELECT 1 FROM last_resort_key_packages WHERE device_id = $1)",
            device_id,
        )
        return KeyPackageCount(count=int(rows[0][0]), has_last_resort=bool(rows[0][1]))

    # ------------------------------------------------------------------ delivery

    async def enqueue(
        self, recipient: bytes, channel_id: bytes, payload: bytes, now_ms: int, max_depth: int
    ) -> int:
        """Append to an inbox and return the seq after commit; :class:`QueueFull` at the limit."""
        if self._closed:
            raise Unavailable("store is closed")
        started = time.perf_counter()
        future: asyncio.Future[int] = self._loop.create_future()
        self._pending.append(_Enqueue(recipient, channel_id, payload, now_ms, max_depth, future))
        if not self._flush_scheduled and self._batches < self._max_batches:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        try:
            return await future
        finally:
            self._observe("enqueue", started)

    def _flush(self) -> None:
        """Start enqueue batches while connections are free (group commit)."""
        self._flush_scheduled = False
        while self._pending and self._batches < self._max_batches:
            batch = [w for w in self._pending[: self._batch] if not w.future.done()]
            del self._pending[: self._batch]
            if not batch:
                continue
            self._batches += 1
            task = self._loop.create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._batches -= 1
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    async def _run_batch(self, batch: list[_Enqueue]) -> None:
        started = time.perf_counter()
        try:
            try:
                conn = await self._pool.acquire()
                broken = True
                try:
                    seqs = await self._enqueue_call(conn, batch)
                    broken = False
                finally:
                    self._pool.release(conn, broken=broken)
            except _OUTCOME_UNKNOWN as exc:
                # the batch may have committed: never run it again
                log.error("postgres enqueue batch failed: %s", type(exc).__name__)
                raise Unavailable("store failure") from exc
            except _DRIVER_ERRORS as exc:  # refused before or by the statement: nothing stored
                if len(batch) == 1:
                    log.error("postgres enqueue failed: %s", type(exc).__name__)
                    raise Unavailable("store failure") from exc
                for w in batch:  # one bad write must not fail its neighbours
                    await self._run_batch([w])
                return
            if self._batch_observer is not None:
                self._batch_observer(len(batch), time.perf_counter() - started)
            for w, seq in zip(batch, seqs, strict=True):
                if w.future.done():
                    continue
                if seq < 0:
                    w.future.set_exception(QueueFull("recipient inbox is full"))
                else:
                    w.future.set_result(int(seq))
        except QpcError as exc:
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(exc)
        except BaseException:  # nobody may wait forever
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(Unavailable("store failure"))
            raise

    async def _enqueue_call(self, conn: asyncpg.Connection, batch: list[_Enqueue]) -> list[int]:
        seqs = await conn.fetchval(
            "SELECT qpc_enqueue($1, $2, $3, $4, $5, $6)",
            [w.recipient for w in batch],
            [w.channel_id for w in batch],
            [w.payload for w in batch],
            [w.now_ms for w in batch],
            [w.max_depth for w in batch],
            self.origin,
        )
        return [int(s) for s in seqs]

    async def enqueue_commit(
        self,
        channel_id: bytes,
        epoch: int,
        fanout: Sequence[FanoutItem],
        now_ms: int,
        max_depth: int,
    ) -> CommitResult:
        """Epoch check + bump + fan-out, all or nothing."""
        rows = await self._fetch(
            "enqueue_commit",
            "SELECT qpc_enqueue_commit($1, $2, $3, $4, $5, $6, $7)",
            channel_id,
            epoch,
            [f.recipient for f in fanout],
            [f.payload for f in fanout],
            now_ms,
            max_depth,
            self.origin,
        )
        return CommitResult(seqs=tuple(int(s) for s in rows[0][0]), new_epoch=epoch + 1)

    async def fetch(self, recipient: bytes, after_seq: int, limit: int) -> list[StoredEnvelope]:
        """Messages after ``after_seq`` in seq order (channel references resolved)."""
        rows = await self._fetch(
            "fetch",
            "SELECT m.seq, COALESCE(p.channel_id, m.channel_id), COALESCE(p.payload, m.payload)"
            " FROM messages AS m LEFT JOIN channel_payloads AS p ON p.id = m.payload_id"
            " WHERE m.recipient = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
            recipient,
            after_seq,
            limit,
        )
        return [
            StoredEnvelope(seq=int(seq), channel_id=bytes(ch), data=bytes(data))
            for seq, ch, data in rows
        ]

    async def ack(self, recipient: bytes, upto_seq: int) -> int:
        """Delete messages up to and including ``upto_seq``."""
        rows = await self._fetch("ack", "SELECT qpc_ack($1, $2)", recipient, upto_seq)
        return int(rows[0][0])

    async def purge_messages(self, before_ms: int) -> int:
        """Delete messages stored before ``before_ms``."""
        rows = await self._fetch("purge_messages", "SELECT qpc_purge_messages($1)", before_ms)
        return int(rows[0][0])

    # ------------------------------------------------------------- channel logs
    # (docs/PROTOCOL.md, "Channel logs"; migrations/postgres/002_channel_log.sql).
    # Each call is one SQL function: the capability and epoch checks lock the
    # channel row in the transaction of the write they guard.

    async def post_channel(
        self,
        channel_id: bytes,
        key_hash: bytes,
        recipients: Sequence[bytes],
        payload: bytes,
        now_ms: int,
        max_depth: int,
    ) -> tuple[int, ...]:
        """Check the post key, store ``payload`` once and refer to it per inbox."""
        rows = await self._fetch(
            "post_channel",
            "SELECT qpc_post_channel($1, $2, $3, $4, $5, $6, $7)",
            channel_id,
            key_hash,
            list(recipients),
            payload,
            now_ms,
            max_depth,
            self.origin,
        )
        return tuple(int(s) for s in rows[0][0])

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
        """Epoch and key check, epoch bump, commit and Welcome each stored once,
        the tree part in the channel's chain (migrations 002-004)."""
        rows = await self._fetch(
            "commit_channel",
            "SELECT qpc_commit_channel_tree($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
            " $13, $14, $15, $16, $17, $18)",
            channel_id,
            epoch,
            key_hash,
            committer,
            commit,
            list(members),
            welcome,
            list(joiners),
            parts is not None,
            b"" if parts is None else parts.group_info,
            [] if parts is None else list(parts.entries),
            b"" if tree is None else tree.data,
            -1 if tree is None else int(tree.base),
            MAX_TREE_DELTAS,
            MIN_DELTA_BUDGET,
            now_ms,
            max_depth,
            self.origin,
        )
        seqs = [int(s) for s in rows[0][0]]
        n_commit = len(members)
        return ChannelCommitResult(
            new_epoch=epoch + 1,
            commit_seqs=tuple(seqs[:n_commit]),
            welcome_seqs=tuple(seqs[n_commit:]),
        )

    async def set_channel_key(
        self, channel_id: bytes, epoch: int, committer: bytes, key_hash: bytes
    ) -> None:
        """Set ``epoch``'s post key hash: only by its committer, only once."""
        await self._fetch(
            "set_channel_key",
            "SELECT qpc_set_channel_key($1, $2, $3, $4)",
            channel_id,
            epoch,
            committer,
            key_hash,
        )

    async def fetch_welcome(
        self, channel_id: bytes, epoch: int, recipient: bytes
    ) -> WelcomeTree | None:
        """Shared Welcome parts and tree chain for a joiner whose inbox refers to them."""
        rows = await self._fetch("fetch_welcome", FETCH_WELCOME_SQL, channel_id, epoch, recipient)
        return welcome_tree(rows, epoch)

    async def queued_total(self) -> int:
        """Messages waiting in all inboxes."""
        rows = await self._fetch("queued_total", "SELECT count(*) FROM messages")
        return int(rows[0][0])
