"""The ``qpc`` subcommands: each opens the engine, does one thing, prints it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import os
import signal
import sys
import time
from typing import Any

from proto.errors import ConfigError, ProfileError
from tui.cli.main import Options, emit, engine_config
from tui.client import api
from tui.client.engine import Engine
from tui.client.localnode import stop_local_node
from tui.client.passphrase import resolve_passphrase
from tui.client.profile import Profile

__all__ = [
    "as_json",
    "format_message",
    "health_line",
    "ping_json",
    "ping_lines",
    "run_command",
]

PASSWORD_ENV = "QPC_PASSWORD"  # noqa: S105 (a variable name)
"""Environment variable with the account password, for scripts."""


def as_json(value: object) -> Any:
    """Dataclasses/enums/tuples as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def format_message(m: api.Message, channel_name: str = "") -> str:
    """One message as a line: ``[time] #channel sender: text``."""
    stamp = time.strftime("%H:%M:%S", time.localtime(m.time))
    where = f"#{channel_name} " if channel_name else ""
    mark = (
        ""
        if m.state in (api.DeliveryState.SENT, api.DeliveryState.RECEIVED)
        else f" ({m.state.value})"
    )
    return f"[{stamp}] {where}{m.sender}: {m.text}{mark}"


def _password(opts: Options) -> str:
    if opts.password_fd is not None:
        from tui.client.passphrase import read_passphrase_fd

        return read_passphrase_fd(opts.password_fd)
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    import getpass
    import sys

    if sys.stdin.isatty():
        return getpass.getpass("Account password: ")
    raise ConfigError(
        f"no password: pass --password-fd N, set {PASSWORD_ENV}, or run in a terminal"
    )


async def _open(opts: Options, *, create_ok: bool = False) -> Engine:
    cfg = engine_config(opts)
    create = create_ok and not Profile.exists(cfg.profile_dir)
    if not create and not Profile.exists(cfg.profile_dir):
        raise ProfileError(f"no profile at {cfg.profile_dir}: run `qpc register USER` first")
    passphrase = resolve_passphrase(fd=opts.passphrase_fd, confirm=create)
    return await Engine.open(cfg, passphrase, create=create)


def health_line(h: api.Health) -> str:
    """``qpc health``'s line."""
    up = h.uptime_ms / 1000
    return f"{h.status}  version {h.version}  up {up:.0f}s  store {h.store_backend}"


def ping_lines(p: api.PingResult) -> list[str]:
    """``qpc ping``'s lines."""
    lines = [f"rtt {r:.2f} ms" for r in p.rtts_ms]
    lines.append(f"min/median/max {p.min_ms:.2f}/{p.median_ms:.2f}/{p.max_ms:.2f} ms")
    return lines


def ping_json(p: api.PingResult) -> dict[str, Any]:
    """``qpc ping --json``'s object."""
    return {**as_json(p), "median_ms": p.median_ms}


def _who_lines(w: api.WhoAmI) -> list[str]:
    stock = "unknown"
    if w.key_stock is not None:
        lr = " + last resort" if w.key_stock.has_last_resort else ""
        stock = f"{w.key_stock.count}{lr}"
    return [
        f"user:        {w.user}",
        f"device:      {w.device_fingerprint}",
        f"keypackages: {stock}",
        f"server:      {w.server}",
        f"server key:  {w.server_fingerprint}",
    ]


def _channel_line(c: api.ChannelInfo) -> str:
    state = "" if c.active else " (left)"
    unread = f" [{c.unread} unread]" if c.unread else ""
    return f"{c.id}  {c.kind.value:5}  {c.name}{state}{unread}  members: {', '.join(c.members)}"


async def _listen(e: Engine, opts: Options) -> None:
    count = 0
    names = {c.id: c.name for c in await e.channels()}
    deadline = time.monotonic() + opts.timeout if opts.timeout else None

    async def loop() -> None:
        nonlocal count
        async for ev in e.events():
            if isinstance(ev, api.MessageReceived) and not ev.message.outgoing:
                m = ev.message
                if opts.json:
                    emit(opts, "", {"event": "message", **as_json(m)})
                else:
                    emit(opts, format_message(m, names.get(m.channel, "")), None)
                count += 1
                if opts.count and count >= opts.count:
                    return
            elif isinstance(ev, api.ChannelsChanged):
                names.update({c.id: c.name for c in ev.channels})
            elif isinstance(ev, api.SecurityWarning):
                emit(opts, f"! {ev.reason}", {"event": "warning", "reason": ev.reason})
            elif isinstance(ev, api.ConnectionChanged) and not opts.json:
                emit(opts, f"* {ev.state.status.value}", None)

    # SIGTERM/SIGINT end listening cleanly (the engine saves and acks on close).
    task = asyncio.ensure_future(loop())
    ev_loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        ev_loop.add_signal_handler(sig, task.cancel)
    try:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            ev_loop.remove_signal_handler(sig)


def _say_wait(seconds: float) -> None:
    """Rate limited: say so on stderr (stdout stays clean for --json) and wait."""
    print(f"qpc: the server asks us to slow down; retrying in {seconds:.1f} s", file=sys.stderr)


async def _run(e: Engine, opts: Options) -> None:
    cmd = opts.command
    if cmd == "register":
        who = await e.register(opts.user, _password(opts), on_wait=_say_wait)
        emit(opts, [f"registered {who.user}", *_who_lines(who)], as_json(who))
    elif cmd == "login":
        who = await e.login(opts.user, _password(opts), on_wait=_say_wait)
        emit(opts, [f"logged in as {who.user}", *_who_lines(who)], as_json(who))
    elif cmd == "whoami":
        who = await e.whoami()
        emit(opts, _who_lines(who), as_json(who))
    elif cmd == "health":
        h = await e.health()
        emit(opts, health_line(h), as_json(h))
    elif cmd == "ping":
        p = await e.ping(opts.count)
        emit(opts, ping_lines(p), ping_json(p))
    elif cmd == "create-group":
        c = await e.create_group(opts.name)
        emit(opts, f"created {c.name} {c.id}", as_json(c))
    elif cmd == "invite":
        c = await e.invite(opts.channel, opts.users)
        emit(opts, f"{c.name}: members {', '.join(c.members)} (epoch {c.epoch})", as_json(c))
    elif cmd in ("join", "recv"):
        before = {c.id for c in await e.channels() if c.active}
        msgs = await e.sync()
        chans = await e.channels()
        names = {c.id: c.name for c in chans}
        joined = [c for c in chans if c.active and c.id not in before]
        lines = [f"joined {c.name} {c.id}" for c in joined]
        lines += [format_message(m, names.get(m.channel, "")) for m in msgs]
        emit(opts, lines, {"joined": as_json(joined), "messages": as_json(msgs)})
    elif cmd == "dm":
        c = await e.dm(opts.user)
        data: dict[str, Any] = {"channel": as_json(c)}
        lines = [f"dm with {c.name}: {c.id}"]
        if opts.text:
            m = await e.send(c.id, opts.text)
            data["message"] = as_json(m)
            lines.append(f"sent ({m.state.value})")
        emit(opts, lines, data)
    elif cmd == "leave":
        await e.leave(opts.channel)
        emit(opts, "left", {"left": opts.channel})
    elif cmd == "remove":
        c = await e.remove(opts.channel, opts.users)
        emit(opts, f"{c.name}: members {', '.join(c.members)} (epoch {c.epoch})", as_json(c))
    elif cmd == "members":
        ms = await e.members(opts.channel)
        lines = [f"{m.user}{' (you)' if m.is_self else ''}  {len(m.devices)} device(s)" for m in ms]
        emit(opts, lines, as_json(ms))
    elif cmd == "channels":
        cs = await e.channels()
        emit(opts, [_channel_line(c) for c in cs] or ["no channels"], as_json(cs))
    elif cmd == "send":
        m = await e.send(opts.channel, opts.text)
        emit(opts, f"sent ({m.state.value})", as_json(m))
    elif cmd == "listen":
        await _listen(e, opts)
    elif cmd == "history":
        cid = e.resolve(opts.channel).hex()
        msgs = await e.history(cid, limit=opts.limit)
        name = e.channel_info(bytes.fromhex(cid)).name
        emit(opts, [format_message(m, name) for m in msgs], as_json(msgs))
    elif cmd == "check-key":
        k = await e.check_key(opts.user, accept=opts.accept)
        lines = []
        for d in k.devices:
            flag = {
                "changed": "!!! KEY CHANGED",
                "new": "first seen (now pinned)",
                "verified": "matches the pinned key",
            }
            lines.append(f"{d.device[:16]}  {flag.get(d.status, d.status)}")
            lines.append(f"  safety number: {d.safety_number}")
        if k.changed:
            lines.append(
                f"WARNING: {k.user}'s key changed. Compare safety numbers in person, "
                f"then run `qpc check-key {k.user} --accept`."
            )
        emit(opts, lines or [f"{k.user} has no devices"], {**as_json(k), "changed": k.changed})
    elif cmd == "refresh-keypackages":
        s = await e.refresh_keypackages()
        emit(opts, f"keypackages: {s.count} + last resort", as_json(s))
    elif cmd == "update":
        c = await e.self_update(opts.channel)
        emit(opts, f"{c.name}: self-update committed (epoch {c.epoch})", as_json(c))


async def run_command(opts: Options) -> int:
    """Run the parsed command; raises :class:`proto.errors.QpcError` on failure."""
    if opts.command == "demo-group":
        from tui.cli.demo import run_demo

        await run_demo(opts)
        return 0
    if opts.command == "stop-local-node":
        stopped = await asyncio.to_thread(stop_local_node)
        emit(opts, "stopped" if stopped else "no local node running", {"stopped": stopped})
        return 0
    engine = await _open(opts, create_ok=opts.command in ("register", "login"))
    try:
        await _run(engine, opts)
        # Anything sent while offline stays in the outbox; say so.
        n = len(engine.state.outbox)
        if n and not opts.json and opts.command not in ("listen",):
            emit(opts, f"({n} message(s) waiting in the outbox)", None)
    finally:
        await engine.close()
    return 0
