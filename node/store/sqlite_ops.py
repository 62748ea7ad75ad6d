"""Write operations and migrations of the SQLite store, as plain synchronous functions.

They run on the store's single writer thread, inside a transaction the
caller (the group-commit loop in :mod:`node.store.sqlite`) opened. Each does
all its checks before its first write, so raising a domain error
(:class:`QueueFull`, :class:`StaleEpoch`, ...) never leaves half an operation
in the batch's transaction.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import migrations
from node.store.base import (
    MAX_TREE_DELTAS,
    MIN_DELTA_BUDGET,
    ChannelCommitResult,
    CommitResult,
    DeviceRecord,
    FanoutItem,
    TreePart,
    WelcomeParts,
)
from proto import files
from proto.errors import (
    AlreadyExists,
    LimitExceeded,
    PermissionDenied,
    QueueFull,
    StaleEpoch,
    TreeBaseRequired,
)

log = logging.getLogger(__name__)

_LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
)


def apply_migrations(db: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order, each in one transaction with its ledger row."""
    db.execute(_LEDGER)
    done = {int(row[0]) for row in db.execute("SELECT version FROM schema_migrations")}
    applied = []
    for m in migrations.load("sqlite"):
        if m.version in done:
            continue
        script = (
            "BEGIN IMMEDIATE;\n"
            + m.sql
            + "\nINSERT INTO schema_migrations (version, name, applied_ms) "
            + f"VALUES ({m.version}, '{m.name}', {int(time.time() * 1000)});\nCOMMIT;\n"
        )
        try:
            db.executescript(script)
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        applied.append(m.name)
        log.info("applied migration %s", m.name)
    return applied


def connect_writer(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open the writer connection (WAL, ``synchronous``) and apply pending migrations."""
    # Used by one thread at a time, but not always the one that opened it: the
    # shared writer commits batches that need no fsync on the event loop
    # (proto.dbwriter).
    # Created 0600 here: SQLite gives its -wal/-shm files the database's mode.
    files.ensure_private_file(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous}",
            "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=5000",
            # no checkpoint inside a commit: the writer runs them on its thread
            "PRAGMA wal_autocheckpoint=0",
        ):
            db.execute(pragma)
        apply_migrations(db)
    except BaseException:
        db.close()
        raise
    return db


def _one(db: sqlite3.Connection, sql: str, params: Sequence[object]) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = db.execute(sql, params).fetchone()
    return row


# ------------------------------------------------------------------- secrets


def get_or_create_secret(db: sqlite3.Connection, name: str, value: bytes, now_ms: int) -> bytes:
    """Insert the secret unless present; return the stored value."""
    db.execute(
        "INSERT INTO node_secrets (name, value, created_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (name, value, now_ms),
    )
    row = _one(db, "SELECT value FROM node_secrets WHERE name = ?", (name,))
    assert row is not None
    return bytes(row[0])


# ------------------------------------------------------------------ accounts


def create_account(
    db: sqlite3.Connection, username: str, password_file: bytes, now_ms: int
) -> None:
    """Create an account; :class:`AlreadyExists` if the name is taken."""
    if _one(db, "SELECT 1 FROM accounts WHERE username = ?", (username,)) is not None:
        raise AlreadyExists("username is taken")
    db.execute("INSERT INTO accounts (username, created_ms) VALUES (?, ?)", (username, now_ms))
    db.execute(
        "INSERT INTO opaque_records (username, password_file) VALUES (?, ?)",
        (username, password_file),
    )


def create_session(
    db: sqlite3.Connection,
    token_hash: bytes,
    username: str,
    device_id: bytes,
    now_ms: int,
    expires_ms: int,
) -> None:
    """Store a session under its token hash."""
    db.execute(
        "INSERT INTO sessions (token_hash, username, device_id, created_ms, expires_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        (token_hash, username, device_id, now_ms, expires_ms),
    )


def delete_session(db: sqlite3.Connection, token_hash: bytes) -> None:
    """Remove a session."""
    db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))


def purge_sessions(db: sqlite3.Connection, now_ms: int) -> int:
    """Delete expired sessions."""
    return db.execute("DELETE FROM sessions WHERE expires_ms <= ?", (now_ms,)).rowcount


# ------------------------------------------------------------------- devices


def upsert_device(db: sqlite3.Connection, device: DeviceRecord, now_ms: int) -> None:
    """Register or re-key a device; :class:`AlreadyExists` if another account holds it."""
    row = _one(db, "SELECT username FROM devices WHERE device_id = ?", (device.device_id,))
    if row is not None and row[0] != device.username:
        raise AlreadyExists("device id is registered to another account")
    db.execute(
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


def delete_device(db: sqlite3.Connection, username: str, device_id: bytes) -> bool:
    """Delete an account's device with its KeyPackages (cascade), sessions and inbox."""
    cur = db.execute(
        "DELETE FROM devices WHERE device_id = ? AND username = ?", (device_id, username)
    )
    if cur.rowcount == 0:
        return False
    db.execute("DELETE FROM sessions WHERE device_id = ?", (device_id,))
    db.execute("DELETE FROM messages WHERE recipient = ?", (device_id,))
    return True


def add_key_packages(
    db: sqlite3.Connection,
    device_id: bytes,
    packages: Sequence[bytes],
    last_resort: bytes | None,
    max_stock: int,
) -> int:
    """Add one-time KeyPackages (and the last-resort one); return the new stock."""
    row = _one(db, "SELECT COUNT(*) FROM key_packages WHERE device_id = ?", (device_id,))
    stock = int(row[0]) if row else 0
    if stock + len(packages) > max_stock:
        raise LimitExceeded(f"KeyPackage stock would exceed {max_stock}")
    db.executemany(
        "INSERT INTO key_packages (device_id, package) VALUES (?, ?)",
        [(device_id, p) for p in packages],
    )
    if last_resort is not None:
        db.execute(
            "INSERT INTO last_resort_key_packages (device_id, package) VALUES (?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET package = excluded.package",
            (device_id, last_resort),
        )
    return stock + len(packages)


def consume_key_package(db: sqlite3.Connection, device_id: bytes) -> tuple[bytes, bool] | None:
    """Delete and return the oldest one-time package, else return the last-resort one."""
    row = _one(
        db,
        "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages"
        " WHERE device_id = ? ORDER BY id LIMIT 1) RETURNING package",
        (device_id,),
    )
    if row is not None:
        return bytes(row[0]), False
    row = _one(db, "SELECT package FROM last_resort_key_packages WHERE device_id = ?", (device_id,))
    return None if row is None else (bytes(row[0]), True)


# ------------------------------------------------------------------ delivery


def depth(db: sqlite3.Connection, recipient: bytes) -> int:
    """Messages waiting in an inbox: ``last_seq - MIN(seq) + 1`` (one index probe).

    Seqs are handed out contiguously and removed oldest-first (ack, retention),
    so the waiting seqs form one range.
    """
    row = _one(
        db,
        "SELECT last_seq + 1 - COALESCE((SELECT MIN(seq) FROM messages WHERE recipient = ?),"
        " last_seq + 1) FROM delivery_seq_counters WHERE recipient = ?",
        (recipient, recipient),
    )
    return int(row[0]) if row else 0


def append(
    db: sqlite3.Connection,
    recipient: bytes,
    channel_id: bytes,
    payload: bytes,
    now_ms: int,
    max_depth: int | None,
) -> int | None:
    """Take the inbox's next seq (atomic UPSERT ... RETURNING) and store the message.

    Returns None, writing nothing, when the inbox already holds ``max_depth``
    messages: the depth check rides on the UPSERT's ``WHERE``. A missing
    counter row means an empty inbox (migration 002 made counters for all
    existing messages).
    """
    limit = 2**62 if max_depth is None else max_depth
    row = _one(
        db,
        "INSERT INTO delivery_seq_counters (recipient, last_seq) VALUES (?, 1)"
        " ON CONFLICT (recipient) DO UPDATE SET last_seq = last_seq + 1"
        " WHERE last_seq + 1 - COALESCE((SELECT MIN(seq) FROM messages"
        " WHERE recipient = excluded.recipient), last_seq + 1) < ?"
        " RETURNING last_seq",
        (recipient, limit),
    )
    if row is None:
        return None
    seq = int(row[0])
    db.execute(
        "INSERT INTO messages (recipient, channel_id, payload, created_ms, seq)"
        " VALUES (?, ?, ?, ?, ?)",
        (recipient, channel_id, payload, now_ms, seq),
    )
    return seq


def enqueue(
    db: sqlite3.Connection,
    recipient: bytes,
    channel_id: bytes,
    payload: bytes,
    now_ms: int,
    max_depth: int,
) -> int:
    """Append one message; :class:`QueueFull` at the depth limit."""
    seq = append(db, recipient, channel_id, payload, now_ms, max_depth)
    if seq is None:
        raise QueueFull("recipient inbox is full")
    return seq


@dataclasses.dataclass(frozen=True, slots=True)
class EnqueueOp:
    """A plain ``enqueue`` as a writer op.

    Like every writer op it is callable on the connection; it also offers
    ``run_many``, which the group commit uses for a run of ops of this type.
    """

    recipient: bytes
    channel_id: bytes
    payload: bytes
    now_ms: int
    max_depth: int

    def __call__(self, db: sqlite3.Connection) -> int:
        return enqueue(
            db, self.recipient, self.channel_id, self.payload, self.now_ms, self.max_depth
        )

    @staticmethod
    def run_many(db: sqlite3.Connection, ops: Sequence[EnqueueOp]) -> list[tuple[bool, Any]]:
        """Consecutive enqueues of one batch: see :func:`enqueue_many`."""
        return enqueue_many(db, ops)


ROWS_PER_INSERT = 150
"""Rows per multi-row INSERT or counter UPSERT (at most 5 parameters each, far
below SQLite's limit)."""


def _upsert_counters(n_rows: int) -> str:
    """Counter UPSERT for ``n_rows`` inboxes, each taking ``excluded.last_seq`` seqs
    when they fit under the depth limit (the last parameter)."""
    return (
        "INSERT INTO delivery_seq_counters (recipient, last_seq) VALUES "  # noqa: S608
        + ", ".join(["(?, ?)"] * n_rows)
        + " ON CONFLICT (recipient) DO UPDATE SET last_seq = last_seq + excluded.last_seq"
        " WHERE last_seq + excluded.last_seq - COALESCE((SELECT MIN(seq) FROM messages"
        " WHERE recipient = excluded.recipient), last_seq + 1) < ?"
        " RETURNING recipient, last_seq"
    )


def enqueue_many(db: sqlite3.Connection, items: Sequence[EnqueueOp]) -> list[tuple[bool, Any]]:
    """Run ``items`` as :func:`enqueue` would one after another, in fewer statements.

    One multi-row counter UPSERT takes every inbox's seqs at once (an inbox is
    in it when all of its items fit under the depth limit, which the UPSERT's
    ``WHERE`` checks; otherwise that inbox's items run one by one, so the
    first ones fit and the rest get :class:`QueueFull` as before), and one
    multi-row INSERT stores up to :data:`ROWS_PER_INSERT` messages. Each
    statement is a GIL hand-off on the writer thread, which the busy event
    loop makes slow (docs/perf/node.md). Only placeholders are joined into
    the SQL text, never a value. Returns ``(ok, seq or error)`` per item.
    """
    outcomes: list[tuple[bool, Any]] = [(False, None)] * len(items)
    groups: dict[bytes, list[int]] = {}  # item indexes per inbox, in order
    for i, it in enumerate(items):
        groups.setdefault(it.recipient, []).append(i)
    by_limit: dict[int, list[bytes]] = {}  # inboxes taking all their seqs at once
    one_by_one: list[bytes] = []
    for recipient, idxs in groups.items():
        max_depth = items[idxs[0]].max_depth
        if len(idxs) <= max_depth and all(items[i].max_depth == max_depth for i in idxs):
            by_limit.setdefault(max_depth, []).append(recipient)
        else:
            one_by_one.append(recipient)
    last: dict[bytes, int] = {}
    for max_depth, inboxes in by_limit.items():
        for start in range(0, len(inboxes), ROWS_PER_INSERT):
            chunk = inboxes[start : start + ROWS_PER_INSERT]
            params: list[object] = [v for r in chunk for v in (r, len(groups[r]))]
            params.append(max_depth)
            for recipient, last_seq in db.execute(_upsert_counters(len(chunk)), params):
                last[bytes(recipient)] = int(last_seq)
        # an inbox without a RETURNING row would overflow: one by one, in order
        one_by_one += [r for r in inboxes if r not in last]
    rows: list[tuple[bytes, bytes, bytes, int, int]] = []
    for recipient, last_seq in last.items():
        idxs = groups[recipient]
        first = last_seq - len(idxs) + 1
        for k, i in enumerate(idxs):
            it = items[i]
            rows.append((recipient, it.channel_id, it.payload, it.now_ms, first + k))
            outcomes[i] = (True, first + k)
    for recipient in one_by_one:
        for i in groups[recipient]:
            try:
                outcomes[i] = (True, items[i](db))
            except QueueFull as exc:
                outcomes[i] = (False, exc)
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk_rows = rows[start : start + ROWS_PER_INSERT]
        db.execute(
            "INSERT INTO messages (recipient, channel_id, payload, created_ms, seq) VALUES "  # noqa: S608
            + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk_rows)),
            [value for r in chunk_rows for value in r],
        )
    return outcomes


def enqueue_commit(
    db: sqlite3.Connection,
    channel_id: bytes,
    epoch: int,
    fanout: Sequence[FanoutItem],
    now_ms: int,
    max_depth: int,
) -> CommitResult:
    """Epoch check, epoch bump and the whole fan-out, or nothing.

    A channel with post capabilities (``commit_channel``) refuses it with
    :class:`PermissionDenied`: this call checks none.
    """
    row = _channel(db, channel_id)
    if row is not None and (row[1] is not None or row[3] is not None):
        raise PermissionDenied("channel uses commitChannel")
    if row is not None and int(row[0]) != epoch:
        raise StaleEpoch(f"channel is at epoch {row[0]}")
    extra: dict[bytes, int] = {}
    for item in fanout:
        extra[item.recipient] = extra.get(item.recipient, 0) + 1
    for recipient, n in extra.items():
        if depth(db, recipient) + n > max_depth:
            raise QueueFull("a recipient inbox is full")
    db.execute(
        "INSERT INTO channels (channel_id, epoch, updated_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (channel_id) DO UPDATE SET epoch = excluded.epoch,"
        " updated_ms = excluded.updated_ms",
        (channel_id, epoch + 1, now_ms),
    )
    seqs = []
    for item in fanout:  # depths were checked above for the whole fan-out
        seq = append(db, item.recipient, channel_id, item.payload, now_ms, None)
        assert seq is not None
        seqs.append(seq)
    return CommitResult(seqs=tuple(seqs), new_epoch=epoch + 1)


def ack(db: sqlite3.Connection, recipient: bytes, upto_seq: int) -> int:
    """Delete an inbox's messages up to ``upto_seq``, and every channel payload
    no inbox refers to any more."""
    rows = db.execute(
        "DELETE FROM messages WHERE recipient = ? AND seq <= ? RETURNING payload_id, welcome_id",
        (recipient, upto_seq),
    ).fetchall()
    shared = {int(r[0]) for r in rows if r[0] is not None}
    for payload_id in shared:
        db.execute(
            "DELETE FROM channel_payloads WHERE id = ?"
            " AND NOT EXISTS (SELECT 1 FROM messages WHERE payload_id = ?)",
            (payload_id, payload_id),
        )
    channels: set[bytes] = set()
    for welcome_id in {int(r[1]) for r in rows if r[1] is not None}:
        gone = db.execute(
            "DELETE FROM channel_welcomes WHERE id = ?"
            " AND NOT EXISTS (SELECT 1 FROM messages WHERE welcome_id = ?) RETURNING channel_id",
            (welcome_id, welcome_id),
        ).fetchall()
        channels.update(bytes(g[0]) for g in gone)
    for channel_id in channels:
        _prune_tree_parts(db, channel_id)
    return len(rows)


def purge_messages(db: sqlite3.Connection, before_ms: int) -> int:
    """Delete messages (and channel payloads) stored before ``before_ms``."""
    n = db.execute("DELETE FROM messages WHERE created_ms < ?", (before_ms,)).rowcount
    db.execute("DELETE FROM channel_payloads WHERE created_ms < ?", (before_ms,))
    db.execute("DELETE FROM channel_welcomes WHERE created_ms < ?", (before_ms,))
    _prune_tree_parts(db, None, idle_before_ms=before_ms)
    return n


# ------------------------------------------------------------- tree chains
# docs/PROTOCOL.md, "Tree deltas". A part is *live* while it is in its
# channel's current chain (from the latest base on, and the chain reaches the
# channel's epoch; with ``idle_before_ms`` also: the channel committed since)
# or a stored Welcome by reference needs it (its epoch lies between the
# latest base at or before the Welcome's epoch and that epoch).
_PRUNE_TREE_PARTS = """
DELETE FROM channel_tree_parts AS p WHERE {where}
AND NOT coalesce(
    p.epoch >= (SELECT max(b.epoch) FROM channel_tree_parts AS b
                WHERE b.channel_id = p.channel_id AND b.base = 1)
    AND EXISTS (SELECT 1 FROM channels AS c JOIN channel_tree_parts AS t
                ON t.channel_id = c.channel_id AND t.epoch = c.epoch
                WHERE c.channel_id = p.channel_id AND c.updated_ms >= ?),
    0
)
AND NOT EXISTS (
    SELECT 1 FROM channel_welcomes AS w
    WHERE w.channel_id = p.channel_id AND w.epoch >= p.epoch AND length(w.ratchet_tree) = 0
    AND NOT EXISTS (SELECT 1 FROM channel_tree_parts AS b
                    WHERE b.channel_id = p.channel_id AND b.base = 1
                    AND b.epoch > p.epoch AND b.epoch <= w.epoch)
)
"""


def _prune_tree_parts(
    db: sqlite3.Connection, channel_id: bytes | None, *, idle_before_ms: int = 0
) -> int:
    """Delete the tree parts of ``channel_id`` (None: of every channel) that
    are no longer live (see above); return how many."""
    if channel_id is None:
        sql = _PRUNE_TREE_PARTS.format(where="p.created_ms < ?")
        params: tuple[object, ...] = (idle_before_ms, idle_before_ms)
    else:
        sql = _PRUNE_TREE_PARTS.format(where="p.channel_id = ?")
        params = (channel_id, idle_before_ms)
    return db.execute(sql, params).rowcount


def _check_delta(db: sqlite3.Connection, channel_id: bytes, epoch: int, size: int) -> None:
    """:class:`TreeBaseRequired` unless the chain holds the part of ``epoch``
    and takes one more delta of ``size`` bytes within the bounds."""
    base = _one(
        db,
        "SELECT epoch, size FROM channel_tree_parts WHERE channel_id = ? AND base = 1"
        " AND epoch <= ? ORDER BY epoch DESC LIMIT 1",
        (channel_id, epoch),
    )
    if base is None:
        raise TreeBaseRequired("no tree base for this channel: send the whole tree")
    row = _one(
        db,
        "SELECT count(*), coalesce(sum(size), 0) FROM channel_tree_parts"
        " WHERE channel_id = ? AND base = 0 AND epoch > ? AND epoch <= ?",
        (channel_id, int(base[0]), epoch),
    )
    assert row is not None
    n, total = int(row[0]), int(row[1])
    if n != epoch - int(base[0]):
        raise TreeBaseRequired("the tree chain is broken: send the whole tree")
    if n + 1 > MAX_TREE_DELTAS or total + size > max(int(base[1]), MIN_DELTA_BUDGET):
        raise TreeBaseRequired("the tree chain is long: send the whole tree")


def _store_tree_part(
    db: sqlite3.Connection, channel_id: bytes, epoch: int, tree: TreePart, now_ms: int
) -> None:
    """Store ``tree`` as the chain's part of ``epoch``."""
    db.execute(
        "INSERT INTO channel_tree_parts (channel_id, epoch, base, size, data, created_ms)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id, epoch) DO UPDATE SET"
        " base = excluded.base, size = excluded.size, data = excluded.data,"
        " created_ms = excluded.created_ms",
        (channel_id, epoch, int(tree.base), len(tree.data), tree.data, now_ms),
    )


# ------------------------------------------------------------- channel logs


def _channel(db: sqlite3.Connection, channel_id: bytes) -> tuple[Any, ...] | None:
    """(epoch, key_hash, key_epoch, committer) of a channel, or None."""
    return _one(
        db,
        "SELECT epoch, key_hash, key_epoch, committer FROM channels WHERE channel_id = ?",
        (channel_id,),
    )


def _key_ok(row: tuple[Any, ...] | None, key_hash: bytes) -> bool:
    """Whether ``key_hash`` is the channel's current post capability hash."""
    if row is None or row[1] is None or row[2] != row[0]:
        return False
    return hmac.compare_digest(bytes(row[1]), key_hash)


def _store_shared(
    db: sqlite3.Connection,
    channel_id: bytes,
    payload: bytes,
    recipients: Sequence[bytes],
    now_ms: int,
    max_depth: int | None,
) -> tuple[int, list[int]]:
    """Store ``payload`` once and one reference per recipient inbox.

    Returns (payload id, seq per recipient; 0 where the inbox was full).
    """
    row = _one(
        db,
        "INSERT INTO channel_payloads (channel_id, payload, created_ms) VALUES (?, ?, ?)"
        " RETURNING id",
        (channel_id, payload, now_ms),
    )
    assert row is not None
    payload_id = int(row[0])
    seqs: list[int] = []
    refs: list[tuple[bytes, int, int, int]] = []
    for recipient in recipients:
        seq = _next_seq(db, recipient, max_depth)
        seqs.append(seq or 0)
        if seq is not None:
            refs.append((recipient, now_ms, seq, payload_id))
    for start in range(0, len(refs), ROWS_PER_INSERT):
        chunk = refs[start : start + ROWS_PER_INSERT]
        db.execute(
            "INSERT INTO messages (recipient, channel_id, payload, created_ms, seq, payload_id)"  # noqa: S608
            " VALUES " + ", ".join(["(?, x'', x'', ?, ?, ?)"] * len(chunk)),
            [v for r in chunk for v in r],
        )
    if not refs:
        db.execute("DELETE FROM channel_payloads WHERE id = ?", (payload_id,))
    return payload_id, seqs


def _next_seq(db: sqlite3.Connection, recipient: bytes, max_depth: int | None) -> int | None:
    """Take the inbox's next seq unless it holds ``max_depth`` messages (see :func:`append`)."""
    limit = 2**62 if max_depth is None else max_depth
    row = _one(
        db,
        "INSERT INTO delivery_seq_counters (recipient, last_seq) VALUES (?, 1)"
        " ON CONFLICT (recipient) DO UPDATE SET last_seq = last_seq + 1"
        " WHERE last_seq + 1 - COALESCE((SELECT MIN(seq) FROM messages"
        " WHERE recipient = excluded.recipient), last_seq + 1) < ?"
        " RETURNING last_seq",
        (recipient, limit),
    )
    return None if row is None else int(row[0])


def post_channel(
    db: sqlite3.Connection,
    channel_id: bytes,
    key_hash: bytes,
    recipients: Sequence[bytes],
    payload: bytes,
    now_ms: int,
    max_depth: int,
) -> tuple[int, ...]:
    """Check the post capability, store the message once, refer to it per recipient.

    A full inbox is skipped (seq 0): one device offline for long must not
    stop its group. :class:`PermissionDenied` when the capability is not the
    channel's current one (nothing stored).
    """
    if not _key_ok(_channel(db, channel_id), key_hash):
        raise PermissionDenied("not the channel's current post key")
    _, seqs = _store_shared(db, channel_id, payload, recipients, now_ms, max_depth)
    return tuple(seqs)


def commit_channel(
    db: sqlite3.Connection,
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
    parts: WelcomeParts | None = None,
    tree: TreePart | None = None,
) -> ChannelCommitResult:
    """Capability and epoch check, epoch bump, commit and Welcome each stored once.

    With ``parts`` the Welcome goes by reference (:func:`_store_welcome_parts`);
    ``tree`` joins the channel's tree chain as the part of ``epoch + 1``
    (:class:`TreeBaseRequired` for a delta the chain cannot take).

    All or nothing: :class:`StaleEpoch` (wrong epoch), :class:`PermissionDenied`
    (not the current post key of a keyed channel, or a channel without
    capabilities), :class:`QueueFull` (a recipient inbox is full).
    """
    row = _channel(db, channel_id)
    if row is not None:
        if row[1] is None and row[3] is None:
            raise PermissionDenied("channel was made without post capabilities")
        if int(row[0]) != epoch:
            raise StaleEpoch(f"channel is at epoch {row[0]}")
        if key_hash is None or not _key_ok(row, key_hash):
            raise PermissionDenied("not the channel's current post key")
    extra: dict[bytes, int] = {}
    for r in [*members, *(joiners if welcome or parts is not None else ())]:
        extra[r] = extra.get(r, 0) + 1
    for recipient, n in extra.items():
        if depth(db, recipient) + n > max_depth:
            raise QueueFull("a recipient inbox is full")
    if tree is not None and not tree.base:
        _check_delta(db, channel_id, epoch, len(tree.data))
    db.execute(
        "INSERT INTO channels (channel_id, epoch, updated_ms, key_hash, key_epoch, committer)"
        " VALUES (?, ?, ?, NULL, NULL, ?)"
        " ON CONFLICT (channel_id) DO UPDATE SET epoch = excluded.epoch,"
        " updated_ms = excluded.updated_ms, key_hash = NULL, key_epoch = NULL,"
        " committer = excluded.committer",
        (channel_id, epoch + 1, now_ms, committer),
    )
    commit_seqs: list[int] = []
    welcome_seqs: list[int] = []
    if members:
        _, commit_seqs = _store_shared(db, channel_id, commit, members, now_ms, None)
    if welcome and joiners:
        _, welcome_seqs = _store_shared(db, channel_id, welcome, joiners, now_ms, None)
    elif parts is not None and joiners:
        welcome_seqs = _store_welcome_parts(db, channel_id, epoch + 1, parts, joiners, now_ms)
    if tree is not None:
        _store_tree_part(db, channel_id, epoch + 1, tree, now_ms)
    if tree is None or tree.base:
        _prune_tree_parts(db, channel_id)
    return ChannelCommitResult(
        new_epoch=epoch + 1, commit_seqs=tuple(commit_seqs), welcome_seqs=tuple(welcome_seqs)
    )


def _store_welcome_parts(
    db: sqlite3.Connection,
    channel_id: bytes,
    epoch: int,
    parts: WelcomeParts,
    joiners: Sequence[bytes],
    now_ms: int,
) -> list[int]:
    """Store a Welcome's shared parts once for ``epoch`` and each joiner's own
    entry, referring to them; returns the joiners' seqs (depths were checked)."""
    row = _one(
        db,
        "INSERT INTO channel_welcomes (channel_id, epoch, group_info, ratchet_tree, created_ms)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel_id, epoch) DO UPDATE SET"
        " group_info = excluded.group_info, ratchet_tree = excluded.ratchet_tree,"
        " created_ms = excluded.created_ms RETURNING id",
        (channel_id, epoch, parts.group_info, b"", now_ms),
    )
    assert row is not None
    welcome_id = int(row[0])
    seqs: list[int] = []
    for joiner, entry in zip(joiners, parts.entries, strict=True):
        seq = _next_seq(db, joiner, None)
        assert seq is not None
        db.execute(
            "INSERT INTO messages (recipient, channel_id, payload, created_ms, seq, welcome_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (joiner, channel_id, entry, now_ms, seq, welcome_id),
        )
        seqs.append(seq)
    return seqs


def set_channel_key(
    db: sqlite3.Connection, channel_id: bytes, epoch: int, committer: bytes, key_hash: bytes
) -> None:
    """Set the post capability hash of ``epoch``: only by its committer, only once.

    :class:`StaleEpoch` when ``epoch`` is not current; :class:`PermissionDenied`
    from another device or when the key is already set.
    """
    row = _channel(db, channel_id)
    if row is None or int(row[0]) != epoch:
        raise StaleEpoch("not the channel's current epoch")
    if row[3] is None or not hmac.compare_digest(bytes(row[3]), committer) or row[1] is not None:
        raise PermissionDenied("only the committer of this epoch sets its key, once")
    db.execute(
        "UPDATE channels SET key_hash = ?, key_epoch = ? WHERE channel_id = ?",
        (key_hash, epoch, channel_id),
    )
