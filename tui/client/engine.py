"""The client engine: channels (MLS groups), commits, sending, outbox, key checks.

:class:`Engine` implements :class:`tui.client.api.ClientEngine`. Typical use::

    engine = await Engine.open(EngineConfig(profile_dir=path), passphrase)
    try:
        await engine.login("alice", password)
        chan = await engine.create_group("friends")
        await engine.invite(chan.id, ["bob"])
        await engine.send(chan.id, "hello")
    finally:
        await engine.close()

Layers: :mod:`tui.client.core` (profile, connection, account, peers) <-
:mod:`tui.client.delivery` (receiving, ordering, events) <-
:mod:`tui.client.sending` (sending, outbox, commits) <- :class:`Engine`
(channel operations, history, key checks).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from proto import mls
from proto.crypto.envelope import ContentType
from proto.crypto.identity import safety_number
from proto.errors import LocalError, ProfileError
from proto.rpc_client import RpcClient
from tui.client import api, appdata
from tui.client.core import EMBEDDED, EngineConfig, normalize_user
from tui.client.delivery import now_ms
from tui.client.localnode import read_local_node
from tui.client.profile import Profile
from tui.client.sending import Sender

__all__ = ["Engine", "EngineConfig"]

log = logging.getLogger("tui.client.engine")


class Engine(Sender):
    """The client engine (implements :class:`tui.client.api.ClientEngine`)."""

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
        lock = await asyncio.to_thread(cls._acquire_lock, path, config.lock_wait_s)
        try:
            if create:
                profile = await Profile.create(path, passphrase, kdf=config.kdf)
            else:
                profile = await Profile.open(path, passphrase)
        except BaseException:
            lock.close()
            raise
        engine = cls(config, profile, lock)
        try:
            await engine._load()
        except BaseException:
            await engine.close()
            raise
        return engine

    # ------------------------------------------------------------------ node

    def server_info(self) -> api.ServerInfo:
        """The node's ``host:port`` and whether it is the embedded local node (no I/O)."""
        embedded = self.server == EMBEDDED
        address = self._server_addr
        if not address and not embedded:
            address = self.server
        return api.ServerInfo(address=address, embedded=embedded)

    async def rpc(self) -> RpcClient:
        """The node connection; on the embedded node, follows it to a new address.

        While the connection is down, the embedded node's record is read
        again: a node restarted on another port (or with another key)
        replaces the connection, which then reconnects there. No node is
        started here (``qpc`` starts one when it needs it).
        """
        current = self._rpc
        if current is not None and not current.connected and self.server == EMBEDDED:
            node = await asyncio.to_thread(read_local_node, self.config.data_dir)
            cfg = current.config
            if (
                node is not None
                and self._rpc is current
                and (
                    (node.host, node.port) != (cfg.host, cfg.port)
                    or node.fingerprint != cfg.trust.fingerprint
                )
            ):
                log.info("the local node moved to %s; reconnecting there", node.address)
                self._rpc = None
                await current.close()
        return await super().rpc()

    async def self_update(self, channel: str) -> api.ChannelInfo:
        """Commit a fresh leaf key in the channel (post-compromise security)."""
        async with self.mutex:
            cid = self.resolve(channel)
            await self.run_commit(cid, lambda g: g.self_update())
            self.channel_record(cid).updated_ms = now_ms()
            await self.save()
            return self.channel_info(cid)

    # ------------------------------------------------------------------ channels

    async def create_group(self, name: str, *, kind: str = "group") -> api.ChannelInfo:
        """Create a new group channel with us as its only member."""
        name = name.strip()
        if not name or len(name) > appdata.MAX_NAME_CHARS:
            raise LocalError(f"a channel name must have 1..{appdata.MAX_NAME_CHARS} characters")
        async with self.mutex:
            cid = os.urandom(16)
            self.mls.create_group(cid)
            rec = self.channel_record(cid)
            rec.name, rec.kind, rec.last_ms, rec.updated_ms = name, kind, now_ms(), now_ms()
            await self.save()
            log.info("created channel %s", cid.hex()[:16])
            self.emit_channels()
            return self.channel_info(cid)

    async def _keypackages_for(self, user: str, skip: set[bytes]) -> dict[bytes, bytes]:
        """One KeyPackage per device of ``user`` (device id -> package), validated."""
        out: dict[bytes, bytes] = {}
        for dev in await self.user_devices(user):
            if dev in skip or dev == self.device_id:
                continue
            res = await (await self.rpc()).fetch_key_package(username=user, device_id=dev)
            info = mls.parse_key_package(res.package)
            if info.identity != user.encode() or info.signature_key != dev:
                self.warn("a KeyPackage does not match its device", user=user)
                continue
            out[dev] = res.package
        return out

    async def invite(self, channel: str, users: list[str]) -> api.ChannelInfo:
        """Add every device of each user (commit fan-out + Welcome)."""
        names = [normalize_user(u) for u in users]
        async with self.mutex:
            cid = self.resolve(channel)
            await self.drain()
            group = self._group(cid)
            present = {m.signature_key for m in group.members()}
            packages: dict[bytes, tuple[str, bytes]] = {}
            for user in names:
                for dev, kp in (await self._keypackages_for(user, present)).items():
                    packages[dev] = (user, kp)
            if not packages:
                raise LocalError("nobody to add: unknown users, no devices, or already members")

            def pending(g: mls.Group) -> dict[bytes, str]:
                have = {m.signature_key for m in g.members()}
                return {d: u for d, (u, _) in packages.items() if d not in have}

            def make(g: mls.Group) -> mls.CommitOutput | None:
                todo = pending(g)
                if not todo:
                    return None
                # Per-device Welcomes carry the tree (joiners call
                # join_from_welcome without a separate ratchet tree).
                return g.add_members([packages[d][1] for d in todo], ratchet_tree_in_welcome=True)

            await self.run_commit(cid, make, pending)
            await self._send_meta(cid)
            await self.save()
            self.emit_channels()
            return self.channel_info(cid)

    async def _send_meta(self, cid: bytes) -> None:
        rec = self.channel_record(cid)
        aks = {k: d.access_key for k, d in self.state.devices.items() if d.access_key}
        aks[self.device_id.hex()] = self.state.access_key
        group = self._group(cid)
        members = {m.signature_key.hex() for m in group.members()}
        aks = {k: v for k, v in aks.items() if k in members}
        item = appdata.Meta(name=rec.name, kind=rec.kind, access_keys=aks)
        await self._send_app(cid, item)

    async def dm(self, user: str) -> api.ChannelInfo:
        """The DM channel with ``user`` (created and the user invited on first use)."""
        peer = normalize_user(user)
        if peer == self.user:
            raise LocalError("a DM needs another user")
        for hexid, rec in self.state.channels.items():
            if rec.kind == "dm" and rec.active:
                info = self.channel_info(bytes.fromhex(hexid))
                if set(info.members) == {self.user, peer}:
                    return info
        async with self.mutex:
            devices = await self.user_devices(peer)
            await self.save()
        if not devices:
            raise LocalError(f"{peer!r} has no devices (unknown user?)")
        chan = await self.create_group(f"{self.user}+{peer}", kind="dm")
        try:
            return await self.invite(chan.id, [peer])
        except BaseException:
            async with self.mutex:
                self.mls.delete_group(bytes.fromhex(chan.id))
                del self.state.channels[chan.id]
                await self.save()
            raise

    async def leave(self, channel: str) -> None:
        """Leave: send our remove proposal; the next member to see it commits it."""
        async with self.mutex:
            cid = self.resolve(channel)
            group = self._group(cid)
            proposal = group.leave()
            for m in group.members():
                if m.signature_key == self.device_id:
                    continue
                payload = await self.seal_for(
                    m.signature_key, m.identity.decode(), cid, ContentType.MLS_PROPOSAL, proposal
                )
                await (await self.rpc()).enqueue(
                    recipient=m.signature_key, channel_id=cid, payload=payload
                )
            self.channel_record(cid).active = False
            await self.save()
            self.emit_channels()

    async def remove(self, channel: str, users: list[str]) -> api.ChannelInfo:
        """Remove every device of each user from the channel."""
        names = {normalize_user(u) for u in users}
        async with self.mutex:
            cid = self.resolve(channel)
            await self.drain()

            def leaves(g: mls.Group) -> list[int]:
                return [
                    m.leaf_index
                    for m in g.members()
                    if m.identity.decode("utf-8", "replace") in names
                    and m.signature_key != self.device_id
                ]

            if not leaves(self._group(cid)):
                raise LocalError("none of these users is a member")
            await self.run_commit(cid, lambda g: g.remove_members(leaves(g)) if leaves(g) else None)
            return self.channel_info(cid)

    async def members(self, channel: str) -> tuple[api.Member, ...]:
        """Current members from local MLS state."""
        async with self.mutex:
            return self.member_list(self._group(self.resolve(channel)))

    async def channels(self) -> tuple[api.ChannelInfo, ...]:
        """Every known channel, newest activity first."""
        async with self.mutex:
            return self.all_channels()

    async def history(
        self, channel: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[api.Message]:
        """Stored messages, oldest first; marks the channel read."""
        async with self.mutex:
            cid = self.resolve(channel)
            rows = await self.list_messages(cid, limit=limit, before_id=before_id)
            rec = self.channel_record(cid)
            if rec.unread:
                rec.unread = 0
                await self.save()
            return [self.to_api(r) for r in rows]

    async def mark_read(self, channel: str) -> None:
        """Clear the channel's unread count (saved: survives restarts)."""
        async with self.mutex:
            rec = self.channel_record(self.resolve(channel))
            if rec.unread:
                rec.unread = 0
                await self.save()

    # ------------------------------------------------------------------ keys

    async def check_key(self, user: str, *, accept: bool = False) -> api.KeyCheck:
        """Safety numbers per device of ``user``; a device not pinned before is ``changed``.

        With ``accept`` the current devices replace the pins (after the user
        compared the safety numbers out of band).
        """
        peer = normalize_user(user)
        async with self.mutex:
            had = list(self.state.pins.get(peer, []))
            devices = await self.user_devices(peer)
            listed = [d.hex() for d in devices]
            checks = []
            for dev in devices:
                number = safety_number(self.device_id, self.user, dev, peer)
                if not had:
                    status = "new"
                elif dev.hex() in had:
                    status = "verified"
                else:
                    status = "changed"
                prev = next((h for h in had if h not in listed), "") if status == "changed" else ""
                checks.append(
                    api.DeviceKeyCheck(
                        device=dev.hex(), safety_number=number, status=status, previous_device=prev
                    )
                )
            if accept or not had:
                self.state.pins[peer] = listed
            await self.save()
            result = api.KeyCheck(user=peer, devices=tuple(checks))
            if result.changed:
                self.warn("a safety number changed", user=peer)
            return result
