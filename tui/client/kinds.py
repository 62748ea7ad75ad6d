"""The message-kinds part: reactions, edits, deletes, topic, typing, read receipts.

Each is one application-data record (:mod:`proto.appdata`) sent to the
channel through MLS like a chat text. Changes to a message (reaction, edit,
delete) are applied to our own store first, with the same rules every
receiver applies (:meth:`tui.client.profile.Profile.apply_change`: edit and
delete only by the author's credential), then sent. Typing notices and read
receipts are never stored as chat lines and are coalesced: at most one
typing notice per channel every :data:`~tui.client.api.TYPING_EVERY_S`, one
receipt per channel per read position and at most one every
:data:`~tui.client.api.RECEIPT_EVERY_S` (a busy channel read live sends
one receipt per interval, not one per message); each can be switched off per
profile (:meth:`Kinds.set_privacy`, kept in the encrypted engine state).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from proto.errors import LocalError, QpcError
from tui.client import api, appdata, notices
from tui.client.core import Session
from tui.client.profile import ChatMessage, MessageChange
from tui.client.sending import OFFLINE, Outbox, parse_id
from tui.client.state import EngineState
from tui.client.views import Events, Views, now_ms

__all__ = ["Kinds"]

log = logging.getLogger("tui.client.engine")


class Kinds:
    """Reactions, edits, deletes, topic, typing and receipts (see module docstring)."""

    def __init__(
        self,
        session: Session,
        state: EngineState,
        events: Events,
        views: Views,
        outbox: Outbox,
    ) -> None:
        """The part over ``session``; sends through ``outbox``."""
        self._session = session
        self._state = state
        self._events = events
        self._views = views
        self._outbox = outbox
        self._typing_sent: dict[bytes, float] = {}
        self._receipt_sent: dict[bytes, float] = {}
        """Channel -> monotonic time of our last read receipt there."""
        self._receipt_pending: dict[bytes, bytes] = {}
        """Channel -> newest message id read, waiting for RECEIPT_EVERY_S to pass."""
        self._receipt_tasks: dict[bytes, asyncio.Task[None]] = {}

    async def _change(
        self, channel: str, change_of: MessageChange, item: appdata.Known
    ) -> api.Message:
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            self._views.group(cid)  # still a member?
            change = MessageChange(
                channel_id=cid,
                target=change_of.target,
                actor=self._session.user,
                kind=change_of.kind,
                text=change_of.text,
                emoji=change_of.emoji,
            )
            stored = await self._session.profile.find_message(cid, change.target)
            if stored is None:
                raise LocalError("no such message in this channel")
            if change.kind in ("edit", "delete") and stored.sender_name != self._session.user:
                raise LocalError(f"only the author can {change.kind} a message")
            if stored.deleted:
                raise LocalError("that message was deleted")
            try:
                missing = await self._outbox.send_app(cid, item)
            except OFFLINE:
                missing = {"offline"}
            if missing:
                raise LocalError("the node is unreachable; nothing was changed")
            changed = await self._session.profile.apply_change(change)
            if changed is None:  # pragma: no cover - checked above under the mutex
                raise LocalError("the message could not be changed")
        msg = self._views.to_api(changed)
        self._events.emit(api.MessageChanged(message=msg))
        return msg

    async def react(
        self, channel: str, msg_id: str, emoji: str, *, remove: bool = False
    ) -> api.Message:
        """Add (or take back) our reaction ``emoji`` on a message."""
        emoji = emoji.strip()
        if not emoji or len(emoji) > appdata.MAX_EMOJI_CHARS:
            raise LocalError(f"a reaction must have 1..{appdata.MAX_EMOJI_CHARS} characters")
        target = parse_id(msg_id)
        kind = "unreact" if remove else "react"
        proto_change = MessageChange(
            channel_id=b"", target=target, actor="", kind=kind, emoji=emoji
        )
        return await self._change(
            channel, proto_change, appdata.Reaction(target=target, emoji=emoji, remove=remove)
        )

    async def edit(self, channel: str, msg_id: str, text: str) -> api.Message:
        """Replace the text of one of our messages everywhere."""
        if not text or len(text) > appdata.MAX_TEXT_CHARS:
            raise LocalError(f"a message must have 1..{appdata.MAX_TEXT_CHARS} characters")
        target = parse_id(msg_id)
        proto_change = MessageChange(
            channel_id=b"", target=target, actor="", kind="edit", text=text
        )
        return await self._change(
            channel,
            proto_change,
            appdata.Edit(target=target, text=text, ts=int(time.time() * 1000)),
        )

    async def delete(self, channel: str, msg_id: str) -> api.Message:
        """Delete one of our messages everywhere (a tombstone stays)."""
        target = parse_id(msg_id)
        proto_change = MessageChange(channel_id=b"", target=target, actor="", kind="delete")
        return await self._change(channel, proto_change, appdata.Delete(target=target))

    async def set_topic(self, channel: str, topic: str) -> api.ChannelInfo:
        """Set the channel topic for every member."""
        topic = topic.strip()
        if len(topic) > appdata.MAX_TOPIC_CHARS:
            raise LocalError(f"a topic has at most {appdata.MAX_TOPIC_CHARS} characters")
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            self._views.group(cid)
            try:
                missing = await self._outbox.send_app(cid, appdata.Topic(text=topic))
            except OFFLINE:
                missing = {"offline"}
            if missing:
                raise LocalError("the node is unreachable; the topic was not changed")
            self._views.channel_record(cid).topic = topic
            await self._session.save()
            me = self._session.user
            entry = notices.notice(cid, notices.topic_text(me, topic), by=me, now_ms=now_ms())
            local_id = await self._session.profile.append_message(entry)
        stored = self._views.to_api(dataclasses.replace(entry, local_id=local_id))
        self._events.emit(api.MessageReceived(message=stored))
        self._events.emit(api.TopicChanged(channel=cid.hex(), topic=topic, by=self._session.user))
        self._views.emit_channels()
        return self._views.channel_info(cid)

    async def set_privacy(
        self, *, receipts: bool | None = None, typing: bool | None = None
    ) -> api.Privacy:
        """Switch read receipts and typing notices on or off (None: unchanged); saved."""
        async with self._session.mutex:
            if receipts is not None:
                self._state.send_receipts = receipts
            if typing is not None:
                self._state.send_typing = typing
            await self._session.save()
            return api.Privacy(receipts=self._state.send_receipts, typing=self._state.send_typing)

    async def typing(self, channel: str) -> None:
        """Send a typing notice, at most one per channel every TYPING_EVERY_S (best effort)."""
        if not self._state.send_typing:
            return
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            now = time.monotonic()
            if now - self._typing_sent.get(cid, -1e9) < api.TYPING_EVERY_S:
                return
            self._typing_sent[cid] = now
            try:
                await self._outbox.send_app(cid, appdata.Typing())
            except (*OFFLINE, QpcError) as exc:
                log.info("typing notice not sent: %s", type(exc).__name__)

    async def read_up_to(self, cid: bytes, newest: ChatMessage | None) -> None:
        """Send a read receipt for ``newest`` unless already sent (caller holds the mutex).

        Coalesced: at most one receipt per channel every RECEIPT_EVERY_S; reads
        in between only move the position, sent once the interval has passed.
        """
        if not self._state.send_receipts or newest is None or not newest.msg_id:
            return
        if newest.outgoing:
            return
        rec = self._views.channel_record(cid)
        if rec.read_sent == newest.msg_id.hex() or not rec.active:
            return
        wait = self._receipt_sent.get(cid, -1e9) + api.RECEIPT_EVERY_S - time.monotonic()
        if wait > 0:
            self._receipt_pending[cid] = newest.msg_id
            task = self._receipt_tasks.get(cid)
            if task is None or task.done():
                self._receipt_tasks[cid] = asyncio.get_running_loop().create_task(
                    self._send_later(cid, wait)
                )
            return
        await self._send_receipt(cid, newest.msg_id)

    async def _send_later(self, cid: bytes, wait: float) -> None:
        await asyncio.sleep(wait)
        async with self._session.mutex:
            mid = self._receipt_pending.pop(cid, None)
            if mid is not None and self._state.send_receipts:
                await self._send_receipt(cid, mid)

    async def _send_receipt(self, cid: bytes, mid: bytes) -> None:
        rec = self._views.channel_record(cid)
        self._receipt_sent[cid] = time.monotonic()
        try:
            missing = await self._outbox.send_app(cid, appdata.Receipt(up_to=mid))
        except (*OFFLINE, QpcError) as exc:
            log.info("read receipt not sent: %s", type(exc).__name__)
            return
        if not missing:
            rec.read_sent = mid.hex()
            await self._session.save()

    async def close(self) -> None:
        """Drop receipts still waiting for their interval (best effort, like typing)."""
        for task in self._receipt_tasks.values():
            task.cancel()
        for task in self._receipt_tasks.values():
            with contextlib.suppress(asyncio.CancelledError, QpcError):
                await task
        self._receipt_tasks.clear()
