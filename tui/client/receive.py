"""The receive path's sans-I/O core: envelope in, events and effects out.

Nothing here does I/O, awaits, or changes the engine state: every function
reads the :class:`~tui.client.state.EngineState` it is given and returns a
:class:`Step`, the events for the UI and the *effects* the shell
(:class:`tui.client.delivery.Inbox`) performs, in order: state updates,
history appends, and the MLS operations. Tests drive it with envelopes and
MLS results and assert on the steps, without a node or a socket
(``tests/tui/test_receive_core.py``).

MLS is a side-effecting library (each ``Group.process`` or
``Client.join_from_welcome`` is one SQLite transaction of the binding that
both decrypts and advances the stored group state), so it cannot be
called from a pure function. The core therefore splits at MLS:

1. :func:`on_envelope` opens and checks the envelope (pure crypto) and
   decides: drop with a warning, hold (future epoch), or ask the shell to
   apply one MLS transaction (:class:`ApplyMls`, :class:`JoinWelcome`);
2. the shell applies it and feeds the result back to :func:`on_processed`
   or :func:`on_joined`, which decide what the result means (store a
   message, learn an access key, record a leave request, release held
   messages, ...).

The "state" of the core is therefore the engine state plus a read-only view
of the MLS groups (:class:`GroupView`: epoch and members), snapshotted by
the shell before the MLS transaction.
"""

from __future__ import annotations

import base64
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

from proto import mls
from proto.codec import Envelope
from proto.crypto.envelope import ContentType, HybridPrivateKey, OpenedEnvelope, open_envelope
from proto.crypto.identity import verify_device_cert
from proto.errors import BadSignature, CryptoError, InvalidMessage, MalformedInput, MlsError
from tui.client import api, appdata
from tui.client.profile import ChatMessage, MessageChange
from tui.client.state import EngineState, HeldEnvelope

__all__ = [
    "LINK_CHANNEL",
    "MAX_HELD",
    "UNKNOWN_PLACEHOLDER",
    "WELCOME_REF_FIRST_BYTE",
    "AddUnread",
    "ApplyChange",
    "ApplyMls",
    "CertifyDevice",
    "CommitSeen",
    "DeleteGroup",
    "Effect",
    "GroupView",
    "Hold",
    "JoinWelcome",
    "Joined",
    "LearnDevice",
    "LeaveRequested",
    "LinkControl",
    "SawReceipt",
    "SawTyping",
    "SetAccessKeys",
    "SetChannelMeta",
    "SetTopic",
    "Step",
    "StoreMessage",
    "on_envelope",
    "on_joined",
    "on_processed",
    "parse_welcome_ref",
    "releasable",
    "welcome_parts_missing",
    "welcome_ref_entry",
]

LINK_CHANNEL = b"qpc-link-v1"
"""Channel id of the sealed control messages that link a device (not an MLS group)."""

MAX_HELD = 1000
"""Most future-epoch envelopes held at once (the oldest are dropped beyond)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupView:
    """What the core may know of one MLS group: a snapshot, no handle."""

    group_id: bytes
    """The group (channel) id."""
    epoch: int
    """Its current epoch."""
    members: tuple[mls.Member, ...]
    """Its members (leaf index, credential identity, signature key)."""
    active: bool = True
    """False once we were removed."""

    def member_by_key(self, key: bytes) -> mls.Member | None:
        """The member whose signature key is ``key``."""
        return next((m for m in self.members if m.signature_key == key), None)

    def member_by_leaf(self, leaf: int | None) -> mls.Member | None:
        """The member at ``leaf``."""
        return next((m for m in self.members if m.leaf_index == leaf), None)

    @staticmethod
    def of(group: mls.Group) -> GroupView:
        """Snapshot a live group (a read of the binding, no write)."""
        return GroupView(
            group_id=group.group_id,
            epoch=group.epoch,
            members=tuple(group.members()),
            active=group.is_active,
        )


# ---------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyMls:
    """Run ``Group.process`` on the body (one MLS transaction), then :func:`on_processed`."""

    opened: OpenedEnvelope


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinWelcome:
    """Run ``Client.join_from_welcome`` (one MLS transaction), then :func:`on_joined`."""

    opened: OpenedEnvelope


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteGroup:
    """Delete a group just joined from a Welcome that failed a check."""

    channel: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """Keep an envelope of a future epoch until its commit arrives."""

    held: HeldEnvelope


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined:
    """We joined ``channel`` (from a Welcome sealed by ``inviter``)."""

    channel: bytes
    inviter: bytes
    inviter_user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LearnDevice:
    """Remember a peer device (and its delivery access key if given)."""

    device: bytes
    user: str
    access_key: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetChannelMeta:
    """A channel's name and kind, from its ``meta`` message."""

    channel: bytes
    name: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAccessKeys:
    """Access keys from a ``meta`` message, for known devices without one."""

    keys: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreMessage:
    """Append a received chat message to the history."""

    message: ChatMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyChange:
    """Apply an edit, delete or reaction to a stored message (with the batch)."""

    change: MessageChange


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTopic:
    """A member set the channel topic."""

    channel: bytes
    topic: str
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SawTyping:
    """``user`` is typing in ``channel`` (not stored)."""

    channel: bytes
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SawReceipt:
    """``user`` read ``channel`` up to message ``up_to`` (not stored as a line)."""

    channel: bytes
    user: str
    up_to: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AddUnread:
    """One more unread message in ``channel``; activity now."""

    channel: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveRequested:
    """A member's remove proposal is stored in ``channel``: commit it."""

    channel: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CertifyDevice:
    """``issuer`` (a device of ``user``, the MLS sender) certified ``device`` for ``user``;
    the signature was checked."""

    user: str
    issuer: bytes
    device: bytes
    issued_ms: int
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitSeen:
    """A commit was merged in ``channel`` (added devices are in ``added``)."""

    channel: bytes
    added: tuple[mls.Member, ...]
    removed_self: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkControl:
    """A device-linking message (docs/PROTOCOL.md, "Linked devices") for the linker."""

    sender: bytes
    """The sending device (its envelope signature verified)."""
    body: bytes


Effect = (
    ApplyMls
    | JoinWelcome
    | DeleteGroup
    | Hold
    | Joined
    | LearnDevice
    | SetChannelMeta
    | SetAccessKeys
    | StoreMessage
    | ApplyChange
    | SetTopic
    | CertifyDevice
    | SawTyping
    | SawReceipt
    | AddUnread
    | LeaveRequested
    | CommitSeen
    | LinkControl
)
"""Everything the shell may be asked to do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """The outcome of one core call: events for the UI, effects in order."""

    events: tuple[api.EngineEvent, ...] = ()
    effects: tuple[Effect, ...] = ()


def _warn(reason: str, channel: bytes, *effects: Effect) -> Step:
    return Step(
        events=(api.SecurityWarning(reason=reason, channel=channel.hex(), user=""),),
        effects=effects,
    )


_NOTHING = Step()


# ---------------------------------------------------------------------- core


def on_envelope(
    state: EngineState,
    env: Envelope,
    *,
    device_id: bytes,
    hybrid: HybridPrivateKey,
    epochs: Mapping[bytes, int],
    stored: Container[int] = frozenset(),
) -> Step:
    """Decide what to do with one fetched envelope (see module docstring).

    ``epochs`` maps the MLS groups we are in to their current epochs. A seq
    at or below the cursor is a duplicate and yields nothing. ``stored``
    holds the seqs whose MLS result the binding kept as a receipt (a batch
    processed before a crash, not yet in the history): their MLS step is
    asked for again, past the epoch and replay checks (the group has
    already moved on), and the binding answers from the receipt.
    """
    if env.seq <= state.cursor:
        return _NOTHING
    channel = env.channel_id
    if env.data[:1] == WELCOME_REF_FIRST_BYTE:
        if channel in epochs and env.seq not in stored:
            return _warn("Welcome for a channel we are already in (replay?)", channel)
        try:
            parse_welcome_ref(env.data)
        except MalformedInput:
            return _warn("malformed Welcome reference", channel)
        ref = OpenedEnvelope(
            recipient_id=device_id,
            channel_id=channel,
            content_type=ContentType.MLS_WELCOME,
            sender=b"",
            body=env.data,
        )
        return Step(effects=(JoinWelcome(opened=ref),))
    if env.data[:1] == CHANNEL_ENTRY_FIRST_BYTE:
        entry = _channel_entry(env, device_id)
        if isinstance(entry, Step):
            return entry
        opened = entry
    else:
        try:
            opened = open_envelope(
                env.data, recipient_key=hybrid, recipient_id=device_id, channel_id=channel
            )
        except CryptoError as exc:
            return _warn(f"envelope rejected ({type(exc).__name__})", channel)
    if env.seq in stored and opened.content_type != ContentType.CONTROL:
        if opened.content_type == ContentType.MLS_WELCOME:
            return Step(effects=(JoinWelcome(opened=opened),))
        return Step(effects=(ApplyMls(opened=opened),))
    if opened.content_type == ContentType.MLS_WELCOME:
        if channel in epochs:
            return _warn("Welcome for a channel we are already in (replay?)", channel)
        return Step(effects=(JoinWelcome(opened=opened),))
    if opened.content_type == ContentType.CONTROL:
        if channel == LINK_CHANNEL:
            return Step(effects=(LinkControl(sender=opened.sender, body=opened.body),))
        return _NOTHING
    current = epochs.get(channel)
    if current is None:
        return _warn("message for a channel we are not in", channel)
    try:
        epoch = mls.message_info(opened.body).epoch
    except MlsError as exc:
        return _warn(f"malformed MLS message ({type(exc).__name__})", channel)
    if epoch is not None and epoch > current:
        return Step(effects=(Hold(held=_held(env.seq, opened)),))
    return Step(effects=(ApplyMls(opened=opened),))


CHANNEL_ENTRY_FIRST_BYTE = b"\x00"
"""First byte of an MLSMessage (version mls10 = 0x0001); a sealed envelope starts with 0x01."""


WELCOME_REF_FIRST_BYTE = b"\x02"
"""First byte of a Welcome by reference: ``0x02 || epoch (u64 BE) || EncryptedGroupSecrets``."""


def welcome_ref_entry(epoch: int, secrets: bytes) -> bytes:
    """A joiner's inbox entry for a Welcome by reference (docs/PROTOCOL.md)."""
    return WELCOME_REF_FIRST_BYTE + epoch.to_bytes(8, "big") + secrets


def parse_welcome_ref(data: bytes) -> tuple[int, bytes]:
    """(epoch, EncryptedGroupSecrets) of a Welcome reference; :class:`MalformedInput` if bad."""
    if len(data) < 10 or data[:1] != WELCOME_REF_FIRST_BYTE:
        raise MalformedInput("not a Welcome reference")
    return int.from_bytes(data[1:9], "big"), data[9:]


def welcome_parts_missing(opened: OpenedEnvelope) -> Step:
    """The node has no shared parts for our Welcome reference (acked, expired, or never stored)."""
    return _warn(
        "Welcome rejected: its ratchet tree and GroupInfo are not on the node", opened.channel_id
    )


def _channel_entry(env: Envelope, device_id: bytes) -> OpenedEnvelope | Step:
    """A channel-log entry: the MLS message itself, stored once for every
    reader (docs/PROTOCOL.md, "Channel logs"). It has no outer envelope, so
    no outer sender (``sender`` is empty); MLS authenticates the content."""
    try:
        info = mls.message_info(env.data)
    except MlsError as exc:
        return _warn(f"malformed channel message ({type(exc).__name__})", env.channel_id)
    if info.kind == "welcome":
        ctype = ContentType.MLS_WELCOME
    elif info.kind in ("private_message", "public_message") and info.group_id == env.channel_id:
        ctype = ContentType.MLS_APPLICATION
    else:
        return _warn("channel message of the wrong kind or channel", env.channel_id)
    return OpenedEnvelope(
        recipient_id=device_id,
        channel_id=env.channel_id,
        content_type=ctype,
        sender=b"",
        body=env.data,
    )


def _held(seq: int, opened: OpenedEnvelope) -> HeldEnvelope:
    return HeldEnvelope(
        seq=seq,
        channel=opened.channel_id.hex(),
        content_type=int(opened.content_type),
        sender=opened.sender.hex(),
        body=base64.b64encode(opened.body).decode(),
    )


def on_joined(opened: OpenedEnvelope, joined: GroupView | MlsError) -> Step:
    """Check a group joined from a Welcome (or the join's failure)."""
    channel = opened.channel_id
    if isinstance(joined, MlsError):
        if opened.body[:1] == WELCOME_REF_FIRST_BYTE and isinstance(joined, InvalidMessage):
            return _warn(
                "Welcome rejected (InvalidMessage): the ratchet tree or GroupInfo "
                "from the node does not match the Welcome",
                channel,
            )
        return _warn(f"Welcome rejected ({type(joined).__name__})", channel)
    if joined.group_id != channel:
        return _warn(
            "Welcome for a different channel than its envelope",
            channel,
            DeleteGroup(channel=joined.group_id),
        )
    if not opened.sender:
        # From a channel log: no outer sender; OpenMLS checked the GroupInfo
        # signature of the member that made the Welcome.
        return Step(effects=(Joined(channel=channel, inviter=b"", inviter_user=""),))
    inviter = joined.member_by_key(opened.sender)
    if inviter is None:
        return _warn("Welcome sealed by a non-member", channel, DeleteGroup(channel=channel))
    user = inviter.identity.decode("utf-8", "replace")
    return Step(
        effects=(
            LearnDevice(device=opened.sender, user=user),
            Joined(channel=channel, inviter=opened.sender, inviter_user=user),
        )
    )


ProcessResult = mls.ApplicationMessage | mls.CommitMerged | mls.ProposalStored | mls.OwnMessage


def on_processed(
    opened: OpenedEnvelope,
    before: GroupView,
    result: ProcessResult | MlsError,
    *,
    now_ms: int,
) -> Step:
    """What an MLS result means; ``before`` is the group as it was before the transaction."""
    channel = opened.channel_id
    if isinstance(result, MlsError):
        return _warn(f"MLS message rejected ({type(result).__name__})", channel)
    if isinstance(result, mls.OwnMessage):
        return _NOTHING
    sender = before.member_by_leaf(result.sender_leaf)
    warn: tuple[api.EngineEvent, ...] = ()
    if opened.sender and sender is not None and sender.signature_key != opened.sender:
        # MLS verified the content, but somebody else sealed it to us.
        warned = _warn("envelope signer is not the MLS sender", channel)
        if isinstance(result, mls.ApplicationMessage):
            return warned
        warn = warned.events
    if isinstance(result, mls.ApplicationMessage):
        if sender is None:
            return _warn("application message from a non-member", channel)
        return _on_app(channel, sender, result.plaintext, now_ms=now_ms)
    if isinstance(result, mls.ProposalStored):
        effects: tuple[Effect, ...] = ()
        if result.kind == "remove":
            effects = (LeaveRequested(channel=channel),)
        return Step(events=warn, effects=effects)
    return Step(
        events=warn,
        effects=(
            CommitSeen(
                channel=channel, added=tuple(result.added), removed_self=result.self_removed
            ),
        ),
    )


def _on_app(channel: bytes, sender: mls.Member, plaintext: bytes, *, now_ms: int) -> Step:
    try:
        item = appdata.decode(plaintext)
    except MalformedInput:
        return _warn("malformed application data", channel)
    user = sender.identity.decode("utf-8", "replace")
    if isinstance(item, appdata.Hello):
        return Step(
            effects=(
                LearnDevice(device=sender.signature_key, user=user, access_key=item.access_key),
            )
        )
    learn = LearnDevice(device=sender.signature_key, user=user)
    if isinstance(item, appdata.Meta):
        return Step(
            effects=(
                learn,
                SetChannelMeta(channel=channel, name=item.name, kind=item.kind),
                SetAccessKeys(keys=dict(item.access_keys)),
            )
        )
    if isinstance(item, appdata.ChatText):
        nonce = item.nonce or f"{item.ts}:{item.text}".encode()  # legacy records: no nonce
        msg = ChatMessage(
            channel_id=channel,
            sender=sender.signature_key,
            sender_name=user,
            timestamp_ms=item.ts,
            text=item.text,
            msg_id=appdata.message_id(sender.signature_key, nonce),
            reply_to=item.reply_to,
            action=item.action,
        )
        return Step(effects=(learn, StoreMessage(message=msg), AddUnread(channel=channel)))
    change = _change(channel, user, item)
    if change is not None:
        return Step(effects=(learn, ApplyChange(change=change)))
    if isinstance(item, appdata.Topic):
        return Step(effects=(learn, SetTopic(channel=channel, topic=item.text, by=user)))
    if isinstance(item, appdata.DeviceCert):
        try:
            verify_device_cert(
                sender.signature_key, user, item.device, item.issued_ms, item.signature
            )
        except BadSignature:
            return _warn("device certificate does not verify", channel)
        cert = CertifyDevice(
            user=user,
            issuer=sender.signature_key,
            device=item.device,
            issued_ms=item.issued_ms,
            signature=item.signature,
        )
        return Step(effects=(learn, cert))
    if isinstance(item, appdata.Typing):
        return Step(effects=(learn, SawTyping(channel=channel, user=user)))
    if isinstance(item, appdata.Receipt):
        return Step(effects=(learn, SawReceipt(channel=channel, user=user, up_to=item.up_to)))
    # A kind from a newer version: a placeholder line, never a failure.
    msg = ChatMessage(
        channel_id=channel,
        sender=sender.signature_key,
        sender_name=user,
        timestamp_ms=now_ms,
        text=UNKNOWN_PLACEHOLDER,
    )
    return Step(effects=(learn, StoreMessage(message=msg)))


UNKNOWN_PLACEHOLDER = "[a newer kind of message that this version cannot show; update qpc]"
"""The text stored for a record of a kind this version does not know."""


def _change(channel: bytes, user: str, item: appdata.AppData) -> MessageChange | None:
    if isinstance(item, appdata.Edit):
        return MessageChange(
            channel_id=channel, target=item.target, actor=user, kind="edit", text=item.text
        )
    if isinstance(item, appdata.Delete):
        return MessageChange(channel_id=channel, target=item.target, actor=user, kind="delete")
    if isinstance(item, appdata.Reaction):
        kind = "unreact" if item.remove else "react"
        return MessageChange(
            channel_id=channel, target=item.target, actor=user, kind=kind, emoji=item.emoji
        )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """A held envelope that can be processed now."""

    held: HeldEnvelope
    opened: OpenedEnvelope = field(compare=False)


def releasable(
    held: Sequence[HeldEnvelope], group: GroupView, *, device_id: bytes
) -> Release | None:
    """The oldest held envelope of ``group`` whose epoch has been reached, if any."""
    gid = group.group_id.hex()
    for h in sorted(held, key=lambda h: h.seq):
        if h.channel != gid:
            continue
        body = h.body_bytes()
        epoch = mls.message_info(body).epoch
        if epoch is not None and epoch > group.epoch:
            continue
        opened = OpenedEnvelope(
            recipient_id=device_id,
            channel_id=group.group_id,
            content_type=ContentType(h.content_type),
            sender=bytes.fromhex(h.sender),
            body=body,
        )
        return Release(held=h, opened=opened)
    return None
