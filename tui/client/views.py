"""The engine's views and events: what the TUI sees of channels and messages.

Emitting events to the live :meth:`~tui.client.delivery.Delivery.events`
iterators, security warnings, and the API views of channels, members and
stored messages (built from the engine state and the MLS groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import IO

from proto import mls
from proto.errors import MlsError
from tui.client import api
from tui.client.core import EngineConfig, EngineCore
from tui.client.profile import ChatMessage, Profile
from tui.client.state import ChannelRecord

__all__ = ["Views", "now_ms"]

log = logging.getLogger("tui.client.delivery")


def now_ms() -> int:
    """Wall clock, Unix ms."""
    return int(time.time() * 1000)


class Views(EngineCore):
    """Events and API views (the base of the receiving and sending halves)."""

    def __init__(self, config: EngineConfig, profile: Profile, lock: IO[str]) -> None:
        """Internal: use :meth:`tui.client.engine.Engine.open`."""
        super().__init__(config, profile, lock)
        self._listeners: list[asyncio.Queue[api.EngineEvent]] = []

    # ------------------------------------------------------------------ events

    def emit(self, event: api.EngineEvent) -> None:
        """Deliver an event to every live :meth:`events` iterator."""
        for q in self._listeners:
            q.put_nowait(event)

    def warn(self, reason: str, channel: bytes = b"", user: str = "") -> None:
        """Log a rejection (no content) and emit a security warning."""
        log.warning("rejected: %s (channel %s)", reason, channel.hex()[:16])
        self.emit(api.SecurityWarning(reason=reason, channel=channel.hex(), user=user))

    def to_api(self, msg: ChatMessage) -> api.Message:
        """A stored message as the API's :class:`~tui.client.api.Message`."""
        state = api.DeliveryState.RECEIVED
        if msg.outgoing:
            state = api.DeliveryState.SENT
            if any(o.id == msg.local_id for o in self.state.outbox):
                state = api.DeliveryState.PENDING
            elif msg.local_id in self.state.failed:
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
        )

    def channel_record(self, channel: bytes) -> ChannelRecord:
        """The channel's record (created on first use)."""
        return self.state.channels.setdefault(channel.hex(), ChannelRecord())

    # ------------------------------------------------------------------ views

    def member_list(self, group: mls.Group) -> tuple[api.Member, ...]:
        """Members of a group, one entry per user, sorted."""
        users: dict[str, list[str]] = {}
        for m in group.members():
            users.setdefault(m.identity.decode("utf-8", "replace"), []).append(
                m.signature_key.hex()
            )
        me = self.state.user
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
                group = self.mls.load_group(channel)
                members = tuple(m.user for m in self.member_list(group))
                epoch = group.epoch
        name = rec.name
        if rec.kind == "dm":
            others = [m for m in members if m != self.state.user]
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
        )

    def all_channels(self) -> tuple[api.ChannelInfo, ...]:
        """Every known channel, newest activity first."""
        infos = [self.channel_info(bytes.fromhex(c)) for c in self.state.channels]
        return tuple(sorted(infos, key=lambda c: -c.last_activity_ms))

    def emit_channels(self) -> None:
        """Emit :class:`~tui.client.api.ChannelsChanged` if anyone listens."""
        if self._listeners:
            self.emit(api.ChannelsChanged(channels=self.all_channels()))
