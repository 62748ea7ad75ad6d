"""An in-memory ClientEngine and EngineFactory for UI tests (no network, no crypto)."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from proto.errors import LocalError
from tui.client.api import (
    ChannelInfo,
    ChannelKind,
    ChannelsChanged,
    ConnectionState,
    DeliveryState,
    DeviceKeyCheck,
    EngineEvent,
    Health,
    KeyCheck,
    KeyStock,
    LinkResult,
    Member,
    MembersChanged,
    Message,
    MessageChanged,
    MessageReceived,
    OwnDevice,
    PingResult,
    RateLimitWait,
    Reaction,
    ServerInfo,
    TopicChanged,
    WhoAmI,
)
from tui.session import LoginForm, ServerKey

FIXED_NOW_MS = 1_764_000_000_000  # 2025-11-24 16:00 UTC: snapshots never change
FINGERPRINT = "5f" * 32


def _msg_id(message: Message) -> int:
    return message.id


class FakeEngine:
    """Implements :class:`tui.client.api.ClientEngine` in memory.

    ``fail`` maps a method name to an exception it raises once.
    """

    def __init__(self, user: str = "alice", *, now_ms: int = FIXED_NOW_MS) -> None:
        self.user = user
        self.now_ms = now_ms
        self.fail: dict[str, BaseException] = {}
        self.verified: set[str] = set()
        self.linked: set[str] = set()
        """Users ``check_key`` lists with a second, certified device."""
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self._channels: dict[str, ChannelInfo] = {}
        self._messages: dict[str, list[Message]] = {}
        self._members: dict[str, tuple[Member, ...]] = {}
        self._queue: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self._next_id = 1
        self.state = ConnectionState.connected(server="127.0.0.1:7000")
        self.send_state = DeliveryState.SENT
        self.closed = False
        self.embedded = False
        self.history_gate: asyncio.Event | None = None
        """When set, ``history`` waits for it (to test what arrives meanwhile)."""
        self.rate_limit_waits: list[float] = []
        """Waits register/login report through ``on_wait`` before succeeding."""
        self.rate_limit_gate = asyncio.Event()
        """Set by a test to end the simulated rate-limit waits."""
        self.rate_limit_waiting = asyncio.Event()
        """Set once ``on_wait`` was told about a wait."""
        self.link_code = "0123456789"
        """The code ``link_offer`` shows."""
        self.link_arrival: asyncio.Future[str] | None = None
        """Made by ``link_wait``; a test resolves it with the new device's hex id
        (or an exception) after ``link_waiting`` is set."""
        self.link_gate = asyncio.Event()
        """Set by a test to let ``link_wait`` finish adding the device."""
        self.link_gate.set()
        self.link_waiting = asyncio.Event()
        """Set once ``link_wait`` waits for the new device."""
        self.link_cancelled = False
        """True once ``link_wait`` was cancelled."""
        self.own_devices: list[OwnDevice] = [
            OwnDevice(device="d1" * 32, fingerprint="12345 67890", this_device=True, channels=2),
            OwnDevice(device="c2" * 32, fingerprint="98765 43210", this_device=False, channels=2),
        ]
        """What ``devices`` lists."""

    # -------------------------------------------------------------- helpers

    def _check(self, name: str, *args: object) -> None:
        self.calls.append((name, args))
        error = self.fail.pop(name, None)
        if error is not None:
            raise error

    async def _rate_limited(self, on_wait: RateLimitWait | None) -> None:
        for wait in self.rate_limit_waits:
            if on_wait is not None:
                on_wait(wait)
            self.rate_limit_waiting.set()
            await self.rate_limit_gate.wait()
        self.rate_limit_waits = []

    def _tick(self) -> int:
        self.now_ms += 1000
        return self.now_ms

    def add_channel(
        self,
        name: str,
        members: tuple[str, ...] = (),
        *,
        kind: ChannelKind = ChannelKind.GROUP,
        activity_ms: int = 0,
    ) -> ChannelInfo:
        """Create a channel directly (test setup)."""
        cid = f"{len(self._channels) + 1:02d}" + "ab" * 15
        everyone = tuple(sorted({self.user, *members}))
        info = ChannelInfo(
            id=cid, name=name, kind=kind, members=everyone, last_activity_ms=activity_ms
        )
        self._channels[cid] = info
        self._messages[cid] = []
        self._members[cid] = tuple(Member(user=u, is_self=u == self.user) for u in everyone)
        return info

    def add_message(
        self,
        channel: str,
        sender: str,
        text: str,
        *,
        time_ms: int | None = None,
        state: DeliveryState = DeliveryState.RECEIVED,
        reply_to: str = "",
        action: bool = False,
    ) -> Message:
        """Store a message directly (test setup); no event."""
        msg = Message(
            id=self._next_id,
            channel=channel,
            sender=sender,
            text=text,
            time_ms=self._tick() if time_ms is None else time_ms,
            state=state,
            outgoing=sender == self.user,
            msg_id=f"{self._next_id:032x}",
            reply_to=reply_to,
            action=action,
        )
        self._next_id += 1
        self._messages[channel].append(msg)
        info = self._channels[channel]
        self._channels[channel] = replace(
            info,
            last_activity_ms=max(info.last_activity_ms, msg.time_ms),
            unread=info.unread + (0 if msg.outgoing else 1),
        )
        return msg

    def clear_unread(self, channel: str) -> None:
        """Clear a channel's unread count (test setup; no call recorded)."""
        self._channels[channel] = replace(self._channels[channel], unread=0)

    async def deliver(self, channel: str, sender: str, text: str) -> Message:
        """A peer's message arrives: store it and emit the event."""
        msg = self.add_message(channel, sender, text)
        await self.emit(MessageReceived(message=msg))
        return msg

    async def emit(self, event: EngineEvent) -> None:
        """Push an event to the subscriber."""
        await self._queue.put(event)

    # ------------------------------------------------------------ protocol

    async def register(
        self, user: str, password: str, *, on_wait: RateLimitWait | None = None
    ) -> WhoAmI:
        await self._rate_limited(on_wait)
        self._check("register", user)
        self.user = user
        return await self.whoami()

    async def login(
        self, user: str, password: str, *, on_wait: RateLimitWait | None = None
    ) -> WhoAmI:
        await self._rate_limited(on_wait)
        self._check("login", user)
        self.user = user
        return await self.whoami()

    async def create_group(self, name: str) -> ChannelInfo:
        self._check("create_group", name)
        return self.add_channel(name, activity_ms=self._tick())

    async def invite(self, channel: str, users: list[str]) -> ChannelInfo:
        self._check("invite", channel, tuple(users))
        members = sorted({*self._channels[channel].members, *users})
        return await self._set_members(channel, members)

    async def _set_members(self, channel: str, members: list[str]) -> ChannelInfo:
        """A membership commit: new list, next epoch, MembersChanged."""
        info = replace(self._channels[channel], members=tuple(members))
        info = replace(info, epoch=info.epoch + 1)
        self._channels[channel] = info
        self._members[channel] = tuple(Member(user=u, is_self=u == self.user) for u in members)
        await self.emit(MembersChanged(channel=channel, members=self._members[channel]))
        return info

    async def dm(self, user: str) -> ChannelInfo:
        self._check("dm", user)
        for info in self._channels.values():
            if info.kind is ChannelKind.DM and info.name == user:
                return info
        return self.add_channel(user, (user,), kind=ChannelKind.DM, activity_ms=self._tick())

    async def leave(self, channel: str) -> None:
        self._check("leave", channel)
        self._channels[channel] = replace(self._channels[channel], active=False)
        await self.emit(ChannelsChanged(channels=await self.channels()))

    async def remove(self, channel: str, users: list[str]) -> ChannelInfo:
        self._check("remove", channel, tuple(users))
        members = [m for m in self._channels[channel].members if m not in users]
        return await self._set_members(channel, members)

    async def self_update(self, channel: str) -> ChannelInfo:
        self._check("self_update", channel)
        info = replace(self._channels[channel], epoch=self._channels[channel].epoch + 1)
        self._channels[channel] = info
        return info

    async def members(self, channel: str) -> tuple[Member, ...]:
        self._check("members", channel)
        return self._members[channel]

    async def channels(self) -> tuple[ChannelInfo, ...]:
        self._check("channels")
        return tuple(
            sorted(self._channels.values(), key=lambda c: c.last_activity_ms, reverse=True)
        )

    async def send(
        self, channel: str, text: str, *, reply_to: str = "", action: bool = False
    ) -> Message:
        self._check("send", channel, text)
        return self.add_message(
            channel, self.user, text, state=self.send_state, reply_to=reply_to, action=action
        )

    async def send_action(self, channel: str, text: str) -> Message:
        self._check("send_action", channel, text)
        return self.add_message(channel, self.user, text, state=self.send_state, action=True)

    def _find(self, channel: str, msg_id: str) -> tuple[int, Message]:
        for i, m in enumerate(self._messages[channel]):
            if m.msg_id == msg_id:
                return i, m
        raise LocalError("no such message in this channel")

    def _replace(self, channel: str, i: int, msg: Message) -> Message:
        self._messages[channel][i] = msg
        self._queue.put_nowait(MessageChanged(message=msg))
        return msg

    def react_as(
        self, channel: str, msg_id: str, emoji: str, user: str, *, remove: bool
    ) -> Message:
        """Apply a reaction by ``user`` (test setup for other members; emits MessageChanged)."""
        i, m = self._find(channel, msg_id)
        out: list[Reaction] = []
        seen = False
        for r in m.reactions:
            users = tuple(u for u in r.users if u != user)
            if r.emoji == emoji:
                seen = True
                users = users if remove else (*users, user)
            if users:
                out.append(Reaction(emoji=r.emoji, users=users, mine=self.user in users))
        if not seen and not remove:
            out.append(Reaction(emoji=emoji, users=(user,), mine=user == self.user))
        return self._replace(channel, i, replace(m, reactions=tuple(out)))

    async def react(
        self, channel: str, msg_id: str, emoji: str, *, remove: bool = False
    ) -> Message:
        self._check("react", channel, msg_id, emoji, remove)
        return self.react_as(channel, msg_id, emoji, self.user, remove=remove)

    async def edit(self, channel: str, msg_id: str, text: str) -> Message:
        self._check("edit", channel, msg_id, text)
        i, m = self._find(channel, msg_id)
        if not m.outgoing:
            raise LocalError("only the author can edit a message")
        return self._replace(channel, i, replace(m, text=text, edited=True))

    async def delete(self, channel: str, msg_id: str) -> Message:
        self._check("delete", channel, msg_id)
        i, m = self._find(channel, msg_id)
        if not m.outgoing:
            raise LocalError("only the author can delete a message")
        return self._replace(channel, i, replace(m, text="", deleted=True, reactions=()))

    async def set_topic(self, channel: str, topic: str) -> ChannelInfo:
        self._check("set_topic", channel, topic)
        info = replace(self._channels[channel], topic=topic)
        self._channels[channel] = info
        self._queue.put_nowait(TopicChanged(channel=channel, topic=topic, by=self.user))
        return info

    async def typing(self, channel: str) -> None:
        self._check("typing", channel)

    async def sync(self) -> list[Message]:
        self._check("sync")
        return []

    async def history(
        self, channel: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        self._check("history", channel)
        self._channels[channel] = replace(self._channels[channel], unread=0)
        # Like the profile's (channel, id) index: a page costs its own length,
        # not the channel's (bench/tui.py opens 100,000-message channels).
        msgs = self._messages[channel]
        end = len(msgs) if before_id is None else bisect_left(msgs, before_id, key=_msg_id)
        page = msgs[max(0, end - limit) : end]
        if self.history_gate is not None:
            await self.history_gate.wait()
        return page

    async def search(
        self, query: str, *, channel: str | None = None, limit: int = 50
    ) -> list[Message]:
        """Same matching as the real index: every word, casefolded substrings."""
        self._check("search", query, channel)
        terms = query.casefold().split()
        every = sorted(
            (m for ms in self._messages.values() for m in ms), key=lambda m: m.id, reverse=True
        )
        out = [
            m
            for m in every
            if terms
            and (channel is None or m.channel == channel)
            and all(t in m.text.casefold() for t in terms)
        ]
        return out[:limit]

    async def mark_read(self, channel: str) -> None:
        self._check("mark_read", channel)
        self.clear_unread(channel)

    async def whoami(self) -> WhoAmI:
        self._check("whoami")
        return WhoAmI(
            user=self.user,
            device="d1" * 32,
            device_fingerprint="12345 67890 12345 67890",
            server="127.0.0.1:7000",
            server_fingerprint=FINGERPRINT,
            key_stock=KeyStock(count=42, has_last_resort=True),
        )

    async def health(self) -> Health:
        self._check("health")
        return Health(status="ok", version="0.1.0", uptime_ms=3_723_000, store_backend="sqlite")

    async def ping(self, count: int = 1) -> PingResult:
        self._check("ping", count)
        return PingResult(rtts_ms=tuple(0.5 + 0.1 * i for i in range(count)))

    async def check_key(self, user: str, *, accept: bool = False, verify: bool = False) -> KeyCheck:
        self._check("check_key", user, accept, verify)
        if verify:
            self.verified.add(user)
        status = "verified" if user in self.verified else "unverified"
        devices = [
            DeviceKeyCheck(device="ab" * 32, safety_number="11111 22222 33333 44444", status=status)
        ]
        if user in self.linked:  # a second device the first one certified
            devices.append(
                DeviceKeyCheck(
                    device="cd" * 32,
                    safety_number="55555 66666 77777 88888",
                    status=status,
                    linked_by="ab" * 32,
                )
            )
        return KeyCheck(user=user, devices=tuple(devices))

    async def refresh_keypackages(self) -> KeyStock:
        self._check("refresh_keypackages")
        return KeyStock(count=100, has_last_resort=True)

    def link_offer(self) -> str:
        self._check("link_offer")
        return self.link_code

    async def link_wait(
        self,
        timeout: float,
        *,
        pump: bool = True,
        on_progress: Callable[[str], None] | None = None,
    ) -> LinkResult:
        self._check("link_wait", timeout, pump)
        self.link_arrival = asyncio.get_running_loop().create_future()
        self.link_waiting.set()
        try:
            device = await self.link_arrival
        except asyncio.CancelledError:
            self.link_cancelled = True
            raise
        if on_progress is not None:
            on_progress(f"device {device[:16]} proved the code; adding it to the channels")
        await self.link_gate.wait()
        channels = tuple(c for c, info in self._channels.items() if info.active)
        self.own_devices.append(
            OwnDevice(
                device=device, fingerprint="5" * 20, this_device=False, channels=len(channels)
            )
        )
        return LinkResult(device=device, channels=channels)

    async def link_join(
        self,
        code: str,
        timeout: float,
        *,
        pump: bool = True,
    ) -> LinkResult:
        self._check("link_join", code, pump)
        return LinkResult(device="e1" * 32)

    async def devices(self) -> tuple[OwnDevice, ...]:
        self._check("devices")
        return tuple(self.own_devices)

    async def unlink(self, device: str) -> tuple[str, ...]:
        self._check("unlink", device)
        self.own_devices = [d for d in self.own_devices if not d.device.startswith(device)]
        return tuple(self._channels)

    def connection_state(self) -> ConnectionState:
        return self.state

    def server_info(self) -> ServerInfo:
        return ServerInfo(address=self.state.server, embedded=self.embedded)

    async def events(self) -> AsyncIterator[EngineEvent]:
        error = self.fail.pop("events", None)
        if error is not None:
            raise error
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        self.closed = True


class FakeFactory:
    """Implements :class:`tui.session.EngineFactory` around one :class:`FakeEngine`."""

    def __init__(
        self,
        engine: FakeEngine | None = None,
        *,
        resume: bool = True,
        pinned: str = FINGERPRINT,
        presented: str = FINGERPRINT,
        profile_present: bool = False,
    ) -> None:
        self.engine = engine or FakeEngine()
        self.profile_present = profile_present
        self.resume_engine = resume
        self.pinned = pinned
        self.presented = presented
        self.forms: list[LoginForm] = []
        self.bare_calls: list[tuple[str, str]] = []
        self.trusted: list[str] = []
        self.probe_error: BaseException | None = None
        self.profile_path: Path | None = None

    @property
    def default_server(self) -> str:
        return ""

    @property
    def profile_dir(self) -> Path | None:
        return self.profile_path

    @property
    def default_user(self) -> str:
        return "alice"

    @property
    def profile_exists(self) -> bool:
        return self.profile_present

    async def resume(self) -> FakeEngine | None:
        return self.engine if self.resume_engine else None

    async def probe(self, server: str) -> ServerKey:
        if self.probe_error is not None:
            raise self.probe_error
        return ServerKey(
            server=server or "127.0.0.1:7000", fingerprint=self.presented, pinned=self.pinned
        )

    async def health(self, server: str) -> Health:
        self.bare_calls.append(("health", server))
        return Health(
            status="ok",
            version="0.1.0",
            uptime_ms=61_000,
            store_backend="sqlite",
            server=server or "127.0.0.1:7000",
        )

    async def ping(self, server: str) -> PingResult:
        self.bare_calls.append(("ping", server))
        return PingResult(rtts_ms=(1.5,))

    async def open(self, form: LoginForm, *, trust_fingerprint: str) -> FakeEngine:
        self.forms.append(form)
        self.trusted.append(trust_fingerprint)
        return self.engine

    async def close(self) -> None:
        return None


def now_s() -> float:
    """Wall clock (for tests that need it)."""
    return time.time()
