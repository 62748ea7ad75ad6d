"""The inbox part: fetch, decide (sans-I/O core), apply, persist, then ack; live events.

Ordering rules (design §5):

* envelopes are processed in ``seq`` order; a seq at or below the persisted
  cursor is a duplicate and skipped;
* an MLS message of a future epoch is held (in the encrypted state) until the
  commit that reaches its epoch has been processed;
* everything the user sees, and the cursor, is persisted before ``ack``.

What to do with each envelope is decided by :mod:`tui.client.receive` (no
I/O); :class:`Inbox` is the shell that performs the effects it returns
(MLS transactions, state updates, history appends, save, ack). Anything that
fails validation is dropped with a logged reason and a
:class:`~tui.client.api.SecurityWarning` event; the channel keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from proto import mls
from proto.codec import Envelope
from proto.crypto.envelope import OpenedEnvelope
from proto.errors import (
    ConnectionLost,
    MlsError,
    NotFound,
    QpcError,
    TransportError,
    Unavailable,
    UnknownGroup,
)
from tui.client import api, notices, receive
from tui.client.core import Session
from tui.client.profile import ChatMessage, MessageChange
from tui.client.state import STATE_SECRET, DeviceCertRecord, DeviceRecord, EngineState
from tui.client.views import Events, Views, now_ms

__all__ = ["CRASH_ENV", "CRASH_POINTS", "FollowUps", "Inbox"]

log = logging.getLogger("tui.client.delivery")

CRASH_ENV = "QPC_TEST_CRASH"
"""Test hook naming a crash point of the receive path; the process exits there.

``after-mls#N`` (after the batch's Nth MLS transaction), ``before-commit``,
``after-commit``, ``after-forget``, ``before-ack``.
"""
CRASH_POINTS = (
    "after-mls#1",
    "after-mls#2",
    "after-mls#3",
    "before-commit",
    "after-commit",
    "after-forget",
    "before-ack",
)
"""Points between two writes of the receive path, in order (a batch of a
join and three messages has four MLS transactions)."""
FETCH_LIMIT = 500
ACK_DELAY_S = 0.05
"""How long the live subscription coalesces saves and acks."""


@dataclass(slots=True, kw_only=True)
class FollowUps:
    """What a processed batch leaves to the other parts (taken by the engine)."""

    joined: list[bytes] = field(default_factory=list)
    """Channels joined (say hello in them, refill KeyPackages)."""
    leave_requests: set[bytes] = field(default_factory=set)
    """Channels with a pending remove proposal to commit."""
    link: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Device-linking messages (sender device, body) for the linker."""


class Inbox:
    """Inbox processing and the live event stream (see module docstring)."""

    def __init__(
        self,
        session: Session,
        state: EngineState,
        events: Events,
        views: Views,
        *,
        after_batch: Callable[[], Awaitable[None]],
    ) -> None:
        """The inbox of ``session``'s device.

        ``after_batch`` runs under the session mutex after every batch the
        live subscription processed (the engine's follow-ups: hello, leave
        commits, outbox).
        """
        self._session = session
        self._batch_cursor = 0
        self._mls_ops = 0
        """MLS transactions in the current batch (for the crash hook)."""
        self._must_sync = False
        """The batch changed group state that a power cut must not lose (see _commit_batch)."""
        self._stored: frozenset[int] = frozenset()
        """Seqs whose MLS result the binding holds (receipts of an uncommitted batch)."""
        self._state = state
        self._events = events
        self._views = views
        self._after_batch = after_batch
        self._listen_task: asyncio.Task[None] | None = None
        self._conn_state: api.ConnectionState | None = None
        self._follow = FollowUps()
        self._flush_task: asyncio.Task[None] | None = None
        self._received: list[ChatMessage] = []
        """Messages of the current batch, stored when the batch commits."""
        self._changes: list[MessageChange] = []
        """Edits, deletes and reactions of the current batch, applied with its commit."""

    def take_follow_ups(self) -> FollowUps:
        """What the batches since the last call left to do (and forget it)."""
        out, self._follow = self._follow, FollowUps()
        return out

    # ------------------------------------------------------------------ fetch

    async def drain(self) -> list[api.Message]:
        """Fetch and process everything waiting (caller holds the session mutex)."""
        out: list[api.Message] = []
        while True:
            rpc = await self._session.rpc()
            res = await rpc.fetch(after_seq=self._state.cursor, limit=FETCH_LIMIT)
            if not res.envelopes:
                break
            out += await self.process_batch(res.envelopes)
            if len(res.envelopes) < FETCH_LIMIT:
                break
        return out

    async def process_batch(
        self, envelopes: Sequence[Envelope], *, defer_ack: bool = False
    ) -> list[api.Message]:
        """Process envelopes in seq order, commit, then ack (caller holds the mutex).

        Each MLS transaction stores its result as a receipt keyed by the
        envelope's seq, in the binding's own transaction (docs/CLIENT.md,
        "Durability"); the batch's messages and the engine state with the new
        cursor then commit in one durable ``client.db`` transaction, and the
        receipts are forgotten. A crash before that commit leaves the
        receipts: the node redelivers the batch and the binding returns the
        stored results instead of processing the messages again. Messages are
        reported (events and the return value) only after the commit. The
        node is acked right away, or with ``defer_ack`` a moment later
        (coalescing a burst into one ack); a crash before the ack only means
        the node redelivers, and the saved cursor skips it.

        Raises:
            ProfileError: the batch could not be committed; its receipts are
                replayed when it is delivered again (stop using the engine).
        """
        self._batch_cursor = self._state.cursor
        self._mls_ops = 0
        self._must_sync = False
        if self._session.has_mls and any(e.seq > self._state.cursor for e in envelopes):
            self._stored = frozenset(await asyncio.to_thread(self._session.mls.receipts))
        try:
            for env in sorted(envelopes, key=lambda e: e.seq):
                if env.seq <= self._state.cursor:
                    continue  # duplicate (already processed and persisted)
                try:
                    await self._process_one(env)
                except (ConnectionLost, TransportError, Unavailable):
                    # The node went away mid-message (fetching a Welcome's parts):
                    # not this message's fault; the batch is delivered again.
                    raise
                except QpcError as exc:  # a local failure must not wedge the inbox
                    self._events.warn(
                        f"could not process message: {type(exc).__name__}", env.channel_id
                    )
                self._state.cursor = env.seq
        except BaseException:
            # Cancelled (or a bug) mid-batch: nothing of it is committed, so no
            # later save may carry its cursor; its receipts replay it.
            self._state.cursor = self._batch_cursor
            self._received = []
            self._changes = []
            raise
        out = await self._commit_batch()
        if defer_ack:
            self._schedule_flush()
        else:
            await self.flush_ack()
        return out

    async def _commit_batch(self) -> list[api.Message]:
        """Commit the batch (messages + state, one durable transaction); emit them."""
        received, self._received = self._received, []
        changes, self._changes = self._changes, []
        if self._state.cursor == self._batch_cursor:
            return []
        if self._must_sync:
            # mls.db commits without fsync (crash-safe, not power-cut-safe).
            # Losing an application message's ratchet step after the history
            # has it is harmless; losing a commit or join once the cursor
            # passed it (and the node dropped it) would strand the group.
            await asyncio.to_thread(self._session.mls.sync)
        _crash_point("before-commit")
        try:
            ids, changed = await self._session.profile.commit_batch(
                received, changes, STATE_SECRET, self._state.to_json()
            )
        except QpcError:
            self._state.cursor = self._batch_cursor  # the receipts replay the batch
            raise
        _crash_point("after-commit")
        if self._mls_ops:
            # Not needed for correctness: receipts at or below the saved
            # cursor are never asked for again (and are dropped at start).
            await asyncio.to_thread(self._session.mls.forget_receipts, self._state.cursor)
        self._stored = frozenset()
        _crash_point("after-forget")
        out: list[api.Message] = []
        for msg, local_id in zip(received, ids, strict=True):
            message = self._views.to_api(dataclasses.replace(msg, local_id=local_id))
            self._events.emit(api.MessageReceived(message=message))
            if not message.system:  # notices are in the history, not "new messages"
                out.append(message)
        if any(m.deleted for m in changed):
            await self._session.profile.purge_wal()
        for msg in changed:
            self._events.emit(api.MessageChanged(message=self._views.to_api(msg)))
        return out

    async def flush_ack(self) -> None:
        """Save the state, then ack everything up to the cursor (caller holds the mutex)."""
        await self._session.save()
        _crash_point("before-ack")
        if self._state.cursor > self._state.acked:
            upto = self._state.cursor
            await (await self._session.rpc()).ack(upto_seq=upto)
            self._state.acked = upto  # saved with the next change; a re-ack is harmless

    async def close(self) -> None:
        """Stop live updates, save and ack what was processed."""
        for task in (self._listen_task, self._flush_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, QpcError):
                    await task
        if self._state.user and self._session.has_device:
            with contextlib.suppress(QpcError):
                async with asyncio.timeout(2):
                    async with self._session.mutex:
                        await self.flush_ack()

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._deferred_flush())

    async def _deferred_flush(self) -> None:
        await asyncio.sleep(ACK_DELAY_S)
        async with self._session.mutex:
            upto = self._state.cursor  # committed durably with its batch
        if upto > self._state.acked:
            # Outside the mutex, so processing goes on while the node deletes.
            # Failing is fine: acked on the next flush, the saved cursor prevents dupes.
            with contextlib.suppress(ConnectionLost, TransportError):
                await (await self._session.rpc()).ack(upto_seq=upto)
                self._state.acked = max(self._state.acked, upto)

    # ------------------------------------------------------------------ the shell

    async def _process_one(self, env: Envelope) -> None:
        step = receive.on_envelope(
            self._state,
            env,
            device_id=self._session.device_id,
            hybrid=self._session.hybrid,
            epochs=_Epochs(self._session.mls),
            stored=self._stored,
        )
        await self._apply(step, seq=env.seq)

    async def _apply(self, step: receive.Step, *, seq: int) -> None:
        """Perform a step's effects in order, then emit its events."""
        for ev in step.events:
            self._events.emit(ev)
            if isinstance(ev, api.SecurityWarning):
                log.warning("rejected: %s (channel %s)", ev.reason, ev.channel[:16])
        for fx in step.effects:
            await self._perform(fx, seq)

    async def _perform(self, fx: receive.Effect, seq: int) -> None:
        state, client = self._state, self._session.mls
        match fx:
            case receive.ApplyMls(opened=opened):
                await self._apply_mls(opened, seq)
            case receive.JoinWelcome(opened=opened):
                parts = None
                deltas: tuple[bytes, ...] = ()
                if opened.body[:1] == receive.WELCOME_REF_FIRST_BYTE:
                    # A Welcome by reference: fetch its shared parts first.
                    epoch, secrets = receive.parse_welcome_ref(opened.body)
                    try:
                        res = await (await self._session.rpc()).fetch_welcome(
                            channel_id=opened.channel_id, epoch=epoch
                        )
                    except NotFound:
                        await self._apply(receive.welcome_parts_missing(opened), seq=seq)
                        return
                    parts = (res.group_info, secrets, res.ratchet_tree)
                    # The tree: the node's latest base at or before our
                    # epoch and the deltas after it (docs/PROTOCOL.md,
                    # "Tree deltas"); the binding rebuilds and checks it.
                    deltas = res.tree_deltas
                try:
                    # Off the event loop: at 1,000 hybrid members a join
                    # (tree check, signatures, storage) takes a second or
                    # more, and the connection's keepalive must go on.
                    group = await (
                        asyncio.to_thread(client.join_from_welcome, opened.body, receipt=seq)
                        if parts is None
                        else asyncio.to_thread(
                            client.join_from_welcome_parts, *parts, tree_deltas=deltas, receipt=seq
                        )
                    )
                    joined: receive.GroupView | MlsError = receive.GroupView.of(group)
                except MlsError as exc:
                    joined = exc
                self._must_sync |= not isinstance(joined, MlsError)
                self._after_mls()
                await self._apply(receive.on_joined(opened, joined), seq=seq)
            case receive.DeleteGroup(channel=channel):
                client.delete_group(channel)
            case receive.Hold(held=held):
                state.held.append(held)
                if len(state.held) > receive.MAX_HELD:
                    del state.held[0]
                    log.warning("held-message limit reached; dropped the oldest")
            case receive.Joined(channel=channel):
                rec = self._views.channel_record(channel)
                rec.active, rec.last_ms, rec.updated_ms = True, now_ms(), now_ms()
                self._follow.joined.append(channel)
                me = self._state.user
                self._received.append(
                    notices.notice(channel, f"{me} joined", by=me, now_ms=now_ms())
                )
                log.info("joined channel %s", channel.hex()[:16])
                self._views.emit_channels()
            case receive.LearnDevice(device=device, user=user, access_key=ak):
                dev = state.devices.setdefault(device.hex(), DeviceRecord(user=user))
                if ak is not None:
                    dev.access_key = ak.hex()
            case receive.SetChannelMeta(channel=channel, name=name, kind=kind):
                rec = self._views.channel_record(channel)
                rec.name, rec.kind = name, kind
            case receive.SetAccessKeys(keys=keys):
                for key_hex, ak_hex in keys.items():
                    known = state.devices.get(key_hex)
                    if known is not None and not known.access_key:
                        known.access_key = ak_hex
                self._views.emit_channels()
            case receive.StoreMessage(message=msg):
                # Stored with the batch's commit (history order = processing order).
                self._received.append(msg)
            case receive.ApplyChange(change=change):
                self._changes.append(change)
            case receive.SetTopic(channel=channel, topic=topic, by=by):
                self._views.channel_record(channel).topic = topic
                text = notices.topic_text(by, topic)
                self._received.append(notices.notice(channel, text, by=by, now_ms=now_ms()))
                self._events.emit(api.TopicChanged(channel=channel.hex(), topic=topic, by=by))
                self._views.emit_channels()
            case receive.CertifyDevice() as cert:
                state.device_certs[cert.device.hex()] = DeviceCertRecord(
                    user=cert.user,
                    issuer=cert.issuer.hex(),
                    issued_ms=cert.issued_ms,
                    signature=cert.signature.hex(),
                )
            case receive.SawTyping(channel=channel, user=user):
                if user != self._state.user:
                    self._events.emit(api.TypingChanged(channel=channel.hex(), users=(user,)))
            case receive.SawReceipt(channel=channel, user=user, up_to=up_to):
                rec = self._views.channel_record(channel)
                if user != self._state.user:
                    rec.seen[user] = up_to.hex()
                    self._events.emit(
                        api.ReceiptsChanged(
                            channel=channel.hex(), seen=tuple(sorted(rec.seen.items()))
                        )
                    )
            case receive.AddUnread(channel=channel):
                rec = self._views.channel_record(channel)
                rec.unread += 1
                rec.last_ms = now_ms()
            case receive.LeaveRequested(channel=channel, user=user):
                self._follow.leave_requests.add(channel)
                if user:
                    self._views.leavers.setdefault(channel, set()).add(user)
            case receive.CommitSeen():
                await self._commit_seen(fx)
            case receive.LinkControl(sender=sender, body=body):
                self._follow.link.append((sender, body))

    def _after_mls(self) -> None:
        self._mls_ops += 1
        _crash_point(f"after-mls#{self._mls_ops}")

    async def _apply_mls(self, opened: OpenedEnvelope, seq: int) -> None:
        """One MLS transaction with its receipt (see :meth:`process_batch`).

        ``defer_write``: the binding may leave the message-secrets write of an
        application message for later (docs/MLS.md, "Receivers"); the receipt
        and the saved cursor make sure no message is decrypted twice or lost.
        ``before`` is the group as the core sees it before the transaction;
        for a replayed receipt it is the group after it (the sender's leaf
        and key are the same: an application message changes no member, and
        a committer stays at its leaf).
        """
        group = self._session.mls.load_group(opened.channel_id)
        before = receive.GroupView.of(group)
        try:
            result: receive.ProcessResult | MlsError = group.process(
                opened.body, defer_write=True, receipt=seq
            )
        except MlsError as exc:
            result = exc
        self._must_sync |= isinstance(result, mls.CommitMerged | mls.ProposalStored)
        self._after_mls()
        await self._apply(receive.on_processed(opened, before, result, now_ms=now_ms()), seq=seq)

    async def _commit_seen(self, fx: receive.CommitSeen) -> None:
        channel = fx.channel
        group = self._session.mls.load_group(channel)
        rec = self._views.channel_record(channel)
        rec.last_ms = now_ms()
        for m in fx.added:
            self._state.devices.setdefault(m.signature_key.hex(), _device(m))
        # Stored with the batch, in processing order among the messages.
        me = self._session.device_id
        after = notices.users_of(
            m for m in group.members() if not (fx.removed_self and m.signature_key == me)
        )
        leavers = self._views.leavers.get(channel, set())
        for text in notices.membership_texts(fx.before_users, after, by=fx.by, leavers=leavers):
            self._received.append(notices.notice(channel, text, by=fx.by, now_ms=rec.last_ms))
        leavers.intersection_update(after)
        if fx.removed_self or not group.is_active:
            rec.active = False
            log.info("removed from channel %s", channel.hex()[:16])
        self._follow.leave_requests.discard(channel)
        self._views.emit_members(channel, group)
        self._views.emit_channels()
        if rec.active:
            await self._release_held(group)

    async def _release_held(self, group: mls.Group) -> None:
        """Process held messages of ``group`` whose epoch has been reached."""
        while True:
            view = receive.GroupView.of(group)
            release = receive.releasable(self._state.held, view, device_id=self._session.device_id)
            if release is None:
                return
            self._state.held.remove(release.held)
            await self._apply_mls(release.opened, release.held.seq)
            group = self._session.mls.load_group(group.group_id)

    # ------------------------------------------------------------------ live

    def _set_conn(self, state: api.ConnectionState) -> None:
        if state != self._conn_state:
            self._conn_state = state
            self._events.emit(api.ConnectionChanged(state=state))

    async def _listen_loop(self) -> None:
        backoff = 0.2
        session = self._session
        while True:
            try:
                rpc = await session.rpc()
                async with rpc.fetch_wait(after_seq=self._state.cursor) as sub:
                    self._set_conn(api.ConnectionState.connected(server=session.server_addr))
                    backoff = 0.2
                    async with session.mutex:
                        await self.drain()
                        await self._after_batch()
                    async for res in sub:
                        if res.envelopes:
                            async with session.mutex:
                                await self.process_batch(res.envelopes, defer_ack=True)
                                await self._after_batch()
            except (ConnectionLost, TransportError, Unavailable) as exc:  # node gone/restarting
                log.info("subscription lost (%s); retrying in %.1fs", type(exc).__name__, backoff)
                n = len(self._state.outbox)
                self._set_conn(
                    api.ConnectionState.reconnecting(
                        backoff, server=session.server_addr, outbox_count=n
                    )
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except QpcError as exc:
                self._events.warn(f"live updates stopped: {exc}")
                raise

    async def _event_stream(self) -> AsyncIterator[api.EngineEvent]:
        q = self._events.subscribe()
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
            self._events.unsubscribe(q)
            if not self._events.listening and self._listen_task is not None:
                self._listen_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, QpcError):
                    await self._listen_task
                self._listen_task = None

    def events(self) -> AsyncIterator[api.EngineEvent]:
        """Live events; holds the fetchWait subscription while iterated."""
        return self._event_stream()


def _crash_point(name: str) -> None:
    """Exit here if the test hook names this point (see :data:`CRASH_ENV`)."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(9)


class _Epochs(Mapping[bytes, int]):
    """Group id -> current epoch, read from the MLS client on demand."""

    def __init__(self, client: mls.Client) -> None:
        self._client = client

    def __getitem__(self, gid: bytes) -> int:
        try:
            return self._client.load_group(gid).epoch
        except UnknownGroup:
            raise KeyError(gid) from None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._client.group_ids())

    def __len__(self) -> int:
        return len(self._client.group_ids())


def _device(member: mls.Member) -> DeviceRecord:
    return DeviceRecord(user=member.identity.decode("utf-8", "replace"))
