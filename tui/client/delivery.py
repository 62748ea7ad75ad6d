"""Receiving: fetch, open, order, process, persist, then ack; live events.

Ordering rules (design §5):

* envelopes are processed in ``seq`` order; a seq at or below the persisted
  cursor is a duplicate and skipped;
* an MLS message of a future epoch is held (in the encrypted state) until the
  commit that reaches its epoch has been processed;
* everything the user sees, and the cursor, is persisted before ``ack``.

Anything that fails validation (envelope that does not open, is for another
device, has a bad sender signature; MLS message that does not verify, comes
from a non-member, or a Welcome replayed) is dropped with a logged reason and a
:class:`~tui.client.api.SecurityWarning` event; the channel keeps working.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import IO

from proto import mls
from proto.codec import Envelope
from proto.crypto.envelope import ContentType, OpenedEnvelope, open_envelope
from proto.errors import (
    ConnectionLost,
    CryptoError,
    MalformedInput,
    MlsError,
    QpcError,
    TransportError,
    Unavailable,
    UnknownGroup,
)
from tui.client import api, appdata
from tui.client.core import EngineConfig
from tui.client.profile import ChatMessage, Profile
from tui.client.state import DeviceRecord, HeldEnvelope
from tui.client.views import Views, now_ms

__all__ = ["CRASH_ENV", "Delivery", "now_ms"]

log = logging.getLogger("tui.client.delivery")

CRASH_ENV = "QPC_TEST_CRASH"
"""Test hook: ``before-save``/``before-ack`` exit the process at that point of a batch."""
MAX_HELD = 1000
"""Most future-epoch envelopes held at once (the oldest are dropped beyond)."""
FETCH_LIMIT = 500
CHANNEL_ENTRY_FIRST_BYTE = b"\x00"
"""First byte of an MLSMessage (version mls10 = 0x0001); a sealed envelope starts with 0x01."""
ACK_DELAY_S = 0.05
"""How long the live subscription coalesces saves and acks."""


class Delivery(Views):
    """Inbox processing and the live event stream (see module docstring)."""

    def __init__(self, config: EngineConfig, profile: Profile, lock: IO[str]) -> None:
        """Internal: use :meth:`tui.client.engine.Engine.open`."""
        super().__init__(config, profile, lock)
        self._listen_task: asyncio.Task[None] | None = None
        self._conn_state: api.ConnectionState | None = None
        self.joined: list[bytes] = []
        """Channels joined in the current batch (the engine says hello in them)."""
        self.leave_requests: set[bytes] = set()
        """Channels with a pending remove proposal to commit."""
        self._inflight: set[int] = set()
        self._keys_due: set[bytes] = set()
        """Channels whose post key we, their committer, still have to set."""
        self._flush_task: asyncio.Task[None] | None = None
        self._stored: list[tuple[ChatMessage, asyncio.Future[int]]] = []
        """History appends of the current batch, queued and not yet awaited."""

    # ------------------------------------------------------------------ fetch

    async def drain(self) -> list[api.Message]:
        """Fetch and process everything waiting (caller holds :attr:`mutex`)."""
        out: list[api.Message] = []
        while True:
            rpc = await self.rpc()
            res = await rpc.fetch(after_seq=self.state.cursor, limit=FETCH_LIMIT)
            if not res.envelopes:
                break
            out += await self.process_batch(res.envelopes)
            if len(res.envelopes) < FETCH_LIMIT:
                break
        return out

    async def process_batch(
        self, envelopes: Sequence[Envelope], *, defer_ack: bool = False
    ) -> list[api.Message]:
        """Process envelopes in seq order, persist, then ack (caller holds the mutex).

        Messages are queued for the history as they are processed and the whole
        batch commits at once (one transaction, crash-safe: no fsync); they are
        reported (events and the return value) only after that commit. The
        cursor is saved and the node acked right away, or with ``defer_ack`` a
        moment later (coalescing a burst into one save and one ack). Either way
        the save is durable (its fsync covers the history committed before it)
        and precedes the ack, so the node never deletes a message that a power
        cut could still take from this device; a crash before the save only
        means the node redelivers, and the replays are refused by MLS (their
        secrets are gone), so nothing is stored twice.
        """
        for env in sorted(envelopes, key=lambda e: e.seq):
            if env.seq <= self.state.cursor:
                continue  # duplicate (already processed and persisted)
            try:
                await self._process_one(env)
            except QpcError as exc:  # a local failure must not wedge the inbox
                self.warn(f"could not process message: {type(exc).__name__}", env.channel_id)
            self.state.cursor = env.seq
        out = await self._commit_stored()
        if defer_ack:
            self._schedule_flush()
        else:
            await self.flush_ack()
        return out

    async def _commit_stored(self) -> list[api.Message]:
        """Await the batch's queued history appends (one commit); emit them in order."""
        stored, self._stored = self._stored, []
        if not stored:
            return []
        ids = await asyncio.gather(*(f for _, f in stored), return_exceptions=True)
        out: list[api.Message] = []
        for (msg, _), local_id in zip(stored, ids, strict=True):
            if isinstance(local_id, BaseException):
                if not isinstance(local_id, QpcError):
                    raise local_id
                self.warn(f"could not store message: {type(local_id).__name__}", msg.channel_id)
                continue
            message = self.to_api(dataclasses.replace(msg, local_id=local_id))
            self.emit(api.MessageReceived(message=message))
            out.append(message)
        return out

    async def flush_ack(self) -> None:
        """Save the state, then ack everything up to the cursor (caller holds the mutex)."""
        if os.environ.get(CRASH_ENV) == "before-save":
            os._exit(9)
        await self.save()
        if os.environ.get(CRASH_ENV) == "before-ack":
            os._exit(9)
        if self.state.cursor > self.state.acked:
            upto = self.state.cursor
            await (await self.rpc()).ack(upto_seq=upto)
            self.state.acked = upto  # saved with the next change; a re-ack is harmless

    async def close(self) -> None:
        """Stop live updates, save and ack what was processed, then close."""
        for task in (self._listen_task, self._flush_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, QpcError):
                    await task
        if self.state.user and self._identity is not None:
            with contextlib.suppress(QpcError):
                async with asyncio.timeout(2):
                    async with self.mutex:
                        await self.flush_ack()
        await super().close()

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._deferred_flush())

    async def _deferred_flush(self) -> None:
        await asyncio.sleep(ACK_DELAY_S)
        async with self.mutex:
            await self.save()  # the cursor is durable before the ack below
            upto = self.state.cursor
        if upto > self.state.acked:
            # Outside the mutex, so processing goes on while the node deletes.
            # Failing is fine: acked on the next flush, the saved cursor prevents dupes.
            with contextlib.suppress(ConnectionLost, TransportError):
                await (await self.rpc()).ack(upto_seq=upto)
                self.state.acked = max(self.state.acked, upto)

    def _open_channel_entry(self, env: Envelope) -> OpenedEnvelope | None:
        """A channel-log entry: the MLS message itself, stored once for every
        reader (docs/PROTOCOL.md, "Channel logs"). No outer envelope, so no
        outer sender (``sender`` is empty); MLS authenticates the content."""
        try:
            info = mls.message_info(env.data)
        except MlsError as exc:
            self.warn(f"malformed channel message ({type(exc).__name__})", env.channel_id)
            return None
        if info.kind == "welcome":
            ctype = ContentType.MLS_WELCOME
        elif info.kind in ("private_message", "public_message") and info.group_id == env.channel_id:
            ctype = ContentType.MLS_APPLICATION
        else:
            self.warn("channel message of the wrong kind or channel", env.channel_id)
            return None
        return OpenedEnvelope(
            recipient_id=self.device_id,
            channel_id=env.channel_id,
            content_type=ctype,
            sender=b"",
            body=env.data,
        )

    async def _process_one(self, env: Envelope) -> list[api.Message]:
        channel = env.channel_id
        if env.data[:1] == CHANNEL_ENTRY_FIRST_BYTE:
            entry = self._open_channel_entry(env)
            if entry is None:
                return []
            opened = entry
        else:
            try:
                opened = open_envelope(
                    env.data,
                    recipient_key=self.hybrid,
                    recipient_id=self.device_id,
                    channel_id=channel,
                )
            except CryptoError as exc:
                self.warn(f"envelope rejected ({type(exc).__name__})", channel)
                return []
        if opened.content_type == ContentType.MLS_WELCOME:
            await self._on_welcome(opened)
            return []
        if opened.content_type == ContentType.CONTROL:
            return []
        try:
            group = self.mls.load_group(channel)
        except UnknownGroup:
            self.warn("message for a channel we are not in", channel)
            return []
        try:
            epoch = mls.message_info(opened.body).epoch
        except MlsError as exc:
            self.warn(f"malformed MLS message ({type(exc).__name__})", channel)
            return []
        if epoch is not None and epoch > group.epoch:
            self._hold(env.seq, opened)
            return []
        return await self._on_mls(group, opened)

    def _hold(self, seq: int, opened: OpenedEnvelope) -> None:
        held = self.state.held
        held.append(
            HeldEnvelope(
                seq=seq,
                channel=opened.channel_id.hex(),
                content_type=int(opened.content_type),
                sender=opened.sender.hex(),
                body=base64.b64encode(opened.body).decode(),
            )
        )
        if len(held) > MAX_HELD:
            del held[0]
            log.warning("held-message limit reached; dropped the oldest")

    async def _release_held(self, group: mls.Group) -> list[api.Message]:
        """Process held messages of ``group`` whose epoch has been reached."""
        out: list[api.Message] = []
        gid = group.group_id.hex()
        progress = True
        while progress:
            progress = False
            for h in sorted(self.state.held, key=lambda h: h.seq):
                if h.channel != gid:
                    continue
                body = h.body_bytes()
                epoch = mls.message_info(body).epoch
                if epoch is not None and epoch > group.epoch:
                    continue
                self.state.held.remove(h)
                opened = OpenedEnvelope(
                    recipient_id=self.device_id,
                    channel_id=group.group_id,
                    content_type=ContentType(h.content_type),
                    sender=bytes.fromhex(h.sender),
                    body=body,
                )
                out += await self._on_mls(group, opened)
                progress = True
                break
        return out

    # ------------------------------------------------------------------ MLS

    async def _on_welcome(self, opened: OpenedEnvelope) -> None:
        channel = opened.channel_id
        if channel in self.mls.group_ids():
            self.warn("Welcome for a channel we are already in (replay?)", channel)
            return
        try:
            group = self.mls.join_from_welcome(opened.body)
        except MlsError as exc:
            self.warn(f"Welcome rejected ({type(exc).__name__})", channel)
            return
        if group.group_id != channel:
            self.warn("Welcome for a different channel than its envelope", channel)
            self.mls.delete_group(group.group_id)
            return
        if opened.sender:  # sealed per device: the sealer must be a member
            inviter = self._member_by_key(group, opened.sender)
            if inviter is None:
                self.warn("Welcome sealed by a non-member", channel)
                self.mls.delete_group(channel)
                return
            self.state.devices.setdefault(opened.sender.hex(), _device(inviter))
        # From a channel log the Welcome has no outer sender: OpenMLS checked
        # the GroupInfo signature of the member that made it.
        rec = self.channel_record(channel)
        rec.active, rec.last_ms, rec.updated_ms = True, now_ms(), now_ms()
        self.joined.append(channel)
        await self.save()
        log.info("joined channel %s at epoch %d", channel.hex()[:16], group.epoch)
        self.emit_channels()

    @staticmethod
    def _member_by_key(group: mls.Group, key: bytes) -> mls.Member | None:
        return next((m for m in group.members() if m.signature_key == key), None)

    async def _on_mls(self, group: mls.Group, opened: OpenedEnvelope) -> list[api.Message]:
        channel = opened.channel_id
        before = {m.leaf_index: m for m in group.members()}
        try:
            res = group.process(opened.body)
        except MlsError as exc:
            self.warn(f"MLS message rejected ({type(exc).__name__})", channel)
            return []
        if isinstance(res, mls.OwnMessage):
            return []
        leaf = res.sender_leaf
        sender = before.get(leaf) if leaf is not None else None
        if opened.sender and sender is not None and sender.signature_key != opened.sender:
            # MLS verified the content, but somebody else sealed it to us.
            self.warn("envelope signer is not the MLS sender", channel)
            if isinstance(res, mls.ApplicationMessage):
                return []
        if isinstance(res, mls.ApplicationMessage):
            if sender is None:
                self.warn("application message from a non-member", channel)
                return []
            return await self._on_app(channel, sender, res.plaintext)
        if isinstance(res, mls.ProposalStored):
            if res.kind == "remove":
                self.leave_requests.add(channel)
            return []
        # A commit, already merged by the binding.
        rec = self.channel_record(channel)
        rec.last_ms = now_ms()
        for m in res.added:
            self.state.devices.setdefault(m.signature_key.hex(), _device(m))
        if res.self_removed or not group.is_active:
            rec.active = False
            log.info("removed from channel %s", channel.hex()[:16])
        self.leave_requests.discard(channel)
        await self.save()
        self.emit(
            api.MembersChanged(
                channel=channel.hex(), members=self.member_list(group), epoch=group.epoch
            )
        )
        self.emit_channels()
        if not rec.active:
            return []
        return await self._release_held(group)

    async def _on_app(
        self, channel: bytes, sender: mls.Member, plaintext: bytes
    ) -> list[api.Message]:
        try:
            item = appdata.decode(plaintext)
        except MalformedInput:
            self.warn("malformed application data", channel)
            return []
        rec = self.channel_record(channel)
        dev = self.state.devices.setdefault(sender.signature_key.hex(), _device(sender))
        if isinstance(item, appdata.Hello):
            dev.access_key = item.access_key.hex()
            return []
        if isinstance(item, appdata.Meta):
            rec.name, rec.kind = item.name, item.kind
            for key_hex, ak_hex in item.access_keys.items():
                known = self.state.devices.get(key_hex)
                if known is not None and not known.access_key:
                    known.access_key = ak_hex
            self.emit_channels()
            return []
        if not isinstance(item, appdata.ChatText):
            return []
        msg = ChatMessage(
            channel_id=channel,
            sender=sender.signature_key,
            sender_name=sender.identity.decode("utf-8", "replace"),
            timestamp_ms=item.ts,
            text=item.text,
        )
        # Queued now (history order = processing order); the batch awaits the
        # commit and reports the message (see process_batch).
        self._stored.append((msg, self.profile.queue_message(msg)))
        rec.unread += 1
        rec.last_ms = now_ms()
        return []

    # ------------------------------------------------------------------ live

    async def after_batch(self) -> None:
        """Hook run under the mutex after each processed batch (engine overrides)."""

    def _set_conn(self, state: api.ConnectionState) -> None:
        if state != self._conn_state:
            self._conn_state = state
            self.emit(api.ConnectionChanged(state=state))

    async def _listen_loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                rpc = await self.rpc()
                async with rpc.fetch_wait(after_seq=self.state.cursor) as sub:
                    self._set_conn(api.ConnectionState.connected(server=self._server_addr))
                    backoff = 0.2
                    async with self.mutex:
                        await self.drain()
                        await self.after_batch()
                    async for res in sub:
                        if res.envelopes:
                            async with self.mutex:
                                await self.process_batch(res.envelopes, defer_ack=True)
                                await self.after_batch()
            except (ConnectionLost, TransportError, Unavailable) as exc:  # node gone/restarting
                log.info("subscription lost (%s); retrying in %.1fs", type(exc).__name__, backoff)
                n = len(self.state.outbox)
                self._set_conn(
                    api.ConnectionState.reconnecting(
                        backoff, server=self._server_addr, outbox_count=n
                    )
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except QpcError as exc:
                self.warn(f"live updates stopped: {exc}")
                raise

    async def _event_stream(self) -> AsyncIterator[api.EngineEvent]:
        q: asyncio.Queue[api.EngineEvent] = asyncio.Queue()
        self._listeners.append(q)
        if self._listen_task is None or self._listen_task.done():
            self._listen_task = asyncio.get_running_loop().create_task(self._listen_loop())
        task = self._listen_task
        try:
            while True:
                getter = asyncio.ensure_future(q.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                exc = task.exception()
                if exc is not None:
                    raise exc
                return
        finally:
            self._listeners.remove(q)
            if not self._listeners and self._listen_task is not None:
                self._listen_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, QpcError):
                    await self._listen_task
                self._listen_task = None

    def events(self) -> AsyncIterator[api.EngineEvent]:
        """Live events; holds the fetchWait subscription while iterated."""
        return self._event_stream()


def _device(member: mls.Member) -> DeviceRecord:
    return DeviceRecord(user=member.identity.decode("utf-8", "replace"))
