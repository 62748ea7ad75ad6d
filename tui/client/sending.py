"""The outbox part: sending application messages, the outbox and its retries.

Application messages are encrypted once with MLS, then sealed per device in
the hybrid envelope and enqueued (sealed sender when the recipient shared its
access key). Unreachable node: the message stays in the durable outbox.
"""

from __future__ import annotations

import asyncio
import logging

from proto import mls
from proto.crypto.envelope import ContentType
from proto.errors import (
    ConnectionLost,
    LocalError,
    MlsError,
    NotFound,
    PermissionDenied,
    TransportError,
)
from tui.client import api, appdata
from tui.client.core import Session
from tui.client.profile import ChatMessage
from tui.client.state import EngineState, OutboxEntry
from tui.client.views import Events, Views, now_ms

__all__ = ["OFFLINE", "Outbox"]

log = logging.getLogger("tui.client.engine")

OFFLINE = (ConnectionLost, TransportError)
"""Errors meaning "the node is unreachable": the message waits in the outbox."""


class Outbox:
    """Sending and the durable outbox (see module docstring)."""

    def __init__(self, session: Session, state: EngineState, events: Events, views: Views) -> None:
        """The outbox of ``session``'s device; ``views`` resolves channels and groups."""
        self._session = session
        self._state = state
        self._events = events
        self._views = views
        self._inflight: set[int] = set()
        """``id()`` of outbox entries being delivered outside the mutex."""

    # ------------------------------------------------------------------ sending

    def _prepare(
        self,
        channel: bytes,
        item: appdata.ChatText | appdata.Meta | appdata.Hello,
        only: set[str] | None = None,
        group: mls.Group | None = None,
    ) -> tuple[bytes, list[tuple[bytes, str]]]:
        """Encrypt once with MLS; the ciphertext and the target devices (under the mutex)."""
        if group is None:
            group = self._views.group(channel)
        ciphertext = group.encrypt(appdata.encode(item))
        targets = [
            (m.signature_key, m.identity.decode("utf-8", "replace"))
            for m in group.members()
            if m.signature_key != self._session.device_id
            and (only is None or m.signature_key.hex() in only)
        ]
        return ciphertext, targets

    async def _deliver(
        self, channel: bytes, ciphertext: bytes, targets: list[tuple[bytes, str]]
    ) -> set[str]:
        """Seal per device and enqueue (sealed sender when we hold the access key).

        Needs no mutex, so several messages can be in flight. Returns the hex
        ids of devices that could not be reached (offline).
        """
        rpc = await self._session.rpc()

        async def one(dev: bytes, user: str) -> str | None:
            try:
                payload = await self._session.seal_for(
                    dev, user, channel, ContentType.MLS_APPLICATION, ciphertext
                )
                rec = self._state.devices.get(dev.hex())
                if self._session.config.sealed_sender and rec is not None and rec.access_key:
                    try:
                        await rpc.enqueue(
                            recipient=dev,
                            channel_id=channel,
                            payload=payload,
                            access_key=bytes.fromhex(rec.access_key),
                            auth=b"",
                        )
                        return None
                    except PermissionDenied:
                        log.info("a stale access key; sending with our token")
                await rpc.enqueue(recipient=dev, channel_id=channel, payload=payload)
            except OFFLINE:
                return dev.hex()
            except NotFound:
                log.info("a member device is gone from the node; skipped")
            return None

        failed = await asyncio.gather(*(one(d, u) for d, u in targets))
        return {f for f in failed if f is not None}

    async def send_app(
        self,
        channel: bytes,
        item: appdata.ChatText | appdata.Meta | appdata.Hello,
        only: set[str] | None = None,
    ) -> set[str]:
        """Encrypt, seal and enqueue to every member device (caller holds the mutex)."""
        ciphertext, targets = self._prepare(channel, item, only)
        return await self._deliver(channel, ciphertext, targets)

    async def send(self, channel: str, text: str) -> api.Message:
        """Encrypt and send ``text``; offline, the message waits in the outbox.

        The MLS encryption happens under the engine mutex (so messages keep
        their order); storing, sealing and enqueueing do not, so several sends
        can be in flight at once.
        """
        if not text or len(text) > appdata.MAX_TEXT_CHARS:
            raise LocalError(f"a message must have 1..{appdata.MAX_TEXT_CHARS} characters")
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            group = self._views.group(cid)
            if self._waiting():
                await self.flush()
            ts = now_ms()
            stored = ChatMessage(
                channel_id=cid,
                sender=self._session.device_id,
                sender_name=self._session.user,
                timestamp_ms=ts,
                text=text,
                outgoing=True,
            )
            entry = OutboxEntry(id=0, channel=cid.hex(), text=text, ts=ts)
            self._state.outbox.append(entry)
            self._views.channel_record(cid).last_ms = ts
            prepared = None
            if self._waiting() == [entry]:  # nothing older waits: send now
                prepared = self._prepare(cid, appdata.ChatText(text=text, ts=ts), group=group)
                self._inflight.add(id(entry))
            else:  # older messages wait for the node: queue behind them, durably
                entry.id = await self._session.append_message(stored)
                await self._session.save()
        if prepared is not None:
            # Storing and delivering overlap; the outbox entry becomes durable
            # only if some device could not be reached.
            missing: set[str] = set()
            delivered = False
            try:
                entry.id, missing = await asyncio.gather(
                    self._session.append_message(stored), self._deliver(cid, *prepared)
                )
                delivered = True
            finally:
                if delivered and missing:  # durable outbox entry for the missing devices
                    async with self._session.mutex:
                        self._inflight.discard(id(entry))
                        entry.devices = sorted(missing)
                        await self._session.save()
                else:  # no await: nothing under the mutex sees a half-done change
                    self._inflight.discard(id(entry))
                    self._state.outbox = [o for o in self._state.outbox if o is not entry]
        local_id = entry.id
        msg = self._views.to_api(
            ChatMessage(
                channel_id=cid,
                sender=self._session.device_id,
                sender_name=self._session.user,
                timestamp_ms=ts,
                text=text,
                outgoing=True,
                local_id=local_id,
            )
        )
        self._events.emit(api.MessageReceived(message=msg))
        return msg

    async def _try_send(self, entry: OutboxEntry) -> bool:
        """Send one outbox entry; True when it left the outbox (sent or failed)."""
        cid = bytes.fromhex(entry.channel)
        only = set(entry.devices) if entry.devices else None
        try:
            missing = await self.send_app(cid, appdata.ChatText(text=entry.text, ts=entry.ts), only)
        except OFFLINE:
            return False
        except (LocalError, MlsError) as exc:
            log.info("message could not be sent: %s", type(exc).__name__)
            self._state.outbox.remove(entry)
            self._state.failed.append(entry.id)
            self._state_changed(entry, api.DeliveryState.FAILED)
            return True
        if missing:
            entry.devices = sorted(missing)
            return False
        self._state.outbox.remove(entry)
        self._state_changed(entry, api.DeliveryState.SENT)
        return True

    def _waiting(self) -> list[OutboxEntry]:
        """Outbox entries not being delivered right now."""
        return [o for o in self._state.outbox if id(o) not in self._inflight]

    def _state_changed(self, entry: OutboxEntry, state: api.DeliveryState) -> None:
        self._events.emit(
            api.MessageStateChanged(message_id=entry.id, channel=entry.channel, state=state)
        )

    async def flush(self) -> None:
        """Send what waits in the outbox, oldest first (caller holds the mutex)."""
        if not self._state.outbox:
            return
        for entry in self._waiting():
            if not await self._try_send(entry):
                break
        await self._session.save()
