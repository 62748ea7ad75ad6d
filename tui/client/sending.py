"""The outbox part: sending application messages, the outbox and its retries.

Application messages are encrypted once with MLS and posted once to the
node's channel log with ``postChannel`` (docs/PROTOCOL.md, "Channel logs"):
stored once, referenced from each member device's inbox. The post carries no
session token: the epoch's post key authorises it, so the node does not learn
which member sent it. Until the committer of a new epoch has set that
epoch's key the node refuses the post; the outbox waits a little and retries,
then keeps the message. Unreachable node: the message stays in the durable
outbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging

from proto import mls
from proto.errors import (
    ConnectionLost,
    LocalError,
    MlsError,
    PermissionDenied,
    TransportError,
)
from tui.client import api, appdata
from tui.client.core import Session
from tui.client.profile import ChatMessage
from tui.client.state import EngineState, OutboxEntry
from tui.client.views import Events, Views, now_ms

__all__ = [
    "KEY_WAIT_S",
    "OFFLINE",
    "POST_KEY_LABEL",
    "Outbox",
    "key_hash",
    "parse_id",
    "post_key",
]

log = logging.getLogger("tui.client.engine")

OFFLINE = (ConnectionLost, TransportError)
"""Errors meaning "the node is unreachable": the message waits in the outbox."""
POST_KEY_LABEL = "qpc channel post key v1"
"""MLS exporter label of a channel's post capability (docs/PROTOCOL.md)."""
KEY_WAIT_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
"""Waits for the committer of a new epoch to set its post key."""
DEVICE_ID_BYTES = 32
"""A deviceId is its Ed25519 signature key: 32 bytes (the node checks the same)."""


def post_key(group: mls.Group) -> bytes:
    """The channel's post capability for the group's current epoch (32 bytes)."""
    return group.export_secret(POST_KEY_LABEL, b"", 32)


def key_hash(key: bytes) -> bytes:
    """What the node stores of a post capability."""
    return hashlib.sha256(key).digest()


def parse_id(text: str) -> bytes:
    """A message id from its hex form.

    Raises:
        LocalError: not 32 hex digits.
    """
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raw = b""
    if len(raw) != appdata.ID_BYTES:
        raise LocalError(f"not a message id: {text[:40]!r} (32 hex digits)")
    return raw


def _chat_text(entry: OutboxEntry) -> appdata.ChatText:
    return appdata.ChatText(
        text=entry.text,
        ts=entry.ts,
        nonce=bytes.fromhex(entry.nonce),
        reply_to=bytes.fromhex(entry.reply_to),
        action=entry.action,
    )


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
        item: appdata.Known,
        only: set[str] | None = None,
        group: mls.Group | None = None,
    ) -> tuple[bytes, list[bytes], bytes]:
        """Encrypt once with MLS (under the mutex): the ciphertext, the target
        devices and the epoch's post key."""
        if group is None:
            group = self._views.group(channel)
        # defer_write: in groups of 16+ members the binding writes the sender
        # ratchet once per 128 sends, stored ahead (docs/MLS.md, "Senders").
        ciphertext = group.encrypt(appdata.encode(item), defer_write=True)
        targets = [
            m.signature_key
            for m in group.members()
            if m.signature_key != self._session.device_id
            # deviceIds are 32 bytes (Ed25519 keys): any other member key is
            # not a device the node knows, and would misalign the packed list
            and len(m.signature_key) == DEVICE_ID_BYTES
            and (only is None or m.signature_key.hex() in only)
        ]
        return ciphertext, targets, post_key(group)

    async def _deliver(
        self, channel: bytes, ciphertext: bytes, targets: list[bytes], key: bytes
    ) -> set[str]:
        """Post the ciphertext once to the channel log for every target device.

        No session token: the post key authorises it. Needs no mutex, so
        several messages can be in flight. Returns the hex ids of the devices
        not reached (node unreachable, or the key still refused after waiting
        for the epoch's committer: the outbox then re-encrypts in the epoch the
        engine reaches next).
        """
        if not targets:
            return set()
        rpc = await self._session.rpc()
        waits = iter(KEY_WAIT_S)
        while True:
            try:
                await rpc.post_channel(
                    channel_id=channel,
                    post_key=key,
                    recipient_ids=b"".join(targets),  # packed: 32 B per device
                    payload=ciphertext,
                    auth=b"",
                )
                return set()
            except OFFLINE:
                return {d.hex() for d in targets}
            except PermissionDenied:
                wait = next(waits, None)
                if wait is None:
                    log.info("channel post key refused; the message waits in the outbox")
                    return {d.hex() for d in targets}
                await asyncio.sleep(wait)

    async def send_app(
        self,
        channel: bytes,
        item: appdata.Known,
        only: set[str] | None = None,
    ) -> set[str]:
        """Encrypt and post to every member device (caller holds the mutex)."""
        return await self._deliver(channel, *self._prepare(channel, item, only))

    async def send(
        self, channel: str, text: str, *, reply_to: str = "", action: bool = False
    ) -> api.Message:
        """Encrypt and send ``text``; offline, the message waits in the outbox.

        ``reply_to`` is the parent's hex message id; ``action`` marks ``/me``.

        The MLS encryption happens under the engine mutex (so messages keep
        their order); storing, sealing and enqueueing do not, so several sends
        can be in flight at once.
        """
        if not text or len(text) > appdata.MAX_TEXT_CHARS:
            raise LocalError(f"a message must have 1..{appdata.MAX_TEXT_CHARS} characters")
        parent = parse_id(reply_to) if reply_to else b""
        nonce = appdata.new_nonce()
        mid = appdata.message_id(self._session.device_id, nonce)
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
                msg_id=mid,
                reply_to=parent,
                action=action,
            )
            entry = OutboxEntry(
                id=0,
                channel=cid.hex(),
                text=text,
                ts=ts,
                nonce=nonce.hex(),
                reply_to=parent.hex(),
                action=action,
            )
            self._state.outbox.append(entry)
            self._views.channel_record(cid).last_ms = ts
            prepared = None
            if self._waiting() == [entry]:  # nothing older waits: send now
                prepared = self._prepare(cid, _chat_text(entry), group=group)
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
        msg = self._views.to_api(dataclasses.replace(stored, local_id=local_id))
        self._events.emit(api.MessageReceived(message=msg))
        return msg

    async def _try_send(self, entry: OutboxEntry) -> bool:
        """Send one outbox entry; True when it left the outbox (sent or failed)."""
        cid = bytes.fromhex(entry.channel)
        only = set(entry.devices) if entry.devices else None
        try:
            missing = await self.send_app(cid, _chat_text(entry), only)
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
