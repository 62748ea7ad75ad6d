"""The client engine: a facade over its parts, implementing ``ClientEngine``.

:class:`Engine` implements :class:`tui.client.api.ClientEngine`. Typical use::

    engine = await Engine.open(EngineConfig(profile_dir=path), passphrase)
    try:
        await engine.login("alice", password)
        chan = await engine.create_group("friends")
        await engine.invite(chan.id, ["bob"])
        await engine.send(chan.id, "hello")
    finally:
        await engine.close()

Parts (each one job; dependencies passed in at construction, see
``docs/CLIENT.md``):

* :class:`~tui.client.core.Session`: profile, state document, connection,
  account, device keys, peers' keys, KeyPackages;
* :class:`~tui.client.views.Events` and :class:`~tui.client.views.Views`:
  the event fan-out and the API views;
* :class:`~tui.client.delivery.Inbox`: receiving (the shell around the
  sans-I/O core :mod:`tui.client.receive`), ack, the live subscription;
* :class:`~tui.client.sending.Outbox`: sending, the outbox and its retries;
* :class:`~tui.client.channels.Channels`: MLS groups, membership, commits.

The facade wires them, runs the follow-ups of each received batch
(:meth:`Engine._after_batch`) and serves history and key checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from proto import mls
from proto.crypto.envelope import HybridPrivateKey
from proto.crypto.identity import IdentityKey, fingerprint, safety_number, verify_device_cert
from proto.errors import (
    BadSignature,
    KeyChangedSinceVerified,
    LocalError,
    ProfileError,
    QpcError,
)
from proto.rpc_client import RpcClient
from tui.client import api, appdata
from tui.client.channels import Channels
from tui.client.core import EngineConfig, Session, normalize_user
from tui.client.delivery import Inbox
from tui.client.kinds import Kinds
from tui.client.linking import Linker, LinkFailed
from tui.client.profile import Profile
from tui.client.sending import Outbox, parse_id
from tui.client.state import EngineState
from tui.client.views import Events, Views

__all__ = ["HELLO_MAX_MEMBERS", "Engine", "EngineConfig"]

HELLO_MAX_MEMBERS = 32
"""A device that joins a channel of at most this many members announces its
access key there (one message every member decrypts). In larger channels it
does not: every joiner announcing itself to everyone costs O(members^2)
decrypts while a group grows, and the inviter's meta message already
carries the members' access keys (docs/CLIENT.md)."""

log = logging.getLogger("tui.client.engine")


class Engine:
    """The client engine (implements :class:`tui.client.api.ClientEngine`)."""

    def __init__(self, session: Session) -> None:
        """Internal: use :meth:`open`. ``session`` is loaded."""
        self.session = session
        state = session.state
        self.events_bus = Events()
        self.views = Views(session, state, self.events_bus)
        self.inbox = Inbox(
            session,
            state,
            self.events_bus,
            self.views,
            after_batch=self._after_batch,
        )
        self.outbox = Outbox(session, state, self.events_bus, self.views)
        self.channels_part = Channels(
            session, state, self.events_bus, self.views, self.outbox, catch_up=self.inbox.drain
        )
        self.kinds = Kinds(session, state, self.events_bus, self.views, self.outbox)
        self.linker = Linker(session)

    @classmethod
    async def open(cls, config: EngineConfig, passphrase: str, *, create: bool = False) -> Engine:
        """Unlock (or with ``create``, create) the profile and load the engine state.

        Raises:
            ProfileError: no profile (or one exists already with ``create``), or in use.
            WrongPassphrase: the passphrase is wrong.
        """
        path = Path(config.profile_dir)
        exists = Profile.exists(path)
        if create and exists:
            raise ProfileError(f"a profile already exists at {path}")
        if not create and not exists:
            raise ProfileError(f"no profile at {path}: run `qpc register` first")
        lock = await asyncio.to_thread(Session.acquire_lock, path, config.lock_wait_s)
        try:
            if create:
                profile = await Profile.create(path, passphrase, kdf=config.kdf)
            else:
                profile = await Profile.open(path, passphrase)
        except BaseException:
            lock.close()
            raise
        session = Session(config, profile, lock)
        try:
            await session.load()
        except BaseException:
            await session.close()
            raise
        return cls(session)

    async def close(self) -> None:
        """Stop live updates, save and ack what was processed, then close everything."""
        await self.kinds.close()
        await self.inbox.close()
        await self.session.close()

    # ------------------------------------------------------------------ accessors

    @property
    def state(self) -> EngineState:
        """The engine state document (read it; the parts write it)."""
        return self.session.state

    @property
    def profile(self) -> Profile:
        """The unlocked profile."""
        return self.session.profile

    @property
    def mutex(self) -> asyncio.Lock:
        """Serialises everything touching MLS state or the engine state."""
        return self.session.mutex

    @property
    def mls(self) -> mls.Client:
        """Our MLS client."""
        return self.session.mls

    @property
    def user(self) -> str:
        """Our username."""
        return self.session.user

    @property
    def identity(self) -> IdentityKey:
        """Our device identity key."""
        return self.session.identity

    @property
    def device_id(self) -> bytes:
        """Our device id (Ed25519 public key)."""
        return self.session.device_id

    @property
    def hybrid(self) -> HybridPrivateKey:
        """Our device's X-Wing private key."""
        return self.session.hybrid

    async def rpc(self) -> RpcClient:
        """The node connection."""
        return await self.session.rpc()

    def resolve(self, channel: str) -> bytes:
        """A channel id from hex id, unique hex prefix or unique name."""
        return self.views.resolve(channel)

    def channel_info(self, channel: bytes) -> api.ChannelInfo:
        """The API view of one channel."""
        return self.views.channel_info(channel)

    # ------------------------------------------------------------------ session

    async def register(
        self, user: str, password: str, *, on_wait: api.RateLimitWait | None = None
    ) -> api.WhoAmI:
        """Create the account (OPAQUE), then log in (waiting out rate limits)."""
        return await self.session.register(user, password, on_wait=on_wait)

    async def login(
        self, user: str, password: str, *, on_wait: api.RateLimitWait | None = None
    ) -> api.WhoAmI:
        """OPAQUE login; creates and registers this device and tops up KeyPackages."""
        return await self.session.login(user, password, on_wait=on_wait)

    async def whoami(self) -> api.WhoAmI:
        """Identity, KeyPackage stock and the pinned server fingerprint."""
        return await self.session.whoami()

    async def health(self) -> api.Health:
        """The node's health report."""
        return await self.session.health()

    async def ping(self, count: int = 1) -> api.PingResult:
        """``count`` round trips."""
        return await self.session.ping(count)

    async def refresh_keypackages(self) -> api.KeyStock:
        """Force a refill up to the batch size and a fresh last-resort package."""
        return await self.session.refresh_keypackages()

    def connection_state(self) -> api.ConnectionState:
        """Current connection state (no I/O)."""
        return self.session.connection_state()

    def server_info(self) -> api.ServerInfo:
        """The node's ``host:port`` and whether it is the embedded local node (no I/O)."""
        return self.session.server_info()

    # ------------------------------------------------------------------ channels

    async def create_group(self, name: str, *, kind: str = "group") -> api.ChannelInfo:
        """Create a new group channel with us as its only member."""
        return await self.channels_part.create_group(name, kind=kind)

    async def invite(self, channel: str, users: list[str]) -> api.ChannelInfo:
        """Add every device of each user (commit fan-out + Welcome)."""
        return await self.channels_part.invite(channel, users)

    async def dm(self, user: str) -> api.ChannelInfo:
        """The DM channel with ``user`` (created and the user invited on first use)."""
        return await self.channels_part.dm(user)

    async def leave(self, channel: str) -> None:
        """Leave: send our remove proposal; the next member to see it commits it."""
        await self.channels_part.leave(channel)

    async def remove(self, channel: str, users: list[str]) -> api.ChannelInfo:
        """Remove every device of each user from the channel."""
        return await self.channels_part.remove(channel, users)

    async def self_update(self, channel: str) -> api.ChannelInfo:
        """Commit a fresh leaf key in the channel (post-compromise security)."""
        return await self.channels_part.self_update(channel)

    async def members(self, channel: str) -> tuple[api.Member, ...]:
        """Current members from local MLS state."""
        return await self.channels_part.members(channel)

    async def channels(self) -> tuple[api.ChannelInfo, ...]:
        """Every known channel, newest activity first."""
        return await self.channels_part.channels()

    # ------------------------------------------------------------------ messages

    async def send(
        self, channel: str, text: str, *, reply_to: str = "", action: bool = False
    ) -> api.Message:
        """Encrypt and send ``text``; offline, the message waits in the outbox.

        ``reply_to``: the parent's hex message id. ``action``: an action
        message (``/me waves``, rendered ``* alice waves``).

        Raises:
            KeyChangedSinceVerified: a member we verified has a device we have
                not accepted (the message is not sent; nothing is lost).
        """
        self._refuse_changed_verified(channel)
        return await self.outbox.send(channel, text, reply_to=reply_to, action=action)

    async def send_action(self, channel: str, text: str) -> api.Message:
        """``/me``: send an action message (the slash-command parser calls this)."""
        self._refuse_changed_verified(channel)
        return await self.outbox.send(channel, text, action=True)

    async def react(
        self, channel: str, msg_id: str, emoji: str, *, remove: bool = False
    ) -> api.Message:
        """Add (or with ``remove`` take back) our ``emoji`` on the message ``msg_id`` (hex)."""
        return await self.kinds.react(channel, msg_id, emoji, remove=remove)

    async def edit(self, channel: str, msg_id: str, text: str) -> api.Message:
        """Replace the text of one of our messages on every member's device."""
        return await self.kinds.edit(channel, msg_id, text)

    async def delete(self, channel: str, msg_id: str) -> api.Message:
        """Delete one of our messages on every member's device (a tombstone stays)."""
        return await self.kinds.delete(channel, msg_id)

    async def set_topic(self, channel: str, topic: str) -> api.ChannelInfo:
        """``/topic``: set the channel topic for every member ("" clears it)."""
        return await self.kinds.set_topic(channel, topic)

    async def set_privacy(
        self, *, receipts: bool | None = None, typing: bool | None = None
    ) -> api.Privacy:
        """Switch sending read receipts / typing notices on or off (None: unchanged)."""
        return await self.kinds.set_privacy(receipts=receipts, typing=typing)

    async def typing(self, channel: str) -> None:
        """Tell the channel we are typing (coalesced; off with ``send_typing=False``)."""
        await self.kinds.typing(channel)

    async def message(self, channel: str, msg_id: str) -> api.Message | None:
        """The stored message with hex id ``msg_id`` (for a reply's quoted parent)."""
        async with self.session.mutex:
            cid = self.views.resolve(channel)
            found = await self.profile.find_message(cid, parse_id(msg_id))
            return None if found is None else self.views.to_api(found)

    def _refuse_changed_verified(self, channel: str) -> None:
        """Refuse to send while a verified member has a device not pinned for them."""
        verified = self.state.verified
        if not verified:
            return
        try:
            group = self.views.group(self.views.resolve(channel))
        except LocalError:
            return  # the send itself reports it
        for member in self.views.member_list(group):
            if member.is_self or member.user not in verified:
                continue
            pinned = self.state.pins.get(member.user, [])
            good = set(verified[member.user])
            carried = self._certified(member.user, list(member.devices), set(pinned), good)
            for d in member.devices:
                if d not in pinned and not carried.get(d, ("", False))[1]:
                    raise KeyChangedSinceVerified(member.user)

    def _certified(
        self, user: str, devices: list[str], pinned: set[str], verified: set[str]
    ) -> dict[str, tuple[str, bool]]:
        """Devices of ``user`` not pinned but certified (a valid device
        certificate) by a pinned device of ``user``, transitively:
        hex device -> (hex issuer, issuer verified). A missing, forged or
        foreign certificate certifies nothing."""
        out: dict[str, tuple[str, bool]] = {}
        trusted = {d: d in verified for d in pinned}
        progress = True
        while progress:
            progress = False
            for dev in devices:
                if dev in trusted:
                    continue
                cert = self.state.device_certs.get(dev)
                if cert is None or cert.user != user or cert.issuer not in trusted:
                    continue
                try:
                    verify_device_cert(
                        bytes.fromhex(cert.issuer),
                        user,
                        bytes.fromhex(dev),
                        cert.issued_ms,
                        bytes.fromhex(cert.signature),
                    )
                except (BadSignature, ValueError):
                    continue
                trusted[dev] = trusted[cert.issuer]
                out[dev] = (cert.issuer, trusted[dev])
                progress = True
        return out

    async def sync(self) -> list[api.Message]:
        """Fetch, process, persist and ack everything waiting; flush the outbox."""
        async with self.session.mutex:
            msgs = await self.inbox.drain()
            await self._after_batch()
            return msgs

    def events(self) -> AsyncIterator[api.EngineEvent]:
        """Live events; holds the fetchWait subscription while iterated."""
        return self.inbox.events()

    async def history(
        self, channel: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[api.Message]:
        """Stored messages, oldest first; marks the channel read."""
        async with self.session.mutex:
            cid = self.views.resolve(channel)
            rows = await self.session.list_messages(cid, limit=limit, before_id=before_id)
            rec = self.views.channel_record(cid)
            if rec.unread:
                rec.unread = 0
                await self.session.save()
            if before_id is None and rows:
                await self.kinds.read_up_to(cid, rows[-1])
            return [self.views.to_api(r) for r in rows]

    async def search(
        self, query: str, *, channel: str | None = None, limit: int = 50
    ) -> list[api.Message]:
        """Stored messages containing every word of ``query`` (any case), newest first.

        Searches every channel this profile has history for, or only
        ``channel``. The index is held in memory and kept in encrypted segments
        in the store (see :mod:`tui.client.search`).
        """
        cid = None if channel is None else self.views.resolve(channel)
        channels = [bytes.fromhex(h) for h in self.session.state.channels]
        rows = await self.session.search_messages(query, channels, channel=cid, limit=limit)
        return [self.views.to_api(r) for r in rows]

    async def mark_read(self, channel: str) -> None:
        """Clear the channel's unread count (saved: survives restarts)."""
        async with self.session.mutex:
            cid = self.views.resolve(channel)
            rec = self.views.channel_record(cid)
            if rec.unread:
                rec.unread = 0
                await self.session.save()
            newest = await self.session.list_messages(cid, limit=1, before_id=None)
            await self.kinds.read_up_to(cid, newest[-1] if newest else None)

    async def _after_batch(self) -> None:
        """Follow-ups of received batches (caller holds the mutex): say hello in
        joined channels, refill KeyPackages, commit leave requests, commit due
        self-updates, flush the outbox."""
        await self.channels_part.keys_due()
        follow = self.inbox.take_follow_ups()
        for sender, body in follow.link:
            try:
                await self.linker.handle(sender, body)
            except QpcError as exc:
                log.info("link message not handled: %s", type(exc).__name__)
        for channel in follow.joined:
            if len(self.views.group(channel).members()) > HELLO_MAX_MEMBERS:
                continue  # the inviter's meta message carries the access keys
            try:
                await self.outbox.send_app(
                    channel, appdata.Hello(access_key=bytes.fromhex(self.state.access_key))
                )
            except QpcError as exc:
                log.info("could not announce our access key: %s", type(exc).__name__)
        if follow.joined:  # each Welcome consumed one of our KeyPackages
            try:
                await self.session.top_up_keypackages()
            except QpcError as exc:
                log.info("could not refill KeyPackages: %s", type(exc).__name__)
        for channel in follow.leave_requests:
            try:
                await self.channels_part.run_commit(
                    channel,
                    lambda g: g.commit_pending_proposals() if g.pending_proposal_count else None,
                )
            except QpcError as exc:
                log.info("could not commit a leave request: %s", type(exc).__name__)
        await self.channels_part.self_update_due()
        await self.outbox.flush()

    # ------------------------------------------------------------------ devices

    def link_offer(self) -> str:
        """On the existing device: open a link offer; returns the code to show."""
        return self.linker.open_offer()

    async def link_wait(
        self,
        timeout: float,  # noqa: ASYNC109
        *,
        pump: bool = True,
        on_progress: Callable[[str], None] | None = None,
    ) -> api.LinkResult:
        """On the existing device: wait for the new device to prove the code,
        then add it to every channel we are in.

        ``pump``: process the inbox here (the CLI); False when an
        :meth:`events` subscription already runs (the TUI). ``on_progress``
        hears each step as a line of text.

        Raises:
            LinkFailed: the code was wrong too often, expired, or nobody came in time.
        """
        try:
            device = await self._listen_until(self.linker.offer_result(), timeout, pump=pump)
        finally:
            self.linker.close_offer()
        if on_progress is not None:
            on_progress(f"device {device.hex()[:16]} proved the code; adding it to the channels")
        added = await self.channels_part.add_own_device(device)
        return api.LinkResult(device=device.hex(), channels=tuple(added))

    async def link_join(
        self,
        code: str,
        timeout: float,  # noqa: ASYNC109
        *,
        pump: bool = True,
    ) -> api.LinkResult:
        """On the new device: prove ``code`` to the existing device, then join
        the channels it adds us to (``pump`` as for :meth:`link_wait`).

        Raises:
            LinkFailed: wrong code, refused, or no device answered in time.
        """
        async with self.session.mutex:
            await self.inbox.drain()
            fut = await self.linker.start_join(code)
        device = await self._listen_until(fut, timeout, pump=pump)
        return api.LinkResult(device=device.hex())

    async def _listen_until(
        self,
        fut: asyncio.Future[bytes],
        timeout: float,  # noqa: ASYNC109 (the pump must stop, not be timed out)
        *,
        pump: bool = True,
    ) -> bytes:
        """Process the inbox live until ``fut`` resolves (or ``timeout`` passes).

        Without ``pump`` only wait: another :meth:`events` subscription feeds
        the linker."""
        if not pump:
            alone, _ = await asyncio.wait({fut}, timeout=timeout)
            if fut not in alone:
                raise LinkFailed("no answer from the other device in time")
            return fut.result()

        async def drive() -> None:
            async for _ in self.events():
                if fut.done():
                    return

        task = asyncio.ensure_future(drive())
        try:
            waited: set[asyncio.Future[Any]] = {fut, task}
            done, _ = await asyncio.wait(
                waited, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if fut not in done:
                exc = task.exception() if task in done else None
                if exc is not None:
                    raise exc
                raise LinkFailed("no answer from the other device in time")
            return fut.result()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, QpcError):
                await task

    async def devices(self) -> tuple[api.OwnDevice, ...]:
        """Our account's devices as the node lists them, and how many of our channels each is in."""
        async with self.session.mutex:
            listed = await self.session.user_devices(self.user)
            groups = [
                self.mls.load_group(bytes.fromhex(h))
                for h, rec in self.state.channels.items()
                if rec.active
            ]
            counts = {
                d: sum(1 for g in groups if any(m.signature_key == d for m in g.members()))
                for d in listed
            }
        return tuple(
            api.OwnDevice(
                device=d.hex(),
                fingerprint=fingerprint(d),
                this_device=d == self.device_id,
                channels=counts[d],
            )
            for d in listed
        )

    async def unlink(self, device: str) -> tuple[str, ...]:
        """Remove one of our other devices from every channel, then from the account.

        ``device`` is a hex id or a unique prefix of one (at least 8 digits).
        Returns the channels it was removed from.
        """
        prefix = device.strip().lower()
        if len(prefix) < 8:
            raise LocalError("give at least 8 hex digits of the device id (`qpc devices`)")
        async with self.session.mutex:
            listed = await self.session.user_devices(self.user)
        found = [d for d in listed if d.hex().startswith(prefix)]
        if len(found) != 1:
            raise LocalError(
                "no such device in this account" if not found else "ambiguous device id prefix"
            )
        removed = await self.channels_part.remove_own_device(found[0])
        await (await self.rpc()).unlink_device(device_id=found[0])
        return tuple(removed)

    # ------------------------------------------------------------------ keys

    async def check_key(
        self, user: str, *, accept: bool = False, verify: bool = False
    ) -> api.KeyCheck:
        """Safety numbers per device of ``user``; a device not pinned before is ``changed``.

        Statuses: ``new`` (first seen, now pinned, not verified), ``unverified``
        (matches the pin; the user never compared numbers), ``verified``
        (matches the pin and the user marked it verified), ``changed``.
        With ``accept`` the current devices replace the pins (after the user
        compared the safety numbers out of band); devices verified before and
        still listed stay verified. With ``verify`` the user says the numbers
        match: the current devices are pinned and marked verified.
        """
        peer = normalize_user(user)
        session = self.session
        async with session.mutex:
            had = list(self.state.pins.get(peer, []))
            was_verified = set(self.state.verified.get(peer, []))
            devices = await session.user_devices(peer)
            listed = [d.hex() for d in devices]
            carried = self._certified(peer, listed, set(had), was_verified) if had else {}
            checks = []
            for dev in devices:
                number = safety_number(session.device_id, session.user, dev, peer)
                linked_by = ""
                if verify:
                    status = "verified"
                elif not had:
                    status = "new"
                elif dev.hex() in had:
                    status = "verified" if dev.hex() in was_verified else "unverified"
                elif dev.hex() in carried:
                    linked_by, good = carried[dev.hex()]
                    status = "verified" if good else "unverified"
                else:
                    status = "changed"
                prev = next((h for h in had if h not in listed), "") if status == "changed" else ""
                checks.append(
                    api.DeviceKeyCheck(
                        device=dev.hex(),
                        safety_number=number,
                        status=status,
                        previous_device=prev,
                        linked_by=linked_by,
                    )
                )
            if carried and not (accept or verify):
                # Certified by a pinned device: pinned too, verified if it is.
                self.state.pins[peer] = had + [d for d in carried if d not in had]
                good_ones = [d for d, (_, good) in carried.items() if good]
                if good_ones:
                    self.state.verified[peer] = sorted(was_verified) + good_ones
            if accept or verify or not had:
                self.state.pins[peer] = listed
            if verify:
                self.state.verified[peer] = listed
            elif accept:
                kept = [d for d in listed if d in was_verified]
                if kept:
                    self.state.verified[peer] = kept
                else:
                    self.state.verified.pop(peer, None)
            await session.save()
            result = api.KeyCheck(user=peer, devices=tuple(checks))
            if result.changed:
                self.events_bus.warn("a safety number changed", user=peer)
            return result
