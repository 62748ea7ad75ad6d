"""Inboxes: enqueue (token or sealed sender), commit fan-out, fetch, fetchWait, ack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence

from node.services.common import (
    Caller,
    NodeContext,
    check_blob,
    check_channel_id,
    check_device_id,
    check_u64,
    key_hash,
    same_secret_hash,
    unpack_device_ids,
)
from node.store import (
    CommitResult,
    FanoutItem,
    StoredEnvelope,
    TreePart,
    WelcomeParts,
    WelcomeTree,
)
from proto.errors import BadRequest, LimitExceeded, NotFound, PermissionDenied

log = logging.getLogger(__name__)

ACCESS_KEY_BYTES = 32
MAX_STORED_INT = 2**63 - 1
"""Stores keep seqs and epochs as signed 64-bit integers; cursors above are clamped."""


class DeliveryService:
    """Per-device inboxes with per-inbox seqs."""

    def __init__(self, ctx: NodeContext) -> None:
        """Args: the node context."""
        self._ctx = ctx
        self._subscriptions: dict[bytes, int] = {}

    # ------------------------------------------------------------------ send

    async def enqueue(
        self,
        caller: Caller,
        recipient: bytes,
        channel_id: bytes,
        payload: bytes,
        access_key: bytes,
    ) -> int:
        """Store a payload for ``recipient``; return its seq once durable.

        With a session token the caller is authenticated as usual. Without one
        (sealed sender) ``access_key`` must hash to the recipient's delivery
        access key hash; the node then learns nothing about the sender, and
        stores nothing about it either way.

        Raises:
            PermissionDenied: sealed sender with a wrong key, or to a device
                without one (the two are not distinguished).
            NotFound: (token path) no such recipient device.
            QueueFull, PayloadTooLarge, BadRequest, RateLimited.
        """
        check_device_id(recipient, "recipient")
        check_channel_id(channel_id)
        check_blob(payload, self._ctx.config.max_payload_bytes, "payload")
        if caller.token:
            session = await self._ctx.authenticate(caller)
            self._ctx.limit_write(caller, session.username)
            if await self._ctx.store.get_device(recipient) is None:
                raise NotFound("no such recipient device")
        else:
            if len(access_key) != ACCESS_KEY_BYTES:
                raise PermissionDenied("sealed sender needs the recipient's access key")
            self._ctx.limit_write(caller, "r:" + recipient.hex())
            device = await self._ctx.store.get_device(recipient)
            expected = device.access_key_hash if device is not None else None
            # Compare even when there is nothing to compare with, so both refusals look alike.
            ok = same_secret_hash(key_hash(access_key), expected or bytes(32))
            if expected is None or not ok:
                raise PermissionDenied("access key does not match")
        seq = await self._ctx.store.enqueue(
            recipient, channel_id, payload, self._ctx.now_ms(), self._ctx.config.max_queue_depth
        )
        self._ctx.metrics.enqueued.inc()
        self._ctx.notifier.notify(
            recipient, (StoredEnvelope(seq=seq, channel_id=channel_id, data=payload),)
        )
        return seq

    async def enqueue_commit(
        self,
        caller: Caller,
        channel_id: bytes,
        epoch: int,
        fanout: Sequence[tuple[bytes, bytes]],
    ) -> CommitResult:
        """Sequence an MLS commit: epoch check, epoch bump and fan-out in one transaction.

        Raises:
            StaleEpoch: ``epoch`` is not the channel's current epoch.
            NotFound: a fan-out recipient does not exist (nothing stored).
            QueueFull, LimitExceeded, PayloadTooLarge, BadRequest.
        """
        session, _ = await self._ctx.authenticate_device(caller)
        check_channel_id(channel_id)
        check_u64(epoch, "epoch")
        if epoch >= MAX_STORED_INT:
            raise BadRequest("epoch out of range")
        limits = self._ctx.config
        if len(fanout) > limits.max_fanout:
            raise LimitExceeded(f"at most {limits.max_fanout} fan-out recipients")
        items = []
        for recipient, payload in fanout:
            check_device_id(recipient, "recipient")
            check_blob(payload, limits.max_payload_bytes, "payload")
            items.append(FanoutItem(recipient=recipient, payload=payload))
        self._ctx.limit_write(caller, session.username)
        recipients = {item.recipient for item in items}
        if await self._ctx.store.known_devices(list(recipients)) != recipients:
            raise NotFound("no such recipient device")
        result = await self._ctx.store.enqueue_commit(
            channel_id, epoch, items, self._ctx.now_ms(), limits.max_queue_depth
        )
        self._ctx.metrics.enqueued.inc(len(items))
        announced: dict[bytes, list[StoredEnvelope]] = {}
        for item, seq in zip(items, result.seqs, strict=True):
            announced.setdefault(item.recipient, []).append(
                StoredEnvelope(seq=seq, channel_id=channel_id, data=item.payload)
            )
        for recipient, envelopes in announced.items():
            self._ctx.notifier.notify(recipient, envelopes)
        return result

    # ---------------------------------------------------------- channel logs

    def _check_members(self, devices: Sequence[bytes], what: str) -> list[bytes]:
        limits = self._ctx.config
        if len(devices) > limits.max_fanout:
            raise LimitExceeded(f"at most {limits.max_fanout} {what}")
        for device in devices:
            check_device_id(device, what)
        return list(dict.fromkeys(devices))  # once each, in order

    def _announce(
        self, channel_id: bytes, payload: bytes, devices: Sequence[bytes], seqs: Sequence[int]
    ) -> None:
        for device, seq in zip(devices, seqs, strict=True):
            if seq:
                self._ctx.notifier.notify(
                    device, (StoredEnvelope(seq=seq, channel_id=channel_id, data=payload),)
                )

    async def post_channel(
        self,
        caller: Caller,
        channel_id: bytes,
        post_key: bytes,
        recipients: Sequence[bytes],
        payload: bytes,
        *,
        recipient_ids: bytes = b"",
    ) -> int:
        """Store one channel message once, referenced from each recipient inbox.

        Authorised by ``post_key`` alone (the token, if any, is ignored), so
        the node does not learn which member posts. Unknown recipients are
        skipped like full inboxes (the poster learns nothing about devices
        from it). The recipients come as a list or packed (``recipient_ids``:
        32-byte deviceIds concatenated), not both. Returns how many inboxes
        took the message.

        Raises:
            PermissionDenied: not the channel's current post key.
            PayloadTooLarge, LimitExceeded, BadRequest, RateLimited.
        """
        check_channel_id(channel_id)
        check_blob(payload, self._ctx.config.max_payload_bytes, "payload")
        if len(post_key) != ACCESS_KEY_BYTES:
            raise PermissionDenied("not the channel's current post key")
        if recipient_ids:
            if recipients:
                raise BadRequest("recipients and recipientIds are exclusive")
            recipients = unpack_device_ids(recipient_ids, "recipientIds")
        devices = self._check_members(recipients, "recipients")
        self._ctx.limit_write(caller, None)
        found = await self._ctx.store.known_devices(devices)
        known = [d for d in devices if d in found]
        seqs = await self._ctx.store.post_channel(
            channel_id,
            key_hash(post_key),
            known,
            payload,
            self._ctx.now_ms(),
            self._ctx.config.max_queue_depth,
        )
        self._ctx.metrics.enqueued.inc(sum(1 for s in seqs if s))
        self._announce(channel_id, payload, known, seqs)
        return sum(1 for s in seqs if s)

    async def commit_channel(
        self,
        caller: Caller,
        channel_id: bytes,
        epoch: int,
        post_key: bytes,
        commit: bytes,
        members: Sequence[bytes],
        welcome: bytes,
        joiners: Sequence[bytes],
        parts: WelcomeParts | None = None,
        *,
        ratchet_tree: bytes = b"",
        tree_delta: bytes = b"",
        member_ids: bytes = b"",
    ) -> int:
        """Sequence a commit: key and epoch check, epoch bump, commit and Welcome
        each stored once; return the new epoch.

        With ``parts`` the Welcome goes by reference: its shared parts are
        stored once and each joiner gets only its own entry. The new epoch's
        tree part (``ratchet_tree``, a base, or ``tree_delta``; at most one,
        and one is required with ``parts``) joins the channel's tree chain
        (docs/PROTOCOL.md, "Tree deltas"). The members come as a list or
        packed (``member_ids``: 32-byte deviceIds concatenated), not both.

        Raises:
            StaleEpoch, PermissionDenied, NotFound (unknown member or joiner,
            nothing stored), QueueFull, LimitExceeded, PayloadTooLarge,
            BadRequest, TreeBaseRequired (a delta the chain cannot take,
            nothing stored: send the whole tree).
        """
        session, device = await self._ctx.authenticate_device(caller)
        check_channel_id(channel_id)
        check_u64(epoch, "epoch")
        if epoch >= MAX_STORED_INT:
            raise BadRequest("epoch out of range")
        limits = self._ctx.config
        check_blob(commit, limits.max_commit_bytes, "commit")
        if welcome:
            check_blob(welcome, limits.max_commit_bytes, "welcome")
        if ratchet_tree and tree_delta:
            raise BadRequest("a tree part goes either whole or as a delta, not both")
        tree: TreePart | None = None
        if ratchet_tree:
            check_blob(ratchet_tree, limits.max_commit_bytes, "ratchetTree")
            tree = TreePart(data=ratchet_tree, base=True)
        elif tree_delta:
            check_blob(tree_delta, limits.max_commit_bytes, "treeDelta")
            tree = TreePart(data=tree_delta, base=False)
        if parts is not None:
            if welcome:
                raise BadRequest("a Welcome goes either whole or by reference, not both")
            if tree is None:
                raise BadRequest("a Welcome by reference needs ratchetTree or treeDelta")
            check_blob(parts.group_info, limits.max_commit_bytes, "groupInfo")
            for entry in parts.entries:
                check_blob(entry, limits.max_payload_bytes, "joinerEntries")
        if post_key and len(post_key) != ACCESS_KEY_BYTES:
            raise PermissionDenied("not the channel's current post key")
        if member_ids:
            if members:
                raise BadRequest("members and memberIds are exclusive")
            members = unpack_device_ids(member_ids, "memberIds")
        member_list = self._check_members(members, "members")
        joiner_ids = self._check_members(joiners, "joiners")
        if parts is not None and len(parts.entries) != len(joiner_ids):
            raise BadRequest("joinerEntries must match joiners one to one")
        self._ctx.limit_write(caller, session.username)
        wanted = {*member_list, *joiner_ids}
        if await self._ctx.store.known_devices(list(wanted)) != wanted:
            raise NotFound("no such recipient device")
        result = await self._ctx.store.commit_channel(
            channel_id,
            epoch,
            key_hash(post_key) if post_key else None,
            device.device_id,
            commit,
            member_list,
            welcome,
            joiner_ids if welcome or parts is not None else [],
            self._ctx.now_ms(),
            limits.max_queue_depth,
            parts=parts,
            tree=tree,
        )
        self._ctx.metrics.enqueued.inc(len(result.commit_seqs) + len(result.welcome_seqs))
        self._announce(channel_id, commit, member_list, result.commit_seqs)
        if welcome:
            self._announce(channel_id, welcome, joiner_ids, result.welcome_seqs)
        elif parts is not None:
            seqs = result.welcome_seqs
            for joiner, entry, seq in zip(joiner_ids, parts.entries, seqs, strict=True):
                self._announce(channel_id, entry, [joiner], [seq])
        return result.new_epoch

    async def fetch_welcome(self, caller: Caller, channel_id: bytes, epoch: int) -> WelcomeTree:
        """The shared part and tree chain (the latest base at or before
        ``epoch`` and the deltas after it) of a Welcome by reference, for one
        of its joiners.

        Only a device whose inbox still holds a Welcome entry referring to
        them may fetch them (until it acks it, or retention ends).

        Raises:
            NotFound: no such Welcome for the caller (never stored, already
                acked or purged, or addressed to other devices).
        """
        _, device = await self._ctx.authenticate_device(caller)
        check_channel_id(channel_id)
        check_u64(epoch, "epoch")
        found = await self._ctx.store.fetch_welcome(
            channel_id, min(epoch, MAX_STORED_INT), device.device_id
        )
        if found is None:
            raise NotFound("no Welcome of this channel and epoch for this device")
        return found

    async def set_channel_key(
        self, caller: Caller, channel_id: bytes, epoch: int, new_key_hash: bytes
    ) -> None:
        """The device whose commit made ``epoch`` sets SHA-256 of its post capability.

        Raises:
            StaleEpoch, PermissionDenied, BadRequest.
        """
        session, device = await self._ctx.authenticate_device(caller)
        check_channel_id(channel_id)
        check_u64(epoch, "epoch")
        if len(new_key_hash) != 32:
            raise BadRequest("keyHash must be 32 bytes")
        self._ctx.limit_write(caller, session.username)
        await self._ctx.store.set_channel_key(
            channel_id, min(epoch, MAX_STORED_INT), device.device_id, new_key_hash
        )

    # --------------------------------------------------------------- receive

    def _limit(self, limit: int) -> int:
        check_u64(limit, "limit")
        maximum = self._ctx.config.max_fetch
        return maximum if limit == 0 else min(limit, maximum)

    async def fetch(self, caller: Caller, after_seq: int, limit: int) -> list[StoredEnvelope]:
        """Envelopes of the token's own inbox after ``after_seq`` (0 = the server maximum)."""
        _, device = await self._ctx.authenticate_device(caller)
        check_u64(after_seq, "afterSeq")
        return await self._ctx.store.fetch(
            device.device_id, min(after_seq, MAX_STORED_INT), self._limit(limit)
        )

    async def ack(self, caller: Caller, upto_seq: int) -> None:
        """Delete the token's own envelopes up to ``upto_seq``."""
        session, device = await self._ctx.authenticate_device(caller)
        check_u64(upto_seq, "uptoSeq")
        self._ctx.limit_write(caller, session.username)
        await self._ctx.store.ack(device.device_id, min(upto_seq, MAX_STORED_INT))

    async def fetch_wait(
        self, caller: Caller, after_seq: int, timeout_ms: int
    ) -> AsyncGenerator[list[StoredEnvelope], None]:
        """Subscribe to the token's own inbox.

        Yields at once (the waiting envelopes, possibly none, which also
        confirms the subscription), then a batch whenever new envelopes arrive.
        With ``timeout_ms`` > 0, yields one empty batch when it passes and ends.
        The caller cancels by closing the iterator.

        Raises:
            LimitExceeded: the device has too many open subscriptions.
        """
        _, device = await self._ctx.authenticate_device(caller)
        check_u64(after_seq, "afterSeq")
        check_u64(timeout_ms, "timeoutMs")
        inbox = device.device_id
        if self._subscriptions.get(inbox, 0) >= self._ctx.config.max_subscriptions_per_device:
            raise LimitExceeded("too many fetchWait subscriptions for this device")
        return self._subscription(inbox, min(after_seq, MAX_STORED_INT), timeout_ms)

    async def _subscription(
        self, inbox: bytes, after_seq: int, timeout_ms: int
    ) -> AsyncGenerator[list[StoredEnvelope], None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000 if timeout_ms else None
        limit = self._ctx.config.max_fetch
        cursor = after_seq
        self._subscriptions[inbox] = self._subscriptions.get(inbox, 0) + 1
        self._ctx.metrics.subscribers.inc()
        try:
            with self._ctx.notifier.subscribe(inbox) as sub:
                batch = await self._ctx.store.fetch(inbox, cursor, limit)
                while True:
                    if batch:
                        cursor = batch[-1].seq
                    yield batch  # the first answer comes at once, even when empty
                    full = len(batch) == limit
                    batch = []
                    if full:  # more may be waiting already
                        sub.take(cursor)
                        batch = await self._ctx.store.fetch(inbox, cursor, limit)
                    while not batch:
                        if deadline is None:
                            await sub.event.wait()
                        else:
                            remaining = deadline - loop.time()
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(max(0.0, remaining)):
                                    await sub.event.wait()
                            if not sub.event.is_set():
                                yield []
                                return
                        announced = sub.take(cursor)
                        if announced is None or len(announced) > limit:
                            batch = await self._ctx.store.fetch(inbox, cursor, limit)
                        else:
                            batch = announced
        finally:
            self._ctx.metrics.subscribers.dec()
            left = self._subscriptions.get(inbox, 1) - 1
            if left:
                self._subscriptions[inbox] = left
            else:
                self._subscriptions.pop(inbox, None)

    # ----------------------------------------------------------- housekeeping

    async def purge(self) -> int:
        """Delete messages older than the retention period; return how many."""
        cutoff = self._ctx.now_ms() - self._ctx.config.retention_s * 1000
        return await self._ctx.store.purge_messages(cutoff)
