"""The channels part: MLS groups, membership and commits.

Commits (add, remove, self-update, committing a member's leave proposal) go
through :meth:`Channels.run_commit`: ``commitChannel`` with the current
epoch's post key carries the commit once for every current member device and
the Welcome once for every joining device (docs/PROTOCOL.md, "Channel logs"),
all or nothing; the commit is merged only after the node accepted it,
cleared on any rejection, and on ``staleEpoch`` the inbox is drained (the
``catch_up`` the engine passes in) and the commit is built again. After
merging, the committer sets the new epoch's post key (``setChannelKey``);
until it has, other members' commits are refused and retried after a short
wait. An invite too large for one commit is split into several.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from proto import mls
from proto.crypto.envelope import ContentType
from proto.crypto.identity import device_cert_message
from proto.errors import (
    LocalError,
    MlsError,
    PayloadTooLarge,
    PermissionDenied,
    QpcError,
    StaleEpoch,
    TreeBaseRequired,
)
from tui.client import api, appdata, notices, receive
from tui.client.core import Session, normalize_user
from tui.client.sending import (
    DEVICE_ID_BYTES,
    KEY_WAIT_S,
    OFFLINE,
    Outbox,
    key_hash,
    post_key,
)
from tui.client.state import EngineState
from tui.client.views import Events, Views, now_ms

__all__ = [
    "INVITE_BATCH",
    "LARGE_DELTA_BYTES",
    "MAX_COMMIT_ATTEMPTS",
    "Channels",
    "tree_args",
    "welcome_args",
]

log = logging.getLogger("tui.client.engine")

MAX_COMMIT_ATTEMPTS = 8
"""Commit attempts before giving up on a channel that keeps racing."""
INVITE_BATCH = 256
"""Most devices one invite commit adds; halved while the node finds it too large."""
LARGE_DELTA_BYTES = 256 * 1024
"""A tree delta over this size that is half the tree or more goes whole
(:func:`tree_args`): the node's default budget for the deltas after a base
is max(base bytes, 256 KiB) (docs/PROTOCOL.md, "Tree deltas")."""


def tree_args(
    out: mls.CommitOutput, *, whole: bool, large: int = LARGE_DELTA_BYTES
) -> dict[str, Any]:
    """The tree part of a ``commitChannel`` call for ``out`` (docs/PROTOCOL.md,
    "Tree deltas"): the sealed delta from the previous epoch's tree, or with
    ``whole`` (a new channel, or the node answered ``treeBaseRequired``), or
    without a delta, the whole sealed tree; nothing when the commit has no
    tree (we are no longer a member). A delta over ``large`` bytes that is
    half the tree or more (a big invite into a small group) goes whole: the
    node would refuse it past its delta budget, and it saves little anyway.
    """
    delta = out.tree_delta
    tree = out.ratchet_tree
    small = delta is not None and (
        tree is None or len(delta) <= large or 2 * len(delta) < len(tree)
    )
    if delta is not None and small and not whole:
        return {"tree_delta": delta}
    if tree is not None:
        return {"ratchet_tree": tree}
    return {}


def welcome_args(
    out: mls.CommitOutput,
    joining: list[bytes],
    refs: Mapping[bytes, bytes],
    *,
    whole_tree: bool = False,
) -> dict[str, Any]:
    """The Welcome and tree part of a ``commitChannel`` call for ``out``.

    A Welcome without the ratchet tree goes by reference (docs/PROTOCOL.md,
    "Welcomes by reference"): the split Welcome's shared part (encrypted
    GroupInfo) once, each joiner only its own ``EncryptedGroupSecrets``
    behind a reference to the new epoch, and the tree as a delta or whole
    (:func:`tree_args`).
    """
    tree = tree_args(out, whole=whole_tree)
    if out.welcome is None or not joining:
        return {"welcome": b"", "joiners": [], **tree}
    if out.ratchet_tree is None:  # the tree is in the Welcome: store it whole
        return {"welcome": out.welcome, "joiners": joining}
    common, secrets = out.welcome_parts()
    entries = []
    for device in joining:
        part = secrets.get(refs.get(device, b""))
        if part is None:
            raise LocalError("a joiner's Welcome secrets are missing (KeyPackage mismatch)")
        entries.append(receive.welcome_ref_entry(out.epoch + 1, part))
    return {
        "welcome": b"",
        "joiners": joining,
        "group_info": common,
        "joiner_entries": entries,
        **tree,
    }


class Channels:
    """Channel operations and commits (see module docstring)."""

    def __init__(
        self,
        session: Session,
        state: EngineState,
        events: Events,
        views: Views,
        outbox: Outbox,
        *,
        catch_up: Callable[[], Awaitable[object]],
    ) -> None:
        """Channels of ``session``'s MLS client.

        ``outbox`` sends the channel's meta message; ``catch_up`` processes
        what waits in the inbox (after a ``staleEpoch``, before an invite).
        """
        self._session = session
        self._state = state
        self._events = events
        self._views = views
        self._outbox = outbox
        self._catch_up = catch_up
        self._keys_due: set[bytes] = set()
        """Channels whose post key we, their committer, still have to set."""

    async def run_commit(
        self,
        channel: bytes,
        make: Callable[[mls.Group], mls.CommitOutput | None],
        new_devices: Callable[[mls.Group], dict[bytes, str]] = lambda g: {},
        refs: Mapping[bytes, bytes] | None = None,
    ) -> mls.Group:
        """Build, fan out and merge a commit, retrying on ``staleEpoch``.

        ``make`` builds the commit from the current group (None: nothing to do);
        ``new_devices`` names the devices (id -> user) that get the Welcome;
        ``refs`` maps each to its KeyPackageRef. A Welcome without the tree
        goes by reference (:func:`welcome_args`); the tree goes as a delta, or
        whole when the node answers ``treeBaseRequired``. Caller holds :attr:`mutex`.
        """
        waits = iter(KEY_WAIT_S)
        for _attempt in range(MAX_COMMIT_ATTEMPTS + len(KEY_WAIT_S)):
            group = self._views.group(channel)
            before = notices.users_of(group.members())
            members = [
                m.signature_key
                for m in group.members()
                if m.signature_key != self._session.device_id
                # only deviceIds (32 B) can be packed: see Outbox._prepare
                and len(m.signature_key) == DEVICE_ID_BYTES
            ]
            key = post_key(group)
            joining = new_devices(group)
            out = make(group)
            if out is None:
                return group
            try:
                # A new channel has no tree chain yet: its first commit
                # carries the whole tree; later ones a delta, and the whole
                # tree once more if the node asks for it (same commit).
                whole = out.epoch == 0
                while True:
                    args = welcome_args(out, list(joining), refs or {}, whole_tree=whole)
                    try:
                        await (await self._session.rpc()).commit_channel(
                            channel_id=channel,
                            epoch=out.epoch,
                            post_key=key,
                            commit=out.commit,
                            member_ids=b"".join(members),  # packed: 32 B per device
                            **args,
                        )
                    except TreeBaseRequired:
                        if "tree_delta" not in args:
                            raise
                        log.info("the node asks for the whole tree; sending it")
                        whole = True
                        continue
                    break
            except StaleEpoch:
                group.clear_pending_commit()
                log.info("commit raced another one; catching up and retrying")
                await self._catch_up()
                continue
            except PermissionDenied:
                # The epoch's committer has not set its post key yet (or we
                # are behind): wait a little, catch up, build again.
                group.clear_pending_commit()
                wait = next(waits, None)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                await self._catch_up()
                continue
            except BaseException:
                group.clear_pending_commit()
                raise
            group.merge_pending_commit()
            await self._set_key(channel, group)
            rec = self._views.channel_record(channel)
            rec.last_ms = now_ms()
            await self._session.save()
            await self._store_notices(channel, group, before)
            self._views.emit_members(channel, group)
            return group
        raise LocalError("the channel is too busy: gave up after repeated commit races")

    async def _store_notices(
        self, channel: bytes, group: mls.Group, before: frozenset[str]
    ) -> None:
        """Our own commit changed the members: system entries in the history."""
        me = self._session.user
        after = notices.users_of(group.members())
        leavers = self._views.leavers.get(channel, set())
        for text in notices.membership_texts(before, after, by=me, leavers=leavers):
            entry = notices.notice(channel, text, by=me, now_ms=now_ms())
            local_id = await self._session.profile.append_message(entry)
            stored = self._views.to_api(dataclasses.replace(entry, local_id=local_id))
            self._events.emit(api.MessageReceived(message=stored))
        leavers.intersection_update(after)

    async def _set_key(self, channel: bytes, group: mls.Group) -> None:
        """As the committer of the group's epoch, set its post key on the node.

        Offline, it is retried after the next batch (:meth:`keys_due`); until
        then the channel's members wait to post.
        """
        try:
            await (await self._session.rpc()).set_channel_key(
                channel_id=channel, epoch=group.epoch, key_hash=key_hash(post_key(group))
            )
            self._keys_due.discard(channel)
        except OFFLINE:
            self._keys_due.add(channel)
        except (StaleEpoch, PermissionDenied):  # a later epoch, or already set
            self._keys_due.discard(channel)

    async def keys_due(self) -> None:
        """Set the post keys an earlier :meth:`_set_key` could not (caller holds the mutex)."""
        for channel in list(self._keys_due):
            try:
                await self._set_key(channel, self._views.group(channel))
            except (LocalError, MlsError):
                self._keys_due.discard(channel)

    async def self_update_due(self) -> None:
        """Periodic self-update: a fresh leaf key where ours is older than the interval."""
        due = now_ms() - int(self._session.config.self_update_s * 1000)
        for hexid, rec in list(self._state.channels.items()):
            if rec.active and rec.updated_ms < due:
                try:
                    await self.run_commit(bytes.fromhex(hexid), lambda g: g.self_update())
                    rec.updated_ms = now_ms()
                    await self._session.save()
                except QpcError as exc:
                    log.info("self-update failed: %s", type(exc).__name__)

    async def self_update(self, channel: str) -> api.ChannelInfo:
        """Commit a fresh leaf key in the channel (post-compromise security)."""
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            await self.run_commit(cid, lambda g: g.self_update())
            self._views.channel_record(cid).updated_ms = now_ms()
            await self._session.save()
            return self._views.channel_info(cid)

    # ------------------------------------------------------------------ channels

    async def create_group(self, name: str, *, kind: str = "group") -> api.ChannelInfo:
        """Create a new group channel with us as its only member."""
        name = name.strip()
        if not name or len(name) > appdata.MAX_NAME_CHARS:
            raise LocalError(f"a channel name must have 1..{appdata.MAX_NAME_CHARS} characters")
        async with self._session.mutex:
            cid = os.urandom(16)
            self._session.mls.create_group(cid)
            rec = self._views.channel_record(cid)
            rec.name, rec.kind, rec.last_ms, rec.updated_ms = name, kind, now_ms(), now_ms()
            await self._session.save()
            log.info("created channel %s", cid.hex()[:16])
            self._views.emit_channels()
            return self._views.channel_info(cid)

    async def _keypackages_for(self, user: str, skip: set[bytes]) -> dict[bytes, bytes]:
        """One KeyPackage per device of ``user`` (device id -> package), validated."""
        out: dict[bytes, bytes] = {}
        for dev in await self._session.user_devices(user):
            if dev in skip or dev == self._session.device_id:
                continue
            res = await (await self._session.rpc()).fetch_key_package(username=user, device_id=dev)
            info = mls.parse_key_package(res.package)
            if info.identity != user.encode() or info.signature_key != dev:
                self._events.warn("a KeyPackage does not match its device", user=user)
                continue
            out[dev] = res.package
        return out

    async def invite(self, channel: str, users: list[str]) -> api.ChannelInfo:
        """Add every device of each user (commit fan-out + Welcome)."""
        names = [normalize_user(u) for u in users]
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            await self._catch_up()
            group = self._views.group(cid)
            present = {m.signature_key for m in group.members()}
            packages: dict[bytes, tuple[str, bytes]] = {}
            for user in names:
                for dev, kp in (await self._keypackages_for(user, present)).items():
                    packages[dev] = (user, kp)
            if not packages:
                raise LocalError("nobody to add: unknown users, no devices, or already members")
            refs = {d: mls.parse_key_package(kp).hash_ref for d, (_, kp) in packages.items()}

            batch = INVITE_BATCH

            def pending(g: mls.Group) -> dict[bytes, str]:
                have = {m.signature_key for m in g.members()}
                todo = [(d, u) for d, (u, _) in packages.items() if d not in have]
                return dict(todo[:batch])

            def make(g: mls.Group) -> mls.CommitOutput | None:
                todo = pending(g)
                if not todo:
                    return None
                # The Welcome leaves the tree out: it goes by reference.
                return g.add_members([packages[d][1] for d in todo], update_path=False)

            had = {m.signature_key.hex() for m in self._views.group(cid).members()}
            # An invite too big for one commit is split into several: the
            # batch halves whenever the node finds the commit or Welcome too large.
            while pending(self._views.group(cid)):
                try:
                    await self.run_commit(cid, make, pending, refs)
                except PayloadTooLarge:
                    if batch == 1:
                        raise LocalError(
                            "the group has grown too large for a Welcome to fit the node's limit"
                        ) from None
                    batch = max(1, batch // 2)
                    log.info("invite too large for one commit; %d devices per commit", batch)
            now = {m.signature_key.hex() for m in self._views.group(cid).members()}
            await self._send_meta(cid, joiners=now - had)
            await self._session.save()
            self._views.emit_channels()
            return self._views.channel_info(cid)

    async def add_own_device(self, device: bytes) -> list[str]:
        """Add our newly linked ``device`` to every active channel we are in.

        Only this device (proved by the link code) is added, never another
        device the directory lists for our account. Returns the channel ids
        it was added to.
        """
        user = self._session.user
        added: list[str] = []
        # The certificate members check: this (existing) device vouches that
        # ``device`` belongs to the account (docs/PROTOCOL.md "Linked devices").
        issued = now_ms()
        cert = appdata.DeviceCert(
            device=device,
            issued_ms=issued,
            signature=self._session.identity.sign(device_cert_message(user, device, issued)),
        )
        async with self._session.mutex:
            await self._catch_up()
            for hexid, rec in list(self._state.channels.items()):
                cid = bytes.fromhex(hexid)
                if not rec.active or _member(self._views.group(cid), device) is not None:
                    continue
                res = await (await self._session.rpc()).fetch_key_package(
                    username=user, device_id=device
                )
                info = mls.parse_key_package(res.package)
                if info.identity != user.encode() or info.signature_key != device:
                    raise LocalError("the linked device's KeyPackage does not match it")

                def make(g: mls.Group, kp: bytes = res.package) -> mls.CommitOutput | None:
                    if _member(g, device) is not None:
                        return None
                    return g.add_members([kp], update_path=False)  # Welcome by reference

                def joining(g: mls.Group) -> dict[bytes, str]:
                    return {} if _member(g, device) is not None else {device: user}

                await self.run_commit(cid, make, joining, {device: info.hash_ref})
                await self._send_meta(cid, joiners={device.hex()})
                await self._outbox.send_app(cid, cert)
                added.append(hexid)
            await self._session.save()
            self._views.emit_channels()
        return added

    async def remove_own_device(self, device: bytes) -> list[str]:
        """Remove our ``device`` from every channel it is in; returns those channel ids."""
        if device == self._session.device_id:
            raise LocalError("this device cannot unlink itself; unlink it from another device")
        removed: list[str] = []
        async with self._session.mutex:
            await self._catch_up()
            for hexid, rec in list(self._state.channels.items()):
                cid = bytes.fromhex(hexid)
                if not rec.active:
                    continue

                def make(g: mls.Group) -> mls.CommitOutput | None:
                    m = _member(g, device)
                    return None if m is None else g.remove_members([m.leaf_index])

                if _member(self._views.group(cid), device) is None:
                    continue
                await self.run_commit(cid, make)
                removed.append(hexid)
            await self._session.save()
            self._views.emit_channels()
        return removed

    async def _send_meta(self, cid: bytes, *, joiners: set[str]) -> None:
        """The channel's name, kind and the members' access keys, to the
        devices just added (hex ids) only: the other members have them from
        their own join or a Hello, and a meta message to every member would
        make an add cost 32 B per member (the packed recipients)."""
        if not joiners:
            return
        rec = self._views.channel_record(cid)
        aks = {k: d.access_key for k, d in self._state.devices.items() if d.access_key}
        aks[self._session.device_id.hex()] = self._state.access_key
        group = self._views.group(cid)
        members = {m.signature_key.hex() for m in group.members()}
        aks = {k: v for k, v in aks.items() if k in members}
        item = appdata.Meta(name=rec.name, kind=rec.kind, access_keys=aks)
        await self._outbox.send_app(cid, item, only=joiners)

    async def dm(self, user: str) -> api.ChannelInfo:
        """The DM channel with ``user`` (created and the user invited on first use)."""
        peer = normalize_user(user)
        if peer == self._session.user:
            raise LocalError("a DM needs another user")
        for hexid, rec in self._state.channels.items():
            if rec.kind == "dm" and rec.active:
                info = self._views.channel_info(bytes.fromhex(hexid))
                if set(info.members) == {self._session.user, peer}:
                    return info
        async with self._session.mutex:
            devices = await self._session.user_devices(peer)
            await self._session.save()
        if not devices:
            raise LocalError(f"{peer!r} has no devices (unknown user?)")
        chan = await self.create_group(f"{self._session.user}+{peer}", kind="dm")
        try:
            return await self.invite(chan.id, [peer])
        except BaseException:
            async with self._session.mutex:
                self._session.mls.delete_group(bytes.fromhex(chan.id))
                del self._state.channels[chan.id]
                await self._session.save()
            raise

    async def leave(self, channel: str) -> None:
        """Leave: send our remove proposal; the next member to see it commits it."""
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            group = self._views.group(cid)
            proposal = group.leave()
            for m in group.members():
                if m.signature_key == self._session.device_id:
                    continue
                payload = await self._session.seal_for(
                    m.signature_key, m.identity.decode(), cid, ContentType.MLS_PROPOSAL, proposal
                )
                await (await self._session.rpc()).enqueue(
                    recipient=m.signature_key, channel_id=cid, payload=payload
                )
            self._views.channel_record(cid).active = False
            await self._session.save()
            self._views.emit_channels()

    async def remove(self, channel: str, users: list[str]) -> api.ChannelInfo:
        """Remove every device of each user from the channel."""
        names = {normalize_user(u) for u in users}
        async with self._session.mutex:
            cid = self._views.resolve(channel)
            await self._catch_up()

            def leaves(g: mls.Group) -> list[int]:
                return [
                    m.leaf_index
                    for m in g.members()
                    if m.identity.decode("utf-8", "replace") in names
                    and m.signature_key != self._session.device_id
                ]

            if not leaves(self._views.group(cid)):
                raise LocalError("none of these users is a member")
            await self.run_commit(cid, lambda g: g.remove_members(leaves(g)) if leaves(g) else None)
            return self._views.channel_info(cid)

    async def members(self, channel: str) -> tuple[api.Member, ...]:
        """Current members from local MLS state."""
        async with self._session.mutex:
            return self._views.member_list(self._views.group(self._views.resolve(channel)))

    async def channels(self) -> tuple[api.ChannelInfo, ...]:
        """Every known channel, newest activity first."""
        async with self._session.mutex:
            return self._views.all_channels()


def _member(group: mls.Group, device: bytes) -> mls.Member | None:
    """The member whose signature key is ``device``."""
    return next((m for m in group.members() if m.signature_key == device), None)
