"""A client profile: one account's keys and history, encrypted at rest.

Layout of a profile directory (mode 0700, every file 0600)::

    profile.json   metadata: format, Argon2id params, salt, verifier, wrapped root key
    client.db      SQLite (aiosqlite): every value encrypted with the root key's
                   record cipher (see proto.crypto.atrest); no plaintext secret,
                   message text, sender or channel id is ever written
    mls.db         MLS state (written by the MLS binding with :attr:`Profile.mls_storage_key`)

Opening checks the passphrase against the verifier *before* the database is
opened, so a wrong passphrase raises :class:`~proto.errors.WrongPassphrase` and
leaves every file byte-identical. The passphrase only wraps a random root key,
so :meth:`Profile.change_passphrase` rewrites ``profile.json`` and nothing else.

Every write goes through one group-committing writer (:mod:`tui.client.dbwriter`):
concurrent writes share a transaction, each caller resumes only after its
write committed, and writes apply in call order. Writes are durable (fsynced)
except the history appends of sent messages (:meth:`Profile.queue_message`),
which are crash-safe and become durable with the next durable write; a
received batch commits durably with the engine state
(:meth:`Profile.commit_received`).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite
import platformdirs

from proto import files
from proto.crypto.atrest import (
    DEFAULT_PARAMS,
    KEY_BYTES,
    SALT_BYTES,
    KdfParams,
    MasterKey,
    StorageKeys,
    new_salt,
)
from proto.crypto.envelope import HybridPrivateKey
from proto.crypto.identity import IdentityKey
from proto.errors import DecryptionFailed, ProfileError
from tui.client.dbwriter import GroupWriter
from tui.client.search import (
    SEGMENT_ROWS,
    IndexedMessage,
    SearchIndex,
    SegmentDamaged,
    decode_segment,
    encode_segment,
    query_terms,
)

__all__ = [
    "CLIENT_DB",
    "META_FILE",
    "MLS_DB",
    "ChatMessage",
    "MessageChange",
    "Profile",
    "ScrubHook",
    "default_profile_dir",
]

META_FILE = "profile.json"
"""Name of the metadata file inside a profile directory."""
CLIENT_DB = "client.db"
"""Name of the client database."""
MLS_DB = "mls.db"
"""Name reserved for the MLS binding's state file."""

SECRET_IDENTITY = "device.identity"  # noqa: S105 (a name, not a secret)
"""Secret name of the device's Ed25519 private key."""
SECRET_HYBRID = "device.hybrid"  # noqa: S105 (a name, not a secret)
"""Secret name of the device's X-Wing private key."""

_FORMAT = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_tag BLOB NOT NULL,
    record      BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel_tag, id);
CREATE TABLE IF NOT EXISTS search_segments (
    first_id INTEGER PRIMARY KEY,
    last_id  INTEGER NOT NULL,
    blob     BLOB NOT NULL
) STRICT;
"""
_MIGRATIONS: tuple[str, ...] = (
    # 1: message ids shared by every member (blind index, for edits/reactions/deletes)
    "ALTER TABLE messages ADD COLUMN mid_tag BLOB;"
    "CREATE INDEX IF NOT EXISTS messages_by_mid ON messages (mid_tag);",
)
"""History schema migrations; ``PRAGMA user_version`` counts those applied."""


def default_profile_dir(name: str = "default") -> Path:
    """``<platform user data dir>/quicnprotochat/profiles/<name>``."""
    return platformdirs.user_data_path("quicnprotochat") / "profiles" / name


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """One message in a channel's local history (stored encrypted)."""

    channel_id: bytes
    """The channel (MLS group id)."""
    sender: bytes
    """Sender device id (Ed25519 public key); ours for outgoing messages."""
    sender_name: str
    """Sender's username as known when stored."""
    timestamp_ms: int
    """When it was sent or received (Unix milliseconds)."""
    text: str
    """The message text."""
    outgoing: bool = False
    """True for messages this device sent."""
    local_id: int = 0
    """Position in local history (set by the store; 0 before storing)."""
    msg_id: bytes = b""
    """The id every member computes (:func:`proto.appdata.message_id`); empty for legacy rows."""
    reply_to: bytes = b""
    """The parent's message id, or empty."""
    action: bool = False
    """An action (``/me``)."""
    edited: bool = False
    """The author edited the text."""
    deleted: bool = False
    """The author deleted it: a tombstone, the text is gone."""
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """``(emoji, usernames)`` pairs, in first-reaction order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageChange:
    """An edit, delete or reaction to apply to a stored message (by message id)."""

    channel_id: bytes
    """The channel."""
    target: bytes
    """The message id."""
    actor: str
    """Username (MLS credential identity) of whoever sent the change."""
    kind: str
    """``edit``, ``delete``, ``react`` or ``unreact``."""
    text: str = ""
    """New text (``edit``)."""
    emoji: str = ""
    """The emoji (``react``/``unreact``)."""


ScrubHook = Callable[[sqlite3.Connection, bytes, int], None]
"""Called inside the transaction that scrubs a message: (connection, channel tag, local id)."""

_log = logging.getLogger(__name__)

_TailEntry = tuple[bytes, str, bytes]
"""An unsealed history row this process knows: (channel tag, casefolded text, record)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(meta: dict[str, object], key: str) -> bytes:
    value = meta.get(key)
    if not isinstance(value, str):
        raise ProfileError(f"profile metadata: missing {key}")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise ProfileError(f"profile metadata: bad {key}") from exc


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, durable."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_meta(path: Path) -> dict[str, object]:
    try:
        raw = (path / META_FILE).read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"no profile at {path}") from None
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise ProfileError("profile metadata is not valid JSON") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ProfileError("profile metadata has an unsupported format")
    return meta


@contextlib.contextmanager
def _db_errors() -> Iterator[None]:
    """Translate sqlite errors (disk full, damaged file, ...) at the adapter boundary."""
    try:
        yield
    except sqlite3.Error as exc:
        raise ProfileError(f"client database error: {exc}") from exc


def _encode_message(msg: ChatMessage) -> bytes:
    doc: dict[str, object] = {
        "sender": msg.sender.hex(),
        "name": msg.sender_name,
        "ts": msg.timestamp_ms,
        "text": msg.text,
        "out": msg.outgoing,
    }
    if msg.msg_id:
        doc["mid"] = msg.msg_id.hex()
    if msg.reply_to:
        doc["reply"] = msg.reply_to.hex()
    if msg.action:
        doc["act"] = True
    if msg.edited:
        doc["ed"] = True
    if msg.deleted:
        doc["del"] = True
    if msg.reactions:
        doc["rx"] = [[e, list(users)] for e, users in msg.reactions]
    return json.dumps(doc, separators=(",", ":")).encode()


def _decode_message(channel_id: bytes, local_id: int, data: bytes) -> ChatMessage:
    try:
        d = json.loads(data)
        return ChatMessage(
            channel_id=channel_id,
            sender=bytes.fromhex(d["sender"]),
            sender_name=str(d["name"]),
            timestamp_ms=int(d["ts"]),
            text=str(d["text"]),
            outgoing=bool(d["out"]),
            local_id=local_id,
            msg_id=bytes.fromhex(d.get("mid", "")),
            reply_to=bytes.fromhex(d.get("reply", "")),
            action=bool(d.get("act", False)),
            edited=bool(d.get("ed", False)),
            deleted=bool(d.get("del", False)),
            reactions=tuple((str(e), tuple(str(u) for u in us)) for e, us in d.get("rx", [])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ProfileError("a stored message is damaged") from exc


async def _migrate(db: aiosqlite.Connection) -> None:
    """Apply the history schema migrations not applied yet (each in one transaction)."""
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
        await db.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")


def _react(
    current: tuple[tuple[str, tuple[str, ...]], ...], emoji: str, user: str, kind: str
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    seen = False
    for e, users in current:
        if e == emoji:
            seen = True
            users = tuple(u for u in users if u != user)
            if kind == "react":
                users = (*users, user)
        if users:
            out.append((e, users))
    if not seen and kind == "react":
        out.append((emoji, (user,)))
    return tuple(out)


class Profile:
    """An unlocked profile. Create with :meth:`create` or :meth:`open`; close when done."""

    def __init__(
        self,
        path: Path,
        meta: dict[str, object],
        keys: StorageKeys,
        *,
        persist_search_index: bool = True,
    ) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        self._path = path
        self._meta = meta
        self._keys = keys
        self._db: aiosqlite.Connection | None = None
        self._writer: GroupWriter | None = None
        self._search = SearchIndex()
        self._search_lock = asyncio.Lock()
        self._scrub_hooks: list[ScrubHook] = [self.forget_indexed]
        # The persistent search index (see "search" below). Segment bounds are
        # mutated only inside writer ops; the tail is a cache of unsealed rows.
        self._persist = persist_search_index
        self._seg_through = 0
        """Highest id the segments cover, as last seen (the database is authoritative)."""
        self._tail: dict[int, _TailEntry] = {}
        self._tail_ready = False
        self._tail_checked = False
        self._segments_loaded = False

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def exists(path: Path) -> bool:
        """Whether ``path`` holds a profile (its metadata file exists)."""
        return (path / META_FILE).is_file()

    @classmethod
    async def create(
        cls,
        path: Path,
        passphrase: str | bytes,
        *,
        kdf: KdfParams = DEFAULT_PARAMS,
        persist_search_index: bool = True,
    ) -> Profile:
        """Create a new, empty profile in ``path`` and return it unlocked.

        ``persist_search_index=False`` keeps the search index in memory only
        (the benchmark's baseline; see :meth:`search_messages`).

        Raises:
            ProfileError: a profile (or a stray client database) already exists there.
        """
        path = Path(path)
        if cls.exists(path) or (path / CLIENT_DB).exists():
            raise ProfileError(f"a profile already exists at {path}")
        if not passphrase:
            raise ProfileError("the passphrase must not be empty")
        files.private_dir(path)
        salt = new_salt()
        master = await asyncio.to_thread(MasterKey.derive, passphrase, salt, kdf)
        root = os.urandom(KEY_BYTES)
        meta: dict[str, object] = {
            "format": _FORMAT,
            "kdf": kdf.to_dict(),
            "salt": _b64(salt),
            "verifier": _b64(master.verifier()),
            "wrapped_root": _b64(master.wrap(root)),
        }
        await asyncio.to_thread(_write_private, path / META_FILE, json.dumps(meta).encode())
        profile = cls(
            path, meta, StorageKeys.from_root(root), persist_search_index=persist_search_index
        )
        await profile._connect()
        return profile

    @classmethod
    async def open(
        cls, path: Path, passphrase: str | bytes, *, persist_search_index: bool = True
    ) -> Profile:
        """Unlock an existing profile.

        Raises:
            ProfileError: no profile there, or its metadata is damaged.
            WrongPassphrase: the passphrase is wrong (nothing was touched).
        """
        path = Path(path)
        meta = _read_meta(path)
        master = await cls._unlock(meta, passphrase)
        try:
            root = master.unwrap(_unb64(meta, "wrapped_root"))
        except DecryptionFailed as exc:
            raise ProfileError("profile root key is damaged") from exc
        profile = cls(
            path, meta, StorageKeys.from_root(root), persist_search_index=persist_search_index
        )
        await profile._connect()
        return profile

    @staticmethod
    async def _unlock(meta: dict[str, object], passphrase: str | bytes) -> MasterKey:
        params = KdfParams.from_dict(meta.get("kdf"))
        salt = _unb64(meta, "salt")
        verifier = _unb64(meta, "verifier")
        if len(salt) != SALT_BYTES or len(verifier) != KEY_BYTES:
            raise ProfileError("profile metadata: bad salt or verifier length")
        master = await asyncio.to_thread(MasterKey.derive, passphrase, salt, params)
        master.check(verifier)
        return master

    async def _connect(self) -> None:
        db_path = self._path / CLIENT_DB
        # Create the file ourselves so it is 0600 from the first byte; SQLite gives
        # its -wal/-shm/-journal files the database's mode.
        files.ensure_private_file(db_path)
        db = await aiosqlite.connect(db_path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA secure_delete=ON")
            await db.executescript(_SCHEMA)
            await db.commit()
            await _migrate(db)
            async with db.execute(
                "SELECT first_id, last_id FROM search_segments ORDER BY first_id"
            ) as cur:
                bounds = list(await cur.fetchall())
        except sqlite3.Error as exc:
            await db.close()
            raise ProfileError(f"client database unusable: {exc}") from exc
        self._db = db
        self._seg_through = max((int(b[1]) for b in bounds), default=0)
        try:
            self._writer = await GroupWriter.open(db_path)
        except ProfileError:
            await db.close()
            self._db = None
            raise

    async def close(self) -> None:
        """Close the database (idempotent)."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> Profile:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def change_passphrase(
        self, old: str | bytes, new: str | bytes, *, kdf: KdfParams | None = None
    ) -> None:
        """Re-wrap the root key under a new passphrase (and optionally new KDF costs).

        Raises:
            WrongPassphrase: ``old`` is wrong (nothing changes).
        """
        if not new:
            raise ProfileError("the passphrase must not be empty")
        old_master = await self._unlock(self._meta, old)
        root = old_master.unwrap(_unb64(self._meta, "wrapped_root"))
        params = kdf or KdfParams.from_dict(self._meta.get("kdf"))
        salt = new_salt()
        master = await asyncio.to_thread(MasterKey.derive, new, salt, params)
        meta: dict[str, object] = {
            "format": _FORMAT,
            "kdf": params.to_dict(),
            "salt": _b64(salt),
            "verifier": _b64(master.verifier()),
            "wrapped_root": _b64(master.wrap(root)),
        }
        await asyncio.to_thread(_write_private, self._path / META_FILE, json.dumps(meta).encode())
        self._meta = meta

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        """The profile directory."""
        return self._path

    @property
    def mls_state_path(self) -> Path:
        """Where the MLS binding keeps its (encrypted) state."""
        return self._path / MLS_DB

    @property
    def mls_storage_key(self) -> bytes:
        """32-byte key for the MLS storage codec (derived from the root key)."""
        return self._keys.mls_storage_key

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise ProfileError("profile is closed")
        return self._db

    @property
    def _write(self) -> GroupWriter:
        """The group-committing writer (every write goes through it; see ``dbwriter``)."""
        if self._writer is None:
            raise ProfileError("profile is closed")
        return self._writer

    async def _query(self, sql: str, params: tuple[object, ...]) -> list[sqlite3.Row]:
        with _db_errors():
            async with self._conn.execute(sql, params) as cur:
                return list(await cur.fetchall())

    # ------------------------------------------------------------------ secrets

    async def put_secret(self, name: str, value: bytes) -> None:
        """Store (or replace) an encrypted secret under ``name``."""
        blob = self._keys.records.encrypt(value, table="secrets", column="value", row=name)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, blob),
            )

        await self._write.write(op)

    async def get_secret(self, name: str) -> bytes | None:
        """The secret stored under ``name``, or None.

        Raises:
            DecryptionFailed: the stored value was tampered with or moved.
        """
        rows = await self._query("SELECT value FROM secrets WHERE name = ?", (name,))
        if not rows:
            return None
        return self._keys.records.decrypt(
            bytes(rows[0][0]), table="secrets", column="value", row=name
        )

    async def delete_secret(self, name: str) -> None:
        """Remove a secret (no error if absent)."""
        await self._write.write(
            lambda conn: conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
        )

    async def put_identity(self, key: IdentityKey) -> None:
        """Store the device's Ed25519 identity key."""
        await self.put_secret(SECRET_IDENTITY, key.private_bytes())

    async def get_identity(self) -> IdentityKey | None:
        """The device's Ed25519 identity key, if created."""
        raw = await self.get_secret(SECRET_IDENTITY)
        return None if raw is None else IdentityKey.from_private_bytes(raw)

    async def put_hybrid_key(self, key: HybridPrivateKey) -> None:
        """Store the device's X-Wing private key."""
        await self.put_secret(SECRET_HYBRID, key.private_bytes())

    async def get_hybrid_key(self) -> HybridPrivateKey | None:
        """The device's X-Wing private key, if created."""
        raw = await self.get_secret(SECRET_HYBRID)
        return None if raw is None else HybridPrivateKey.from_private_bytes(raw)

    # ------------------------------------------------------------------ messages

    def _channel_tag(self, channel_id: bytes) -> bytes:
        return self._keys.blind_index("channel", channel_id)

    @staticmethod
    def _row(tag: bytes, local_id: int) -> bytes:
        return tag + struct.pack(">Q", local_id)

    async def append_message(self, msg: ChatMessage) -> int:
        """Append to the channel's history; returns the message's ``local_id``.

        Crash-safe once this returns (see :meth:`queue_message`).
        """
        return await asyncio.shield(self.queue_message(msg))

    def queue_message(self, msg: ChatMessage) -> asyncio.Future[int]:
        """Queue an append now; the future gives the ``local_id`` once committed.

        Appends (and other writes) apply in call order; queueing several and
        then awaiting them commits them together. An append is committed
        crash-safe (it survives the process being killed, without an fsync) and
        becomes durable against power loss with the next durable write, such
        as :meth:`tui.client.state.EngineState.save`.
        """
        insert = self._inserter(msg)

        def op(conn: sqlite3.Connection) -> int:
            return insert(conn)

        return self._write.submit(op, durable=False)

    def _inserter(self, msg: ChatMessage) -> Callable[[sqlite3.Connection], int]:
        """A write op appending ``msg`` (encrypted) to the history; returns its local id."""
        tag = self._channel_tag(msg.channel_id)
        plain = _encode_message(msg)
        # The row id is bound into the AEAD associated data, so history rows cannot
        # be reordered or moved between channels; it is known only after INSERT,
        # and both statements commit together (in the writer's group commit).
        records = self._keys.records

        mid_tag = self._mid_tag(msg.msg_id) if msg.msg_id else None
        folded = msg.text.casefold()
        persist = self._persist

        def insert(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO messages (channel_tag, record, mid_tag) VALUES (?, x'', ?) "
                "RETURNING id",
                (tag, mid_tag),
            )
            row = cur.fetchone()
            cur.close()
            assert row is not None
            local_id = int(row[0])
            record = records.encrypt(
                plain, table="messages", column="record", row=self._row(tag, local_id)
            )
            conn.execute("UPDATE messages SET record = ? WHERE id = ?", (record, local_id))
            if persist:
                self._tail[local_id] = (tag, folded, record)
                self._ix_after_insert(conn, local_id)
            return local_id

        return insert

    def _mid_tag(self, msg_id: bytes) -> bytes:
        return self._keys.blind_index("message", msg_id)

    def _find(
        self, conn: sqlite3.Connection, channel_id: bytes, msg_id: bytes
    ) -> ChatMessage | None:
        """The stored message with id ``msg_id`` in the channel (inside a write op)."""
        tag = self._channel_tag(channel_id)
        row = conn.execute(
            "SELECT id, record FROM messages WHERE mid_tag = ? AND channel_tag = ? "
            "ORDER BY id LIMIT 1",
            (self._mid_tag(msg_id), tag),
        ).fetchone()
        if row is None:
            return None
        local_id = int(row[0])
        plain = self._keys.records.decrypt(
            bytes(row[1]), table="messages", column="record", row=self._row(tag, local_id)
        )
        return _decode_message(channel_id, local_id, plain)

    def _rewrite(self, conn: sqlite3.Connection, msg: ChatMessage) -> None:
        tag = self._channel_tag(msg.channel_id)
        record = self._keys.records.encrypt(
            _encode_message(msg),
            table="messages",
            column="record",
            row=self._row(tag, msg.local_id),
        )
        conn.execute("UPDATE messages SET record = ? WHERE id = ?", (record, msg.local_id))

    def add_scrub_hook(self, hook: ScrubHook) -> None:
        """Run ``hook`` inside every transaction that scrubs a message's text.

        A search index keeps its own copy of message text; it registers a
        hook here that removes the message's rows, so a delete leaves the
        text in no table (the hook and the scrub commit together).
        """
        self._scrub_hooks.append(hook)

    def _scrub(self, conn: sqlite3.Connection, msg: ChatMessage) -> ChatMessage:
        """Replace the row with a tombstone (no text, no reactions) and run the hooks.

        ``secure_delete`` is on, so SQLite overwrites the freed bytes.
        """
        gone = dataclasses.replace(msg, text="", deleted=True, edited=False, reactions=())
        self._rewrite(conn, gone)
        tag = self._channel_tag(msg.channel_id)
        self._ix_set_text(conn, msg.local_id, "")
        for hook in self._scrub_hooks:
            hook(conn, tag, msg.local_id)
        return gone

    async def scrub_message(self, channel_id: bytes, msg_id: bytes) -> ChatMessage | None:
        """Delete a message's text from the store (a tombstone stays); None if not stored."""

        def op(conn: sqlite3.Connection) -> ChatMessage | None:
            msg = self._find(conn, channel_id, msg_id)
            return None if msg is None else self._scrub(conn, msg)

        gone = await self._write.write(op)
        await self.purge_wal()
        return gone

    async def purge_wal(self) -> None:
        """Checkpoint and truncate the WAL after a scrub (see ``GroupWriter.purge_wal``)."""
        await self._write.purge_wal()

    def _changer(self, change: MessageChange) -> Callable[[sqlite3.Connection], ChatMessage | None]:
        """A write op applying ``change``; returns the changed message, or None if
        the target is unknown, deleted, or the actor may not do it (edit and
        delete only by the author's credential)."""

        def op(conn: sqlite3.Connection) -> ChatMessage | None:
            msg = self._find(conn, change.channel_id, change.target)
            if msg is None or msg.deleted:
                return None
            if change.kind in ("edit", "delete") and change.actor != msg.sender_name:
                return None
            if change.kind == "delete":
                return self._scrub(conn, msg)
            if change.kind == "edit":
                new = dataclasses.replace(msg, text=change.text, edited=True)
                self._search.replace(msg.local_id, change.text)
                self._rewrite(conn, new)
                self._ix_set_text(conn, msg.local_id, change.text)
                return new
            new = dataclasses.replace(
                msg, reactions=_react(msg.reactions, change.emoji, change.actor, change.kind)
            )
            self._rewrite(conn, new)
            return new

        return op

    async def apply_change(self, change: MessageChange) -> ChatMessage | None:
        """Apply one change now (durably); see :meth:`_changer` for the rules."""
        changed = await self._write.write(self._changer(change))
        if changed is not None and changed.deleted:
            await self.purge_wal()
        return changed

    async def find_message(self, channel_id: bytes, msg_id: bytes) -> ChatMessage | None:
        """The stored message with id ``msg_id`` in the channel, if any."""
        return await self._write.write(lambda conn: self._find(conn, channel_id, msg_id))

    async def commit_received(
        self, messages: Sequence[ChatMessage], secret: str, value: bytes
    ) -> list[int]:
        """Append ``messages`` and replace the secret ``secret`` in ONE durable transaction.

        See :meth:`commit_batch`; returns the messages' local ids, in order.
        """
        ids, _ = await self.commit_batch(messages, (), secret, value)
        return ids

    async def commit_batch(
        self,
        messages: Sequence[ChatMessage],
        changes: Sequence[MessageChange],
        secret: str,
        value: bytes,
    ) -> tuple[list[int], list[ChatMessage]]:
        """Append ``messages`` and replace the secret ``secret`` in ONE durable transaction.

        The inbox stores a batch's received messages together with the engine
        state (its cursor): either both are on disk (fsynced) or neither is.
        ``changes`` (edits, deletes, reactions) apply after the appends, so a
        change may target a message of the same batch. Returns the messages'
        local ids, in order, and the messages the changes changed.
        """
        inserts = [self._inserter(m) for m in messages]
        blob = self._keys.records.encrypt(value, table="secrets", column="value", row=secret)
        changers = [self._changer(c) for c in changes]

        def op(conn: sqlite3.Connection) -> tuple[list[int], list[ChatMessage]]:
            ids = [insert(conn) for insert in inserts]
            changed = [m for m in (ch(conn) for ch in changers) if m is not None]
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (secret, blob),
            )
            return ids, changed

        return await self._write.write(op)

    async def list_messages(
        self, channel_id: bytes, *, limit: int = 100, before_id: int | None = None
    ) -> list[ChatMessage]:
        """Up to ``limit`` most recent messages of a channel (before ``before_id``), oldest first.

        Raises:
            DecryptionFailed: a stored message was tampered with or moved.
        """
        tag = self._channel_tag(channel_id)
        upper = before_id if before_id is not None else 2**63 - 1
        rows = await self._query(
            "SELECT id, record FROM messages WHERE channel_tag = ? AND id < ? "
            "ORDER BY id DESC LIMIT ?",
            (tag, upper, limit),
        )
        out = []
        for local_id, blob in reversed(rows):
            plain = self._keys.records.decrypt(
                bytes(blob), table="messages", column="record", row=self._row(tag, int(local_id))
            )
            out.append(_decode_message(channel_id, int(local_id), plain))
        return out

    # ------------------------------------------------------------------ search
    #
    # The search index (tui.client.search) is held in memory and kept on disk
    # as encrypted segments (table search_segments): segment (first_id,
    # last_id) holds the casefolded text of every history row with an id in
    # that range, except rows without text; the segments tile 1..covered
    # without gaps. Rows above ``covered`` are the tail: a new process
    # decrypts them one by one, and once there are SEGMENT_ROWS of them the
    # write that stores the last one seals them into a new segment (from the
    # plaintext this process already has, checked against the stored record).
    # A delete or edit rewrites the segment holding the row in its own
    # transaction, so the text leaves the index when it leaves the history.

    @property
    def search_index(self) -> SearchIndex:
        """The in-memory search index (see :mod:`tui.client.search`).

        Whatever deletes or rewrites a stored message calls its ``forget`` or
        ``replace`` with the message's local id.
        """
        return self._search

    @property
    def search_segments_through(self) -> int:
        """Highest local id covered by the sealed segments (0: none)."""
        return self._seg_through

    @staticmethod
    def _covered(conn: sqlite3.Connection) -> int:
        """Writer op: highest id the stored segments cover (0: none)."""
        row = conn.execute(
            "SELECT last_id FROM search_segments ORDER BY first_id DESC LIMIT 1"
        ).fetchone()
        return 0 if row is None else int(row[0])

    def forget_indexed(self, conn: sqlite3.Connection, tag: bytes, local_id: int) -> None:
        """Scrub hook (runs in the writer's transaction): a deleted message leaves the
        in-memory index (its segment was rewritten by :meth:`_scrub` already).

        ``conn`` and ``tag`` are unused.
        """
        del conn, tag
        self._search.forget(local_id)

    @staticmethod
    def _segment_row(first_id: int, last_id: int) -> bytes:
        return struct.pack(">QQ", first_id, last_id)

    def _seal_blob(self, first_id: int, last_id: int, payload: bytes) -> bytes:
        return self._keys.records.encrypt(
            payload,
            table="search_segments",
            column="blob",
            row=self._segment_row(first_id, last_id),
        )

    def _open_segment(
        self, first_id: int, last_id: int, blob: bytes
    ) -> tuple[list[int], list[bytes], list[str]]:
        """Decrypt and decode one segment.

        Raises:
            DecryptionFailed, SegmentDamaged: the stored segment is damaged.
        """
        plain = self._keys.records.decrypt(
            blob, table="search_segments", column="blob", row=self._segment_row(first_id, last_id)
        )
        ids, tags, texts = decode_segment(plain)
        if ids and (ids[0] < first_id or ids[-1] > last_id):
            raise SegmentDamaged("segment ids outside its range")
        return ids, tags, texts

    def _folded_rows(self, rows: Sequence[sqlite3.Row]) -> tuple[list[int], list[bytes], list[str]]:
        """Casefolded text of history rows ``(id, channel_tag, record)``: from the
        tail when the stored record is the one this process saw, else decrypted."""
        ids: list[int] = []
        tags: list[bytes] = []
        texts: list[str] = []
        tail = self._tail
        for local_id, tag, blob in rows:
            local_id, tag, blob = int(local_id), bytes(tag), bytes(blob)
            known = tail.get(local_id)
            if known is not None and known[2] == blob and known[0] == tag:
                text = known[1]
            else:
                text = self._decrypt_text(local_id, tag, blob).casefold()
            if text:
                ids.append(local_id)
                tags.append(tag)
                texts.append(text)
        return ids, tags, texts

    def _decrypt_text(self, local_id: int, tag: bytes, blob: bytes) -> str:
        plain = self._keys.records.decrypt(
            blob, table="messages", column="record", row=self._row(tag, local_id)
        )
        try:
            return str(json.loads(plain)["text"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProfileError("a stored message is damaged") from exc

    def _ix_seal(self, conn: sqlite3.Connection) -> bool:
        """Writer op: seal the next SEGMENT_ROWS tail rows into a segment, if there are
        that many. Reads the rows in this transaction, so the segment is what is stored."""
        covered = self._covered(conn)
        self._seg_through = covered
        rows = conn.execute(
            "SELECT id, channel_tag, record FROM messages WHERE id > ? ORDER BY id LIMIT ?",
            (covered, SEGMENT_ROWS),
        ).fetchall()
        if len(rows) < SEGMENT_ROWS:
            return False
        first_id, last_id = covered + 1, int(rows[-1][0])
        ids, tags, texts = self._folded_rows(rows)
        blob = self._seal_blob(first_id, last_id, encode_segment(ids, tags, texts))
        conn.execute(
            "INSERT INTO search_segments (first_id, last_id, blob) VALUES (?, ?, ?)",
            (first_id, last_id, blob),
        )
        self._seg_through = last_id
        for row in rows:
            self._tail.pop(int(row[0]), None)
        return True

    def _ix_after_insert(self, conn: sqlite3.Connection, local_id: int) -> None:
        """Writer op tail: seal a segment once the tail is SEGMENT_ROWS long.

        Sealing decrypts the tail rows this process did not store itself; a
        profile with a long unindexed history (one from before the index, or
        whose segments were dropped as damaged) is sealed by the next search
        instead, so a write never stalls on a rebuild.
        """
        if not self._tail_ready:
            if self._tail_checked:
                return
            self._tail_checked = True
            (count,) = conn.execute(
                "SELECT count(*) FROM messages WHERE id > ?", (self.search_segments_through,)
            ).fetchone()
            if int(count) > 2 * SEGMENT_ROWS:
                return
            self._tail_ready = True
        if local_id - self.search_segments_through >= SEGMENT_ROWS:
            try:
                while self._ix_seal(conn):
                    pass
            except (DecryptionFailed, ProfileError):
                # A damaged history record: the write itself must not fail. The
                # search that meets the record reports it; stop sealing here.
                _log.warning("search index: a stored message is damaged; not sealing")
                self._tail_ready = False

    def _ix_set_text(self, conn: sqlite3.Connection, local_id: int, text: str) -> None:
        """Writer op: the row's text is now ``text`` (an edit; empty: deleted).

        Rewrites the segment holding the row (a fresh nonce; ``secure_delete``
        overwrites the old bytes). A damaged segment is rebuilt from the
        history rows, which already hold the new text.
        """
        self._tail.pop(local_id, None)
        seg = conn.execute(
            "SELECT first_id, last_id, blob FROM search_segments WHERE first_id <= ? "
            "ORDER BY first_id DESC LIMIT 1",
            (local_id,),
        ).fetchone()
        if seg is None or int(seg[1]) < local_id:
            return
        first_id, last_id = int(seg[0]), int(seg[1])
        try:
            ids, tags, texts = self._open_segment(first_id, last_id, bytes(seg[2]))
            at = bisect.bisect_left(ids, local_id)
            present = at < len(ids) and ids[at] == local_id
            folded = text.casefold()
            if present and folded:
                texts[at] = folded
            elif present:
                del ids[at], tags[at], texts[at]
            elif folded:
                (tag,) = conn.execute(
                    "SELECT channel_tag FROM messages WHERE id = ?", (local_id,)
                ).fetchone()
                ids.insert(at, local_id)
                tags.insert(at, bytes(tag))
                texts.insert(at, folded)
        except (DecryptionFailed, SegmentDamaged):
            _log.warning("search index segment %d-%d damaged; rebuilt", first_id, last_id)
            rows = conn.execute(
                "SELECT id, channel_tag, record FROM messages WHERE id BETWEEN ? AND ? ORDER BY id",
                (first_id, last_id),
            ).fetchall()
            ids, tags, texts = self._folded_rows(rows)
        blob = self._seal_blob(first_id, last_id, encode_segment(ids, tags, texts))
        conn.execute("UPDATE search_segments SET blob = ? WHERE first_id = ?", (blob, first_id))

    def _ix_drop_segments(self, conn: sqlite3.Connection) -> None:
        """Writer op: forget every segment (damaged index; the next search rebuilds)."""
        conn.execute("DELETE FROM search_segments")
        self._seg_through = 0
        self._tail_ready = False
        self._tail_checked = True

    def _decode_segments(
        self, rows: Sequence[sqlite3.Row]
    ) -> list[tuple[list[int], list[bytes], list[str], int]] | None:
        """Decrypt the stored segments (in a thread); None if any is damaged or
        they do not tile the history from id 1 without gaps."""
        out = []
        expect = 1
        try:
            for first_id, last_id, blob in rows:
                first_id, last_id = int(first_id), int(last_id)
                if first_id != expect or last_id < first_id:
                    return None
                ids, tags, texts = self._open_segment(first_id, last_id, bytes(blob))
                out.append((ids, tags, texts, last_id))
                expect = last_id + 1
        except (DecryptionFailed, SegmentDamaged):
            return None
        return out

    async def _load_segments(self) -> None:
        """Fill the in-memory index from the stored segments (once per process).

        A damaged index (a segment that fails to decrypt or parse, or a gap)
        is dropped whole and rebuilt by the catch-up that follows: a search
        never fails and never uses it.
        """
        self._segments_loaded = True
        if not self._persist:
            return
        rows = await self._query(
            "SELECT first_id, last_id, blob FROM search_segments ORDER BY first_id", ()
        )
        segments = await asyncio.to_thread(self._decode_segments, rows)
        if segments is None:
            _log.warning("search index damaged; rebuilding it from the history")
            await self._write.write(self._ix_drop_segments)
            return
        for ids, tags, texts, last_id in segments:
            self._search.extend(ids, tags, texts, through=last_id)

    async def search_messages(
        self,
        query: str,
        channels: Sequence[bytes],
        *,
        channel_id: bytes | None = None,
        limit: int = 50,
    ) -> list[ChatMessage]:
        """Stored messages of ``channels`` containing every word of ``query``, newest first.

        ``channel_id`` limits the search to one channel. The first search of
        a process loads the index from its encrypted segments; every search
        first catches up with the rows stored since (decrypted in a thread).

        Raises:
            DecryptionFailed: a stored message was tampered with or moved.
        """
        await self._catch_up_index()
        by_tag = {self._channel_tag(c): c for c in channels}
        tag = None if channel_id is None else self._channel_tag(channel_id)
        if tag is not None and tag not in by_tag:
            by_tag[tag] = channel_id  # type: ignore[assignment]
        terms = query_terms(query)
        hits = [
            (local_id, t)
            for local_id, t in self._search.search(query, channel_tag=tag, limit=limit * 4)
            if t in by_tag
        ][:limit]
        if not hits:
            return []
        marks = ",".join("?" * len(hits))
        rows = await self._query(
            f"SELECT id, channel_tag, record FROM messages WHERE id IN ({marks})",  # noqa: S608
            tuple(local_id for local_id, _ in hits),
        )
        found: dict[int, ChatMessage] = {}
        for local_id, row_tag, blob in rows:
            row_tag = bytes(row_tag)
            plain = self._keys.records.decrypt(
                bytes(blob),
                table="messages",
                column="record",
                row=self._row(row_tag, int(local_id)),
            )
            msg = _decode_message(by_tag[row_tag], int(local_id), plain)
            folded = msg.text.casefold()
            if all(t in folded for t in terms):
                found[int(local_id)] = msg
            else:
                # Rewritten since it was indexed (an edit or a delete that did
                # not tell the index): index what is stored now.
                self._search.replace(int(local_id), msg.text)
        return [found[i] for i, _ in hits if i in found]

    async def _catch_up_index(self) -> None:
        """Load the segments (first time), index every stored row above the index's
        last id, and seal full segments of the rows that are not in one yet."""
        async with self._search_lock:
            if not self._segments_loaded:
                await self._load_segments()
            rows = await self._query(
                "SELECT id, channel_tag, record FROM messages WHERE id > ? ORDER BY id",
                (self._search.last_id,),
            )
            if not rows:
                return
            entries = await asyncio.to_thread(self._index_entries, rows)
            self._search.add(entries)
            if not self._persist:
                return
            covered = self._seg_through
            for e, row in zip(entries, rows, strict=True):
                if e.local_id > covered:
                    self._tail.setdefault(e.local_id, (e.channel_tag, e.folded, bytes(row[2])))
            if entries[-1].local_id - covered >= SEGMENT_ROWS:
                # Each segment in its own transaction: other writes interleave.
                while await self._write.write(self._ix_seal):
                    pass
            self._tail_ready = True

    def _index_entries(self, rows: list[sqlite3.Row]) -> list[IndexedMessage]:
        tail = self._tail
        out = []
        for local_id, tag, blob in rows:
            local_id, tag, blob = int(local_id), bytes(tag), bytes(blob)
            known = tail.get(local_id)
            if known is not None and known[2] == blob and known[0] == tag:
                folded = known[1]
            else:
                folded = self._decrypt_text(local_id, tag, blob).casefold()
            out.append(IndexedMessage(local_id=local_id, channel_tag=tag, folded=folded))
        return out
