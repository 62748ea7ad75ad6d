"""The client engine's typed public surface, shared by the TUI and the CLI.

Everything here is a frozen, slotted, keyword-only dataclass or a
:class:`typing.Protocol`; nothing imports the engine's implementation, so the
TUI (and its tests, with a fake engine) build against this module alone.

Stability: this module only grows. Fields are never renamed or removed; new
fields get defaults; new event classes are added to :data:`EngineEvent`.

Identifiers as the user sees them:

* a **channel** is named by its hex id (``ChannelInfo.id``, the MLS group id in
  lowercase hex); CLI commands also accept the channel's display name when it
  is unambiguous.
* a **user** is the node's normalised username.
* a **device** is the hex of its Ed25519 identity key.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "MAX_RATE_LIMIT_WAIT_S",
    "RECEIPT_EVERY_S",
    "TYPING_EVERY_S",
    "TYPING_TTL_S",
    "ChannelInfo",
    "ChannelKind",
    "ChannelsChanged",
    "ClientEngine",
    "ConnectionChanged",
    "ConnectionState",
    "ConnectionStatus",
    "DeliveryState",
    "DeviceKeyCheck",
    "EngineEvent",
    "Health",
    "KeyCheck",
    "KeyStock",
    "LinkResult",
    "Member",
    "MembersChanged",
    "Message",
    "MessageChanged",
    "MessageReceived",
    "MessageStateChanged",
    "OwnDevice",
    "PingResult",
    "Privacy",
    "RateLimitWait",
    "Reaction",
    "ReceiptsChanged",
    "SecurityWarning",
    "ServerInfo",
    "ServerProbe",
    "TopicChanged",
    "TypingChanged",
    "WhoAmI",
]


class ChannelKind(enum.Enum):
    """Whether a channel is a named group or a 1:1 direct conversation."""

    GROUP = "group"
    DM = "dm"


class DeliveryState(enum.Enum):
    """Where an outgoing message is; incoming messages are always ``RECEIVED``."""

    PENDING = "pending"
    """Written locally, not yet accepted by the node (e.g. in the outbox)."""
    SENT = "sent"
    """The node accepted the message for every recipient device."""
    FAILED = "failed"
    """Sending failed permanently (e.g. removed from the channel)."""
    RECEIVED = "received"
    """The message came from another member."""


class ConnectionStatus(enum.Enum):
    """Coarse connection state to the node."""

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionState:
    """The engine's connection to the node, as shown in the status bar."""

    status: ConnectionStatus
    """Connected, reconnecting (a retry is scheduled) or offline."""
    retry_in_s: float = 0.0
    """When ``RECONNECTING``: seconds until the next attempt."""
    outbox_count: int = 0
    """Messages written locally and waiting to be sent."""
    server: str = ""
    """``host:port`` of the node."""

    @classmethod
    def connected(cls, *, server: str = "", outbox_count: int = 0) -> ConnectionState:
        """The connection is up."""
        return cls(status=ConnectionStatus.CONNECTED, server=server, outbox_count=outbox_count)

    @classmethod
    def reconnecting(
        cls, in_s: float, *, server: str = "", outbox_count: int = 0
    ) -> ConnectionState:
        """The connection dropped; the next attempt is in ``in_s`` seconds."""
        return cls(
            status=ConnectionStatus.RECONNECTING,
            retry_in_s=in_s,
            server=server,
            outbox_count=outbox_count,
        )

    @classmethod
    def offline(cls, outbox_count: int, *, server: str = "") -> ConnectionState:
        """No connection; ``outbox_count`` messages wait in the outbox."""
        return cls(status=ConnectionStatus.OFFLINE, outbox_count=outbox_count, server=server)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """Which node an engine talks to."""

    address: str
    """``host:port`` of the node ("" when the embedded node is not running yet)."""
    embedded: bool = False
    """True for the shared embedded local node (see ``tui.client.localnode``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerProbe:
    """A server's TLS key as seen by :func:`tui.client.probe.probe_server` (nothing trusted)."""

    server: str
    """``host:port`` that was probed."""
    fingerprint: str
    """SPKI SHA-256 (hex) the server presented."""
    pinned: str | None = None
    """What this profile pinned for the server (for the embedded node: its own record)."""
    embedded: bool = False
    """True when the embedded local node was probed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One member of a channel (a user; one user may have several devices)."""

    user: str
    """Username."""
    devices: tuple[str, ...] = ()
    """Hex device ids of this user in the channel."""
    is_self: bool = False
    """True for the local user."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelInfo:
    """A channel (MLS group) the local device is a member of."""

    id: str
    """Hex MLS group id; stable, unique."""
    name: str
    """Display name (for DMs: the other user's name). Held inside MLS only."""
    kind: ChannelKind = ChannelKind.GROUP
    """Group or DM."""
    members: tuple[str, ...] = ()
    """Usernames of the members, sorted."""
    epoch: int = 0
    """Current MLS epoch."""
    unread: int = 0
    """Messages received since the channel was last read (:meth:`ClientEngine.mark_read`)."""
    last_activity_ms: int = 0
    """Unix time (ms) of the newest message or membership change."""
    active: bool = True
    """False once we left or were removed (history stays readable locally)."""
    topic: str = ""
    """The channel topic (any member may set it; shown in the header)."""
    seen: tuple[tuple[str, str], ...] = ()
    """``(username, hex message id)``: how far each other member has read (receipts)."""

    @property
    def label(self) -> str:
        """How every client surface names the channel: ``@bob`` for a DM, ``#name`` for a group.

        Both forms (and the bare name) are accepted wherever a channel is typed.
        """
        return ("@" if self.kind is ChannelKind.DM else "#") + self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Privacy:
    """What this profile tells other members about its reading and typing."""

    receipts: bool = True
    """Send read receipts."""
    typing: bool = True
    """Send typing notices."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """One emoji on a message and who reacted with it."""

    emoji: str
    """The emoji."""
    users: tuple[str, ...]
    """Usernames, in reaction order."""
    mine: bool = False
    """True when the local user is one of them (shown highlighted; removable)."""

    @property
    def count(self) -> int:
        """How many users reacted with it."""
        return len(self.users)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One chat message as stored in the local (encrypted) history."""

    id: int
    """Local id, increasing per profile; stable across restarts."""
    channel: str
    """Hex channel id."""
    sender: str
    """Sender's username (our own for outgoing messages)."""
    text: str
    """Plaintext (never logged)."""
    time_ms: int
    """Sender's timestamp, Unix ms."""
    state: DeliveryState = DeliveryState.RECEIVED
    """Delivery state (outgoing: pending/sent/failed)."""
    sender_device: str = ""
    """Hex device id of the sender's device."""
    outgoing: bool = False
    """True when the local user wrote it."""
    sealed: bool = False
    """True when it was delivered in sealed-sender mode."""
    msg_id: str = ""
    """Hex message id, the same on every member's device ("" for legacy messages)."""
    reply_to: str = ""
    """Hex message id of the parent, or ""."""
    action: bool = False
    """An action (``/me waves``), rendered as ``* alice waves``."""
    edited: bool = False
    """The author edited the text."""
    deleted: bool = False
    """The author deleted it (a tombstone: ``text`` is empty)."""
    reactions: tuple[Reaction, ...] = ()
    """Reactions, one per emoji, in first-reaction order."""

    @property
    def time(self) -> float:
        """Sender's timestamp in Unix seconds."""
        return self.time_ms / 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStock:
    """KeyPackages held by the node for this device."""

    count: int
    """One-time KeyPackages available."""
    has_last_resort: bool
    """Whether a last-resort KeyPackage is uploaded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoAmI:
    """Who the local profile is, and where it is connected."""

    user: str
    """Username."""
    device: str
    """Hex device id (Ed25519 public key)."""
    device_fingerprint: str
    """Human-readable fingerprint of the device key (groups of digits)."""
    server: str
    """``host:port`` of the node."""
    server_fingerprint: str
    """Pinned SPKI SHA-256 (hex) of the node's TLS key."""
    key_stock: KeyStock | None = None
    """KeyPackage stock on the node, when it could be asked."""
    device_registered: bool = True
    """Whether the node knows this device."""
    session_expires_ms: int = 0
    """Unix ms when the session token expires (0 = unknown)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """The node's health report."""

    status: str
    """``ok`` or ``degraded``."""
    version: str
    """Node software version."""
    uptime_ms: int
    """Node uptime."""
    store_backend: str
    """``sqlite`` or ``postgres``."""
    server: str = ""
    """``host:port`` asked."""
    fingerprint: str = ""
    """The key the node presented (set when asked without a profile)."""
    pinned: bool = True
    """Whether that key was checked (a pin or the local node's record); False:
    asked without a profile and without a pin, so only reported."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    """Round-trip times of one or more pings."""

    rtts_ms: tuple[float, ...]
    """Each round trip in milliseconds."""
    server_time_ms: int = 0
    """Node clock at the last ping, Unix ms."""

    @property
    def min_ms(self) -> float:
        """Fastest round trip (0 when empty)."""
        return min(self.rtts_ms, default=0.0)

    @property
    def median_ms(self) -> float:
        """Median round trip (0 when empty)."""
        if not self.rtts_ms:
            return 0.0
        ordered = sorted(self.rtts_ms)
        mid = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[mid]
        return (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def max_ms(self) -> float:
        """Slowest round trip (0 when empty)."""
        return max(self.rtts_ms, default=0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceKeyCheck:
    """Safety number for one of a user's devices."""

    device: str
    """Hex device id."""
    safety_number: str
    """Safety number of (our key, their key), groups of digits, order-independent."""
    status: str
    """``new`` (first seen, now pinned), ``unverified`` (matches the pin, never
    compared), ``verified`` (matches the pin; the user compared safety numbers
    and marked it verified) or ``changed`` (not the pinned key)."""
    previous_device: str = ""
    """When ``changed``: hex of the key we had pinned before."""
    linked_by: str = ""
    """Hex id of the pinned device of the same account that certified this one
    when it linked it (docs/PROTOCOL.md "Linked devices"): the status carries
    over from that device (``verified`` if it is verified). Empty otherwise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnDevice:
    """One device of our own account (``qpc devices``)."""

    device: str
    """Hex device id."""
    fingerprint: str
    """Its fingerprint, as ``whoami`` shows it on that device."""
    this_device: bool
    """True for the device running this client."""
    channels: int
    """How many of our active channels it is a member of."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkResult:
    """A completed device link."""

    device: str
    """Hex id of the other device (the new one on the existing side, and vice versa)."""
    channels: tuple[str, ...] = ()
    """On the existing side: channels the new device was added to."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCheck:
    """Result of checking a user's device keys against the pinned ones."""

    user: str
    """Username checked."""
    devices: tuple[DeviceKeyCheck, ...]
    """One entry per device the node lists (and per pinned device that vanished)."""

    @property
    def changed(self) -> bool:
        """True when any key differs from what was pinned: warn loudly."""
        return any(d.status == "changed" for d in self.devices)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """A message was decrypted and persisted (or one of ours was stored)."""

    message: Message
    """The new message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageStateChanged:
    """An outgoing message changed delivery state (pending -> sent/failed)."""

    message_id: int
    """Local id of the message."""
    channel: str
    """Hex channel id."""
    state: DeliveryState
    """New state."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelsChanged:
    """The channel list changed (joined, left, renamed, unread counts)."""

    channels: tuple[ChannelInfo, ...]
    """Every known channel, newest activity first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MembersChanged:
    """A channel's member list changed (add, remove, leave)."""

    channel: str
    """Hex channel id."""
    members: tuple[Member, ...]
    """New member list."""
    epoch: int = 0
    """MLS epoch after the change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionChanged:
    """The connection state changed."""

    state: ConnectionState
    """New state."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityWarning:
    """Something was rejected or looks wrong (bad envelope, changed key, ...)."""

    reason: str
    """Short, user-facing reason (never message text or key material)."""
    channel: str = ""
    """Hex channel id when known."""
    user: str = ""
    """User concerned, when known."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageChanged:
    """A stored message was edited, deleted (tombstone) or reacted to."""

    message: Message
    """The message as stored now (same ``id`` and ``msg_id``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicChanged:
    """A member set the channel's topic."""

    channel: str
    """Hex channel id."""
    topic: str
    """The new topic ("" when cleared)."""
    by: str
    """Who set it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TypingChanged:
    """Who is typing in a channel now (each notice expires after :data:`TYPING_TTL_S`)."""

    channel: str
    """Hex channel id."""
    users: tuple[str, ...]
    """Usernames typing now, sorted (empty: nobody)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptsChanged:
    """A member's read position in a channel moved."""

    channel: str
    """Hex channel id."""
    seen: tuple[tuple[str, str], ...]
    """``(username, hex message id)`` of each member's newest read message, sorted."""


TYPING_TTL_S = 6.0
"""How long a typing notice shows without a new one."""
TYPING_EVERY_S = 3.0
"""Shortest interval between two typing notices a client sends in one channel."""
RECEIPT_EVERY_S = 2.0
"""Shortest interval between two read receipts a client sends in one channel."""

EngineEvent = (
    MessageReceived
    | MessageChanged
    | TopicChanged
    | TypingChanged
    | ReceiptsChanged
    | MessageStateChanged
    | ChannelsChanged
    | MembersChanged
    | ConnectionChanged
    | SecurityWarning
)
"""Every event :meth:`ClientEngine.events` can yield."""


# --------------------------------------------------------------------------- engine


RateLimitWait = Callable[[float], None]
"""Told how many seconds the engine will wait before retrying a rate-limited step."""

MAX_RATE_LIMIT_WAIT_S = 120.0
"""Longest total wait for rate limits in one register/login before giving up."""


@runtime_checkable
class ClientEngine(Protocol):
    """What the TUI and the CLI can ask of the client engine.

    Every method is a coroutine. Failures raise subclasses of
    :class:`proto.errors.QpcError` (``LocalError`` for misuse such as an unknown
    channel; ``RemoteError``/``RpcError`` for the node or a peer). Sending never
    fails because the node is unreachable: the message is stored with
    ``DeliveryState.PENDING`` and sent from the outbox on reconnect.
    """

    async def register(
        self, user: str, password: str, *, on_wait: RateLimitWait | None = None
    ) -> WhoAmI:
        """Create the account (OPAQUE), log in, create and register this device.

        When the node answers ``rateLimited`` the engine waits the time the node
        gave and retries (up to :data:`MAX_RATE_LIMIT_WAIT_S` in all), calling
        ``on_wait(seconds)`` before each wait so the UI can show a countdown.
        """
        ...

    async def login(
        self, user: str, password: str, *, on_wait: RateLimitWait | None = None
    ) -> WhoAmI:
        """Log in (OPAQUE), registering this device and topping up KeyPackages.

        Waits and retries on ``rateLimited`` like :meth:`register`.
        """
        ...

    async def create_group(self, name: str) -> ChannelInfo:
        """Create a new group channel with us as its only member."""
        ...

    async def invite(self, channel: str, users: list[str]) -> ChannelInfo:
        """Add every device of each user to the channel (commit + Welcome)."""
        ...

    async def dm(self, user: str) -> ChannelInfo:
        """Return the DM channel with ``user``, creating it on first use."""
        ...

    async def leave(self, channel: str) -> None:
        """Leave the channel (other members remove us on their next commit)."""
        ...

    async def remove(self, channel: str, users: list[str]) -> ChannelInfo:
        """Remove every device of each user from the channel."""
        ...

    async def self_update(self, channel: str) -> ChannelInfo:
        """Commit a fresh leaf key of this device in the channel (post-compromise security)."""
        ...

    async def members(self, channel: str) -> tuple[Member, ...]:
        """Current member list of a channel, from local MLS state."""
        ...

    async def channels(self) -> tuple[ChannelInfo, ...]:
        """Every known channel, newest activity first."""
        ...

    async def send(
        self, channel: str, text: str, *, reply_to: str = "", action: bool = False
    ) -> Message:
        """Encrypt and send ``text``; returns the stored message (sent or pending).

        ``reply_to`` is the hex message id of the parent; ``action`` sends an
        action (``/me``)."""
        ...

    async def react(
        self, channel: str, msg_id: str, emoji: str, *, remove: bool = False
    ) -> Message:
        """Add (or with ``remove`` take back) our ``emoji`` on a message; returns it."""
        ...

    async def edit(self, channel: str, msg_id: str, text: str) -> Message:
        """Replace the text of one of our messages on every member's device."""
        ...

    async def delete(self, channel: str, msg_id: str) -> Message:
        """Delete one of our messages on every member's device (tombstone)."""
        ...

    async def set_topic(self, channel: str, topic: str) -> ChannelInfo:
        """Set the channel topic for every member ("" clears it)."""
        ...

    async def typing(self, channel: str) -> None:
        """Tell the channel we are typing (sent at most every :data:`TYPING_EVERY_S`)."""
        ...

    async def sync(self) -> list[Message]:
        """Fetch, process, persist and ack everything waiting; new messages in order."""
        ...

    async def history(
        self, channel: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        """Stored messages of a channel, oldest first; marks the channel read."""
        ...

    async def search(
        self, query: str, *, channel: str | None = None, limit: int = 50
    ) -> list[Message]:
        """Stored messages containing every word of ``query``, newest first."""
        ...

    async def mark_read(self, channel: str) -> None:
        """Clear the channel's unread count (persisted: it survives restarts)."""
        ...

    async def whoami(self) -> WhoAmI:
        """Local identity, KeyPackage stock and pinned server fingerprint."""
        ...

    async def health(self) -> Health:
        """Ask the node for its health."""
        ...

    async def ping(self, count: int = 1) -> PingResult:
        """Measure ``count`` round trips to the node."""
        ...

    async def check_key(self, user: str, *, accept: bool = False, verify: bool = False) -> KeyCheck:
        """Safety numbers for each of ``user``'s devices; flags changed keys.

        ``accept``: pin the current devices (acknowledge a change);
        ``verify``: the user compared the numbers: pin and mark them verified.
        """
        ...

    async def refresh_keypackages(self) -> KeyStock:
        """Upload KeyPackages until the stock is full (and a last resort exists)."""
        ...

    def link_offer(self) -> str:
        """On the existing device: open a link offer; returns the code to show (no I/O)."""
        ...

    async def link_wait(
        self,
        timeout: float,  # noqa: ASYNC109
        *,
        pump: bool = True,
        on_progress: Callable[[str], None] | None = None,
    ) -> LinkResult:
        """On the existing device: wait for the new device to prove the code,
        then add it to every channel (``pump=False``: an :meth:`events`
        subscription already runs). Cancelling closes the offer."""
        ...

    async def link_join(
        self,
        code: str,
        timeout: float,  # noqa: ASYNC109
        *,
        pump: bool = True,
    ) -> LinkResult:
        """On the new device: prove ``code`` to the existing device; it adds us
        to its channels."""
        ...

    async def devices(self) -> tuple[OwnDevice, ...]:
        """Our account's devices, this one marked."""
        ...

    async def unlink(self, device: str) -> tuple[str, ...]:
        """Remove one of our other devices from every channel and from the account."""
        ...

    def connection_state(self) -> ConnectionState:
        """Current connection state (no I/O)."""
        ...

    def server_info(self) -> ServerInfo:
        """The node's address and whether it is the embedded local node (no I/O)."""
        ...

    def events(self) -> AsyncIterator[EngineEvent]:
        """Live events; the engine holds the fetchWait subscription while iterated."""
        ...

    async def close(self) -> None:
        """Stop background work and close the connection and the profile."""
        ...
