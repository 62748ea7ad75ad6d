"""The backend-neutral ``Store`` protocol and the records it returns.

Services talk only to this protocol, so a PostgreSQL backend can replace the
SQLite one without touching them. Every method is atomic on its own; methods
that write return only after their transaction is durable. Backends raise
only :mod:`proto.errors` classes: the documented domain errors
(:class:`~proto.errors.AlreadyExists`, :class:`~proto.errors.QueueFull`,
:class:`~proto.errors.StaleEpoch`, :class:`~proto.errors.LimitExceeded`) and
:class:`~proto.errors.Unavailable` for any storage failure; driver exceptions
never escape a backend module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final, Protocol

MAX_TREE_DELTAS: Final = 64
"""A channel's tree chain holds at most this many deltas after its base
(docs/PROTOCOL.md, "Tree deltas"); the next commit then sends a base."""
MIN_DELTA_BUDGET: Final = 256 * 1024
"""The deltas after a base may together be as large as the base, and at least
this many bytes; past that a whole tree is cheaper for joiners to fetch."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """A stored session (the token itself is never stored)."""

    username: str
    """Normalised username the session belongs to."""
    device_id: bytes
    """The device the token is bound to."""
    expires_ms: int
    """Unix time in ms after which the session is invalid."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """A registered device."""

    device_id: bytes
    """Ed25519 identity public key (32 bytes)."""
    username: str
    """Owning account."""
    hybrid_key: bytes
    """X-Wing public key."""
    signature: bytes
    """Ed25519 signature by ``device_id`` over ``b"qpc-device-v1" + hybrid_key``."""
    access_key_hash: bytes | None
    """SHA-256 of the delivery access key, or None when sealed sender is off."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoredEnvelope:
    """A message waiting in an inbox."""

    seq: int
    """Per-inbox delivery sequence number."""
    channel_id: bytes
    """Channel (MLS group id) the message belongs to."""
    data: bytes
    """The sealed payload, opaque to the node."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FanoutItem:
    """One recipient's message in an ``enqueue_commit``."""

    recipient: bytes
    """Recipient device id."""
    payload: bytes
    """Sealed payload for that device."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CommitResult:
    """Outcome of an accepted ``enqueue_commit``."""

    seqs: tuple[int, ...]
    """The seq assigned in each recipient's inbox, in fan-out order."""
    new_epoch: int
    """The channel's epoch after the commit."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChannelCommitResult:
    """Outcome of an accepted ``commit_channel``."""

    new_epoch: int
    """The channel's epoch after the commit."""
    commit_seqs: tuple[int, ...]
    """The seq of the commit in each member's inbox, in ``members`` order."""
    welcome_seqs: tuple[int, ...]
    """The seq of the Welcome in each joiner's inbox, in ``joiners`` order."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WelcomeParts:
    """A Welcome delivered by reference (docs/PROTOCOL.md, "Welcomes by reference")."""

    group_info: bytes
    """The split Welcome's shared part (encrypted GroupInfo), stored once."""
    entries: tuple[bytes, ...]
    """Each joiner's own inbox entry, in ``joiners`` order."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TreePart:
    """The new epoch's sealed ratchet tree part of a commit (docs/PROTOCOL.md,
    "Tree deltas"); the node cannot open it."""

    data: bytes
    """The sealed bytes."""
    base: bool
    """True: the whole tree (a base); False: a delta from the previous epoch's tree."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WelcomeTree:
    """What a joiner fetches for a Welcome by reference."""

    group_info: bytes
    """The split Welcome's shared part."""
    ratchet_tree: bytes
    """The latest tree base at or before the Welcome's epoch."""
    tree_deltas: tuple[bytes, ...]
    """The deltas of the epochs after the base up to the Welcome's epoch, in order."""


FETCH_WELCOME_SQL: Final = """
SELECT 0, w.epoch, w.group_info, w.ratchet_tree FROM channel_welcomes AS w
WHERE w.channel_id = $1 AND w.epoch = $2
AND EXISTS (SELECT 1 FROM messages AS m WHERE m.recipient = $3 AND m.welcome_id = w.id)
UNION ALL
SELECT 1 + p.base, p.epoch, p.data, NULL FROM channel_tree_parts AS p
WHERE p.channel_id = $1 AND p.epoch <= $2
AND p.epoch >= (SELECT max(b.epoch) FROM channel_tree_parts AS b
                WHERE b.channel_id = $1 AND b.base = 1 AND b.epoch <= $2)
AND EXISTS (SELECT 1 FROM channel_welcomes AS w JOIN messages AS m ON m.welcome_id = w.id
            WHERE w.channel_id = $1 AND w.epoch = $2 AND m.recipient = $3
            AND length(w.ratchet_tree) = 0)
"""
"""One statement (one snapshot) for :meth:`Store.fetch_welcome`, both backends:
rows (0, epoch, group_info, ratchet_tree) for the Welcome, then (1 delta / 2
base, epoch, data, NULL) for its tree chain; read by :func:`welcome_tree`."""


def welcome_tree(rows: Sequence[Any], epoch: int) -> WelcomeTree | None:
    """The :class:`WelcomeTree` from the rows of :data:`FETCH_WELCOME_SQL`;
    None without the Welcome or when its chain is not whole (never expected:
    parts live while a Welcome needs them)."""
    welcome = [r for r in rows if int(r[0]) == 0]
    if not welcome:
        return None
    group_info, whole = bytes(welcome[0][2]), bytes(welcome[0][3])
    if whole:  # stored whole, before tree chains
        return WelcomeTree(group_info=group_info, ratchet_tree=whole, tree_deltas=())
    parts = sorted((r for r in rows if int(r[0]) != 0), key=lambda r: int(r[1]))
    if not parts or int(parts[0][0]) != 2 or int(parts[-1][1]) != epoch:
        return None
    first = int(parts[0][1])
    if any(int(r[0]) != 1 or int(r[1]) != first + i for i, r in enumerate(parts) if i):
        return None
    return WelcomeTree(
        group_info=group_info,
        ratchet_tree=bytes(parts[0][2]),
        tree_deltas=tuple(bytes(r[2]) for r in parts[1:]),
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageCount:
    """Stock of a device's KeyPackages."""

    count: int
    """Unconsumed one-time KeyPackages."""
    has_last_resort: bool
    """Whether a last-resort KeyPackage is on file."""


DEVICE_LOOKUP_CHUNK = 500
"""Ids per query in :meth:`Store.known_devices` (below SQLite's parameter limit)."""


class Store(Protocol):
    """Persistent state of a node. Implementations are safe for concurrent use."""

    @property
    def backend(self) -> str:
        """Short backend name reported by ``health`` (e.g. ``"sqlite"``)."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release connections."""
        ...

    # -- node secrets
    async def get_or_create_secret(self, name: str, value: bytes) -> bytes:
        """Return the secret ``name``, storing ``value`` first if there is none."""
        ...

    # -- accounts and sessions
    async def account_exists(self, username: str) -> bool:
        """Whether ``username`` is registered."""
        ...

    async def create_account(self, username: str, password_file: bytes, now_ms: int) -> None:
        """Create an account with its OPAQUE password file.

        Raises:
            AlreadyExists: the username is taken.
        """
        ...

    async def get_password_file(self, username: str) -> bytes | None:
        """The account's OPAQUE password file, or None if there is no such account."""
        ...

    async def create_session(
        self, token_hash: bytes, username: str, device_id: bytes, now_ms: int, expires_ms: int
    ) -> None:
        """Store a new session under SHA-256 of its token."""
        ...

    async def get_session(self, token_hash: bytes) -> SessionRecord | None:
        """Look a session up by token hash (expired ones are returned too)."""
        ...

    async def delete_session(self, token_hash: bytes) -> None:
        """Remove a session (logout); missing sessions are ignored."""
        ...

    async def purge_sessions(self, now_ms: int) -> int:
        """Delete expired sessions; return how many."""
        ...

    # -- devices and KeyPackages
    async def upsert_device(self, device: DeviceRecord, now_ms: int) -> None:
        """Register a device, or update the keys of one the same account holds.

        Raises:
            AlreadyExists: another account holds this device id.
        """
        ...

    async def get_device(self, device_id: bytes) -> DeviceRecord | None:
        """A device by id."""
        ...

    async def known_devices(self, device_ids: Sequence[bytes]) -> set[bytes]:
        """Which of ``device_ids`` are registered devices (one lookup for a
        whole fan-out: cached ones from memory, the rest in one query per
        ``DEVICE_LOOKUP_CHUNK`` ids)."""
        ...

    async def list_devices(self, username: str) -> list[DeviceRecord]:
        """An account's devices, oldest first."""
        ...

    async def delete_device(self, username: str, device_id: bytes) -> bool:
        """Unlink: delete ``username``'s device, its KeyPackages, sessions and inbox.

        Returns False (nothing deleted) when the account holds no such device.
        """
        ...

    async def add_key_packages(
        self, device_id: bytes, packages: Sequence[bytes], last_resort: bytes | None, max_stock: int
    ) -> int:
        """Add one-time KeyPackages (and replace the last-resort one if given).

        Returns the new stock of one-time packages.

        Raises:
            LimitExceeded: the stock would exceed ``max_stock`` (nothing stored).
        """
        ...

    async def consume_key_package(self, device_id: bytes) -> tuple[bytes, bool] | None:
        """Hand out the oldest one-time KeyPackage (deleting it) or the last-resort one.

        Returns ``(package, is_last_resort)``, or None when the device has neither.
        No package is ever returned twice.
        """
        ...

    async def key_package_count(self, device_id: bytes) -> KeyPackageCount:
        """The device's KeyPackage stock."""
        ...

    # -- delivery
    async def enqueue(
        self, recipient: bytes, channel_id: bytes, payload: bytes, now_ms: int, max_depth: int
    ) -> int:
        """Append a message to ``recipient``'s inbox; return its seq once durable.

        Raises:
            QueueFull: the inbox holds ``max_depth`` messages already.
        """
        ...

    async def enqueue_commit(
        self,
        channel_id: bytes,
        epoch: int,
        fanout: Sequence[FanoutItem],
        now_ms: int,
        max_depth: int,
    ) -> CommitResult:
        """Check and bump the channel epoch and enqueue every fan-out message, atomically.

        An unknown channel is created at ``epoch``.

        Raises:
            StaleEpoch: ``epoch`` is not the channel's current epoch (nothing stored).
            PermissionDenied: the channel has post capabilities
                (:meth:`commit_channel`); nothing stored.
            QueueFull: a recipient's inbox is full (nothing stored).
        """
        ...

    async def fetch(self, recipient: bytes, after_seq: int, limit: int) -> list[StoredEnvelope]:
        """Messages with seq > ``after_seq``, in seq order, at most ``limit``.

        Inbox entries that refer to a channel payload come back with that
        payload's channel id and bytes, like any other envelope.
        """
        ...

    async def ack(self, recipient: bytes, upto_seq: int) -> int:
        """Delete messages with seq <= ``upto_seq``; return how many.

        A channel payload is deleted with the last inbox entry referring to it.
        """
        ...

    async def purge_messages(self, before_ms: int) -> int:
        """Delete messages and channel payloads stored before ``before_ms``;
        return how many inbox messages."""
        ...

    # -- channel logs (docs/PROTOCOL.md, "Channel logs")
    async def post_channel(
        self,
        channel_id: bytes,
        key_hash: bytes,
        recipients: Sequence[bytes],
        payload: bytes,
        now_ms: int,
        max_depth: int,
    ) -> tuple[int, ...]:
        """Store ``payload`` once and append a reference to it to each recipient's inbox.

        ``key_hash`` (SHA-256 of the post capability presented) must equal the
        channel's key for its current epoch (constant-time compare), checked
        in the same transaction as the write. Returns the seq per recipient,
        0 where the inbox already held ``max_depth`` messages (skipped). With
        every inbox full nothing is stored.

        Raises:
            PermissionDenied: no such channel, no key set for its current
                epoch, or a different key (nothing stored; not distinguished).
        """
        ...

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
        """Sequence a commit of a channel with capabilities, atomically.

        Checks ``epoch`` and ``key_hash`` against the channel, bumps the epoch
        to ``epoch + 1``, clears the key (the new epoch's key is set by
        ``committer`` with :meth:`set_channel_key`), stores ``commit`` once
        referred to by every ``members`` inbox and ``welcome`` (when not
        empty) once referred to by every ``joiners`` inbox. An unknown
        channel is created at ``epoch + 1`` without a key check. With
        ``parts`` (and an empty ``welcome``), the Welcome goes by reference:
        its shared parts are stored once for epoch ``epoch + 1`` and each
        joiner's inbox gets its own entry, referring to them.

        ``tree`` is the tree part of epoch ``epoch + 1``, stored in the
        channel's tree chain. A delta is accepted only if the chain holds the
        part of ``epoch`` and, with it, stays within :data:`MAX_TREE_DELTAS`
        deltas and max(base bytes, :data:`MIN_DELTA_BUDGET`) delta bytes
        after its base. A base, or a commit without a part (which breaks the
        chain), drops the older parts no stored Welcome needs.

        Raises:
            StaleEpoch: ``epoch`` is not current (nothing stored).
            TreeBaseRequired: a delta the chain cannot take (nothing stored).
            PermissionDenied: wrong or missing key, or a channel made by
                :meth:`enqueue_commit` (nothing stored).
            QueueFull: a recipient inbox is full (nothing stored).
        """
        ...

    async def set_channel_key(
        self, channel_id: bytes, epoch: int, committer: bytes, key_hash: bytes
    ) -> None:
        """Set SHA-256 of ``epoch``'s post capability.

        Raises:
            StaleEpoch: ``epoch`` is not the channel's current epoch.
            PermissionDenied: ``committer`` did not make the current epoch, or
                its key is set already.
        """
        ...

    async def fetch_welcome(
        self, channel_id: bytes, epoch: int, recipient: bytes
    ) -> WelcomeTree | None:
        """The shared part and tree chain of the Welcome of ``channel_id`` at
        ``epoch``, if ``recipient``'s inbox still holds an entry referring to
        it; None otherwise (unknown, acked, purged, or not its joiner)."""
        ...

    async def queued_total(self) -> int:
        """Messages waiting in all inboxes (for metrics)."""
        ...
