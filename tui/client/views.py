"""Events and views: what the TUI sees of channels and messages.

:class:`Events` delivers :data:`~tui.client.api.EngineEvent` values to the
live :meth:`~tui.client.engine.Engine.events` iterators (and logs
rejections). :class:`Views` builds the API views of channels, members and
stored messages from the engine state and the MLS groups; it reads, never
writes, except creating a channel's record on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from proto import mls
from proto.errors import LocalError, MlsError
from tui.client import api
from tui.client.core import Session
from tui.client.profile import ChatMessage
from tui.client.state import ChannelRecord, EngineState

__all__ = ["Events", "Views", "now_ms"]

log = logging.getLogger("tui.client.delivery")


def now_ms() -> int:
    """Wall clock, Unix ms."""
    return int(time.time() * 1000)


class Events:
    """The engine's event fan-out: one queue per live :meth:`subscribe` caller."""

    def __init__(self) -> None:
        """An event bus with no listeners."""
        self._listeners: list[asyncio.Queue[api.EngineEvent]] = []

    @property
    def listening(self) -> bool:
        """Whether any live iterator is subscribed."""
        return bool(self._listeners)

    def subscribe(self) -> asyncio.Queue[api.EngineEvent]:
        """A new queue that receives every event from now on."""
        q: asyncio.Queue[api.EngineEvent] = asyncio.Queue()
        self._listeners.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[api.EngineEvent]) -> None:
        """Stop delivering to ``q``."""
        self._listeners.remove(q)

    def emit(self, event: api.EngineEvent) -> None:
        """Deliver an event to every subscriber."""
        for q in self._listeners:
            q.put_nowait(event)

    def warn(self, reason: str, channel: bytes = b"", user: str = "") -> None:
        """Log a rejection (no content) and emit a security warning."""
        log.warning("rejected: %s (channel %s)", reason, channel.hex()[:16])
        self.emit(api.SecurityWarning(reason=reason, channel=channel.hex(), user=user))


class Views:
    """API views of the engine state and the MLS groups (see module docstring)."""

    def __init__(self, session: Session, state: EngineState, events: Events) -> None:
        """Views over ``state`` and ``session``'s MLS client; ``events`` for change events."""
        self._session = session
        self._state = state
        self._events = events

    def to_api(self, msg: ChatMessage) -> api.Message:
        """A stored message as the API's :class:`~tui.client.api.Message`."""
        state = api.DeliveryState.RECEIVED
        if msg.outgoing:
            state = api.DeliveryState.SENT
            if any(o.id == msg.local_id for o in self._state.outbox):
                state = api.DeliveryState.PENDING
            elif msg.local_id in self._state.failed:
                state = api.DeliveryState.FAILED
        return api.Message(
            id=msg.local_id,
            channel=msg.channel_id.hex(),
            sender=msg.sender_name,
            text=msg.text,
            time_ms=msg.timestamp_ms,
            state=state,
            sender_device=msg.sender.hex(),
            outgoing=msg.outgoing,
            msg_id=msg.msg_id.hex(),
            reply_to=msg.reply_to.hex(),
            action=msg.action,
            edited=msg.edited,
            deleted=msg.deleted,
            reactions=tuple(
                api.Reaction(emoji=e, users=users, mine=self._state.user in users)
                for e, users in msg.reactions
            ),
        )

    def channel_record(self, channel: bytes) -> ChannelRecord:
        """The channel's record (created on first use)."""
        return self._state.channels.setdefault(channel.hex(), ChannelRecord())

    def member_list(self, group: mls.Group) -> tuple[api.Member, ...]:
        """Members of a group, one entry per user, sorted."""
        users: dict[str, list[str]] = {}
        for m in group.members():
            users.setdefault(m.identity.decode("utf-8", "replace"), []).append(
                m.signature_key.hex()
            )
        me = self._state.user
        return tuple(
            api.Member(user=u, devices=tuple(sorted(d)), is_self=u == me)
            for u, d in sorted(users.items())
        )

    def channel_info(self, channel: bytes) -> api.ChannelInfo:
        """The API view of one channel."""
        rec = self.channel_record(channel)
        members: tuple[str, ...] = ()
        epoch = 0
        if rec.active:
            with contextlib.suppress(MlsError):
                group = self._session.mls.load_group(channel)
                members = tuple(m.user for m in self.member_list(group))
                epoch = group.epoch
        name = rec.name
        if rec.kind == "dm":
            others = [m for m in members if m != self._state.user]
            name = others[0] if others else rec.name
        return api.ChannelInfo(
            id=channel.hex(),
            name=name or channel.hex()[:8],
            kind=api.ChannelKind(rec.kind),
            members=members,
            epoch=epoch,
            unread=rec.unread,
            last_activity_ms=rec.last_ms,
            active=rec.active,
            topic=rec.topic,
            seen=tuple(sorted(rec.seen.items())),
        )

    def all_channels(self) -> tuple[api.ChannelInfo, ...]:
        """Every known channel, newest activity first."""
        infos = [self.channel_info(bytes.fromhex(c)) for c in self._state.channels]
        return tuple(sorted(infos, key=lambda c: -c.last_activity_ms))

    def emit_channels(self) -> None:
        """Emit :class:`~tui.client.api.ChannelsChanged` if anyone listens."""
        if self._events.listening:
            self._events.emit(api.ChannelsChanged(channels=self.all_channels()))

    def emit_members(self, channel: bytes, group: mls.Group) -> None:
        """Emit :class:`~tui.client.api.MembersChanged` for ``group``."""
        self._events.emit(
            api.MembersChanged(
                channel=channel.hex(), members=self.member_list(group), epoch=group.epoch
            )
        )

    def group(self, channel: bytes) -> mls.Group:
        """The channel's MLS group, for a channel we are still a member of.

        Raises:
            LocalError: we left or were removed, or no such group here.
        """
        rec = self._state.channels.get(channel.hex())
        if rec is not None and not rec.active:
            raise LocalError("you are no longer a member of this channel")
        try:
            return self._session.mls.load_group(channel)
        except MlsError as exc:
            raise LocalError(f"no such channel here ({type(exc).__name__})") from None

    def resolve(self, channel: str) -> bytes:
        """A channel id from hex id, unique hex prefix or unique name.

        Raises:
            LocalError: no channel or several match.
        """
        text = channel.strip()
        channels = self._state.channels
        if text.lower() in channels:
            return bytes.fromhex(text.lower())
        hits = [c for c in channels if c.startswith(text.lower()) and len(text) >= 4]
        if not hits:
            # "#name" is a group, "@user" a DM, a bare name either.
            kind = {"#": api.ChannelKind.GROUP, "@": api.ChannelKind.DM}.get(text[:1])
            name = text[1:] if kind is not None else text
            infos = [self.channel_info(bytes.fromhex(c)) for c in channels]
            hits = [i.id for i in infos if i.name == name and (kind is None or i.kind is kind)]
            active = [c for c in hits if channels[c].active]
            hits = active or hits
        if len(hits) != 1:
            raise LocalError(
                f"no channel {channel!r}" if not hits else f"{channel!r} is ambiguous; use its id"
            )
        return bytes.fromhex(hits[0])
