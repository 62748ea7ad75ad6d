"""Sending and committing: the half of the engine that writes to channels.

Group traffic goes through the node's channel logs (docs/PROTOCOL.md,
"Channel logs"): uploaded once, stored once, referenced from each member
device's inbox.

Commits (add, remove, self-update, committing a member's leave proposal) go
through :meth:`Sender.run_commit`: ``commitChannel`` with the current
epoch's post key carries the commit once for every current member device and
the Welcome once for every joining one, all or nothing; the commit is merged
only after the node accepted it, cleared on any rejection, and on
``staleEpoch`` the engine processes what is waiting and builds the commit
again. After merging, the committer sets the new epoch's post key
(``setChannelKey``); other members wait for it (``permissionDenied`` meanwhile,
retried).

Application messages are encrypted once with MLS and posted once with
``postChannel``, without a session token: the epoch's post key authorises the
post, so the node does not learn which member sent it. Unreachable node: the
message stays in the durable outbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

from proto import mls
from proto.errors import (
    ConnectionLost,
    LocalError,
    MlsError,
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
POST_KEY_LABEL = "qpc channel post key v1"
"""MLS exporter label of a channel's post capability (docs/PROTOCOL.md)."""
KEY_WAIT_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
"""Waits for the committer of a new epoch to set its post key."""


def post_key(group: mls.Group) -> bytes:
    """The channel's post capability for the group's current epoch (32 bytes)."""
    return group.export_secret(POST_KEY_LABEL, b"", 32)


def key_hash(key: bytes) -> bytes:
    """What the node stores of a post capability."""
    return hashlib.sha256(key).digest()


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
        waits = iter(KEY_WAIT_S)
        for _attempt in range(MAX_COMMIT_ATTEMPTS + len(KEY_WAIT_S)):
            group = self._group(channel)
            members = [
                m.signature_key for m in group.members() if m.signature_key != self.device_id
            ]
            key = post_key(group)
            joining = new_devices(group)
            out = make(group)
            if out is None:
                return group
            try:
                await (await self.rpc()).commit_channel(
                    channel_id=channel,
                    epoch=out.epoch,
                    post_key=key,
                    commit=out.commit,
                    members=members,
                    welcome=out.welcome or b"",
                    joiners=list(joining) if out.welcome is not None else [],
                )
            except StaleEpoch:
                group.clear_pending_commit()
                log.info("commit raced another one; catching up and retrying")
                await self.drain()
                continue
            except PermissionDenied:
                # The epoch's committer has not set its post key yet (or we
                # are behind): wait a little, catch up, build again.
                group.clear_pending_commit()
                wait = next(waits, None)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                await self.drain()
                continue
            except BaseException:
                group.clear_pending_commit()
                raise
            group.merge_pending_commit()
            await self._set_key(channel, group)
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

    async def _set_key(self, channel: bytes, group: mls.Group) -> None:
        """As the committer of the group's epoch, set its post key on the node.

        Offline, it is retried after the next batch (:meth:`after_batch`);
        until then the channel's members wait to post.
        """
        try:
            await (await self.rpc()).set_channel_key(
                channel_id=channel, epoch=group.epoch, key_hash=key_hash(post_key(group))
            )
            self._keys_due.discard(channel)
        except _OFFLINE:
            self._keys_due.add(channel)
        except (StaleEpoch, PermissionDenied):  # a later epoch, or already set
            self._keys_due.discard(channel)

    async def after_batch(self) -> None:
        """Say hello in joined channels, refill KeyPackages, commit leave requests,
        commit due self-updates, flush the outbox."""
        for channel in list(self._keys_due):
            try:
                await self._set_key(channel, self._group(channel))
            except (LocalError, MlsError):
                self._keys_due.discard(channel)
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
    ) -> tuple[bytes, list[bytes], bytes]:
        """Encrypt once with MLS (under the mutex): the ciphertext, the target
        devices and the epoch's post key."""
        if group is None:
            group = self._group(channel)
        ciphertext = group.encrypt(appdata.encode(item))
        targets = [
            m.signature_key
            for m in group.members()
            if m.signature_key != self.device_id and (only is None or m.signature_key.hex() in only)
        ]
        return ciphertext, targets, post_key(group)

    async def _deliver(
        self, channel: bytes, ciphertext: bytes, targets: list[bytes], key: bytes
    ) -> set[str]:
        """Post the ciphertext once to the channel log for every target device.

        No session token: the post key authorises it (the node does not learn
        the sender). Needs no mutex, so several messages can be in flight.
        Returns the hex ids of the devices not reached (node unreachable, or
        the key refused after waiting for the epoch's committer: the outbox
        then re-encrypts in the epoch the engine reaches next).
        """
        if not targets:
            return set()
        rpc = await self.rpc()
        waits = iter(KEY_WAIT_S)
        while True:
            try:
                await rpc.post_channel(
                    channel_id=channel,
                    post_key=key,
                    recipients=targets,
                    payload=ciphertext,
                    auth=b"",
                )
                return set()
            except _OFFLINE:
                return {d.hex() for d in targets}
            except PermissionDenied:
                wait = next(waits, None)
                if wait is None:
                    log.info("channel post key refused; the message waits in the outbox")
                    return {d.hex() for d in targets}
                await asyncio.sleep(wait)

    async def _send_app(
        self,
        channel: bytes,
        item: appdata.ChatText | appdata.Meta | appdata.Hello,
        only: set[str] | None = None,
    ) -> set[str]:
        """Encrypt and post to every member device (caller holds the mutex)."""
        return await self._deliver(channel, *self._prepare(channel, item, only))

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
