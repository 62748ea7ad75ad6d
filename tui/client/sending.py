"""Sending and committing: the half of the engine that writes to channels.

Commits (add, remove, self-update, committing a member's leave proposal) go
through :meth:`Sender.run_commit`: the commit is sealed to every current
member device, Welcome to every new one, and handed to ``enqueueCommit`` as
one all-or-nothing fan-out; it is merged only after the node accepted it,
cleared on any rejection, and on ``staleEpoch`` the engine processes what is
waiting and builds the commit again.

Application messages are encrypted once with MLS, then sealed per device in
the hybrid envelope and enqueued (sealed sender when the recipient shared its
access key). Unreachable node: the message stays in the durable outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from proto import mls
from proto.codec import Recipient
from proto.crypto.envelope import ContentType
from proto.errors import (
    ConnectionLost,
    LocalError,
    MlsError,
    NotFound,
    PermissionDenied,
    QpcError,
    StaleEpoch,
    TransportError,
)
from tui.client import api, appdata
from tui.client.delivery import Delivery, now_ms
from tui.client.profile import ChatMessage
from tui.client.state import OutboxEntry

__all__ = ["Sender"]

log = logging.getLogger("tui.client.engine")

MAX_COMMIT_ATTEMPTS = 8
_OFFLINE = (ConnectionLost, TransportError)


class Sender(Delivery):
    """Sending, the outbox and commits (see module docstring)."""

    _inflight: set[int]
    """``id()`` of outbox entries being delivered outside the mutex."""

    # ------------------------------------------------------------------ helpers

    def resolve(self, channel: str) -> bytes:
        """A channel id from hex id, unique hex prefix or unique name.

        Raises:
            LocalError: no channel or several match.
        """
        text = channel.strip()
        if text.lower() in self.state.channels:
            return bytes.fromhex(text.lower())
        hits = [c for c in self.state.channels if c.startswith(text.lower()) and len(text) >= 4]
        if not hits:
            hits = [
                c for c in self.state.channels if self.channel_info(bytes.fromhex(c)).name == text
            ]
            active = [c for c in hits if self.state.channels[c].active]
            hits = active or hits
        if len(hits) != 1:
            raise LocalError(
                f"no channel {channel!r}" if not hits else f"{channel!r} is ambiguous; use its id"
            )
        return bytes.fromhex(hits[0])

    def _group(self, channel: bytes) -> mls.Group:
        rec = self.state.channels.get(channel.hex())
        if rec is not None and not rec.active:
            raise LocalError("you are no longer a member of this channel")
        try:
            return self.mls.load_group(channel)
        except MlsError as exc:
            raise LocalError(f"no such channel here ({type(exc).__name__})") from None

    async def run_commit(
        self,
        channel: bytes,
        make: Callable[[mls.Group], mls.CommitOutput | None],
        new_devices: Callable[[mls.Group], dict[bytes, str]] = lambda g: {},
    ) -> mls.Group:
        """Build, fan out and merge a commit, retrying on ``staleEpoch``.

        ``make`` builds the commit from the current group (None: nothing to do);
        ``new_devices`` names the devices (id -> user) that get the Welcome.
        Caller holds :attr:`mutex`.
        """
        for _attempt in range(MAX_COMMIT_ATTEMPTS):
            group = self._group(channel)
            recipients = [
                (m.signature_key, m.identity.decode("utf-8", "replace"))
                for m in group.members()
                if m.signature_key != self.device_id
            ]
            joining = new_devices(group)
            out = make(group)
            if out is None:
                return group
            try:
                fanout = [
                    Recipient(
                        recipient=dev,
                        payload=await self.seal_for(
                            dev, user, channel, ContentType.MLS_COMMIT, out.commit
                        ),
                    )
                    for dev, user in recipients
                ]
                if out.welcome is not None:
                    for dev, user in joining.items():
                        payload = await self.seal_for(
                            dev, user, channel, ContentType.MLS_WELCOME, out.welcome
                        )
                        fanout.append(Recipient(recipient=dev, payload=payload))
                epoch = out.epoch
                await (await self.rpc()).enqueue_commit(
                    channel_id=channel, epoch=epoch, fanout=fanout
                )
            except StaleEpoch:
                group.clear_pending_commit()
                log.info("commit raced another one; catching up and retrying")
                await self.drain()
                continue
            except BaseException:
                group.clear_pending_commit()
                raise
            group.merge_pending_commit()
            rec = self.channel_record(channel)
            rec.last_ms = now_ms()
            await self.save()
            self.emit(
                api.MembersChanged(
                    channel=channel.hex(), members=self.member_list(group), epoch=group.epoch
                )
            )
            return group
        raise LocalError("the channel is too busy: gave up after repeated commit races")

    async def after_batch(self) -> None:
        """Say hello in joined channels, refill KeyPackages, commit leave requests,
        commit due self-updates, flush the outbox."""
        joined, self.joined = self.joined, []
        for channel in joined:
            try:
                await self._send_app(channel, appdata.Hello(access_key=self._ak()))
            except QpcError as exc:
                log.info("could not announce our access key: %s", type(exc).__name__)
        if joined:  # each Welcome consumed one of our KeyPackages
            try:
                await self.top_up_keypackages()
            except QpcError as exc:
                log.info("could not refill KeyPackages: %s", type(exc).__name__)
        requests, self.leave_requests = self.leave_requests, set()
        for channel in requests:
            try:
                await self.run_commit(
                    channel,
                    lambda g: g.commit_pending_proposals() if g.pending_proposal_count else None,
                )
            except QpcError as exc:
                log.info("could not commit a leave request: %s", type(exc).__name__)
        await self._self_update_due()
        await self._flush_outbox()

    def _ak(self) -> bytes:
        return bytes.fromhex(self.state.access_key)

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
            group = self._group(channel)
        ciphertext = group.encrypt(appdata.encode(item))
        targets = [
            (m.signature_key, m.identity.decode("utf-8", "replace"))
            for m in group.members()
            if m.signature_key != self.device_id and (only is None or m.signature_key.hex() in only)
        ]
        return ciphertext, targets

    async def _deliver(
        self, channel: bytes, ciphertext: bytes, targets: list[tuple[bytes, str]]
    ) -> set[str]:
        """Seal per device and enqueue (sealed sender when we hold the access key).

        Needs no mutex, so several messages can be in flight. Returns the hex
        ids of devices that could not be reached (offline).
        """
        rpc = await self.rpc()

        async def one(dev: bytes, user: str) -> str | None:
            try:
                payload = await self.seal_for(
                    dev, user, channel, ContentType.MLS_APPLICATION, ciphertext
                )
                rec = self.state.devices.get(dev.hex())
                if self.config.sealed_sender and rec is not None and rec.access_key:
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
            except _OFFLINE:
                return dev.hex()
            except NotFound:
                log.info("a member device is gone from the node; skipped")
            return None

        failed = await asyncio.gather(*(one(d, u) for d, u in targets))
        return {f for f in failed if f is not None}

    async def _send_app(
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
        async with self.mutex:
            cid = self.resolve(channel)
            group = self._group(cid)
            if self._waiting():
                await self._flush_outbox()
            ts = now_ms()
            stored = ChatMessage(
                channel_id=cid,
                sender=self.device_id,
                sender_name=self.user,
                timestamp_ms=ts,
                text=text,
                outgoing=True,
            )
            entry = OutboxEntry(id=0, channel=cid.hex(), text=text, ts=ts)
            self.state.outbox.append(entry)
            self.channel_record(cid).last_ms = ts
            prepared = None
            if self._waiting() == [entry]:  # nothing older waits: send now
                prepared = self._prepare(cid, appdata.ChatText(text=text, ts=ts), group=group)
                self._inflight.add(id(entry))
            else:  # older messages wait for the node: queue behind them, durably
                entry.id = await self.append_message(stored)
                await self.save()
        if prepared is not None:
            # Storing and delivering overlap; the outbox entry becomes durable
            # only if some device could not be reached.
            missing: set[str] = set()
            delivered = False
            try:
                entry.id, missing = await asyncio.gather(
                    self.append_message(stored), self._deliver(cid, *prepared)
                )
                delivered = True
            finally:
                if delivered and missing:  # durable outbox entry for the missing devices
                    async with self.mutex:
                        self._inflight.discard(id(entry))
                        entry.devices = sorted(missing)
                        await self.save()
                else:  # no await: nothing under the mutex sees a half-done change
                    self._inflight.discard(id(entry))
                    self.state.outbox = [o for o in self.state.outbox if o is not entry]
        local_id = entry.id
        msg = self.to_api(
            ChatMessage(
                channel_id=cid,
                sender=self.device_id,
                sender_name=self.user,
                timestamp_ms=ts,
                text=text,
                outgoing=True,
                local_id=local_id,
            )
        )
        self.emit(api.MessageReceived(message=msg))
        return msg

    async def _try_send(self, entry: OutboxEntry) -> bool:
        """Send one outbox entry; True when it left the outbox (sent or failed)."""
        cid = bytes.fromhex(entry.channel)
        only = set(entry.devices) if entry.devices else None
        try:
            missing = await self._send_app(
                cid, appdata.ChatText(text=entry.text, ts=entry.ts), only
            )
        except _OFFLINE:
            return False
        except (LocalError, MlsError) as exc:
            log.info("message could not be sent: %s", type(exc).__name__)
            self.state.outbox.remove(entry)
            self.state.failed.append(entry.id)
            self._state_changed(entry, api.DeliveryState.FAILED)
            return True
        if missing:
            entry.devices = sorted(missing)
            return False
        self.state.outbox.remove(entry)
        self._state_changed(entry, api.DeliveryState.SENT)
        return True

    def _waiting(self) -> list[OutboxEntry]:
        """Outbox entries not being delivered right now."""
        return [o for o in self.state.outbox if id(o) not in self._inflight]

    def _state_changed(self, entry: OutboxEntry, state: api.DeliveryState) -> None:
        self.emit(api.MessageStateChanged(message_id=entry.id, channel=entry.channel, state=state))

    async def _flush_outbox(self) -> None:
        """Send what waits in the outbox, oldest first (caller holds the mutex)."""
        if not self.state.outbox:
            return
        for entry in self._waiting():
            if not await self._try_send(entry):
                break
        await self.save()

    async def sync(self) -> list[api.Message]:
        """Fetch, process, persist and ack everything waiting; flush the outbox."""
        async with self.mutex:
            msgs = await self.drain()
            await self.after_batch()
            return msgs

    async def _self_update_due(self) -> None:
        """Periodic self-update: a fresh leaf key where ours is older than the interval."""
        due = now_ms() - int(self.config.self_update_s * 1000)
        for hexid, rec in list(self.state.channels.items()):
            if rec.active and rec.updated_ms < due:
                try:
                    await self.run_commit(bytes.fromhex(hexid), lambda g: g.self_update())
                    rec.updated_ms = now_ms()
                    await self.save()
                except QpcError as exc:
                    log.info("self-update failed: %s", type(exc).__name__)
