"""The ``qpc`` subcommands and their table.

:data:`COMMANDS` lists every subcommand once: its name, help, arguments and
the function that runs it. An engine command (``with_engine``) gets the opened
engine and the run's :class:`~tui.cli.config.CliConfig`, does one thing and
prints it with :func:`~tui.cli.config.emit`; a standalone command
(``standalone``) gets only the config; a TUI command starts the full-screen
client (:mod:`tui.cli.main` does that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proto.crypto.identity import fingerprint
from proto.errors import ConfigError, ProfileError
from tui.cli.config import CliConfig, emit
from tui.cli.demo import run_demo
from tui.client import api
from tui.client.engine import Engine
from tui.client.localnode import ensure_local_node, stop_local_node
from tui.client.passphrase import resolve_passphrase
from tui.client.probe import node_health, node_ping
from tui.client.profile import Profile
from tui.notifications import NotifyLevel, load_levels, save_level
from tui.output import as_json, delivery_text, format_message

__all__ = ["COMMANDS", "Command", "run_command", "run_plain_command"]

PASSWORD_ENV = "QPC_PASSWORD"  # noqa: S105 (a variable name)
"""Environment variable with the account password, for scripts."""


def _password(cfg: CliConfig) -> str:
    if cfg.password_fd is not None:
        from tui.client.passphrase import read_passphrase_fd

        return read_passphrase_fd(cfg.password_fd)
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


async def _open(cfg: CliConfig, *, create_ok: bool = False) -> Engine:
    create = create_ok and not Profile.exists(cfg.profile_dir)
    if not create and not Profile.exists(cfg.profile_dir):
        raise ProfileError(f"no profile at {cfg.profile_dir}: run `qpc register USER` first")
    passphrase = resolve_passphrase(fd=cfg.passphrase_fd, confirm=create)
    return await Engine.open(cfg.engine_config(), passphrase, create=create)


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
    return f"{c.id}  {c.kind.value:5}  {c.label}{state}{unread}  members: {', '.join(c.members)}"


async def _listen(e: Engine, cfg: CliConfig) -> None:
    opts = cfg.args
    count = 0
    names = {c.id: c.label for c in await e.channels()}
    deadline = time.monotonic() + opts.timeout if opts.timeout else None

    async def loop() -> None:
        nonlocal count
        async for ev in e.events():
            if isinstance(ev, api.MessageReceived) and not ev.message.outgoing:
                m = ev.message
                if cfg.json:
                    emit(cfg, "", {"event": "message", **as_json(m)})
                else:
                    emit(cfg, format_message(m, names.get(m.channel, "")), None)
                count += 1
                if opts.count and count >= opts.count:
                    return
            elif isinstance(ev, api.ChannelsChanged):
                names.update({c.id: c.label for c in ev.channels})
            elif isinstance(ev, api.SecurityWarning):
                emit(cfg, f"! {ev.reason}", {"event": "warning", "reason": ev.reason})
            elif isinstance(ev, api.ConnectionChanged) and not cfg.json:
                emit(cfg, f"* {ev.state.status.value}", None)

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


async def _register(e: Engine, cfg: CliConfig) -> None:
    who = await e.register(cfg.args.user, _password(cfg), on_wait=_say_wait)
    emit(cfg, [f"registered {who.user}", *_who_lines(who)], as_json(who))


async def _login(e: Engine, cfg: CliConfig) -> None:
    who = await e.login(cfg.args.user, _password(cfg), on_wait=_say_wait)
    emit(cfg, [f"logged in as {who.user}", *_who_lines(who)], as_json(who))


async def _whoami(e: Engine, cfg: CliConfig) -> None:
    who = await e.whoami()
    emit(cfg, _who_lines(who), as_json(who))


async def _health(e: Engine, cfg: CliConfig) -> None:
    _print_health(cfg, await e.health())


def _print_health(cfg: CliConfig, h: api.Health) -> None:
    up = h.uptime_ms / 1000
    lines = [f"{h.status}  version {h.version}  up {up:.0f}s  store {h.store_backend}"]
    if not h.pinned:
        lines.append(f"server key {h.fingerprint} (not pinned: no profile has it yet)")
    emit(cfg, lines, as_json(h))


async def _health_bare(cfg: CliConfig) -> None:
    """``health`` without a profile (``--server`` or the local node): nothing written."""
    _print_health(cfg, await node_health(cfg.engine_config(), cfg.server or ""))


async def _ping(e: Engine, cfg: CliConfig) -> None:
    _print_ping(cfg, await e.ping(cfg.args.count))


async def _ping_bare(cfg: CliConfig) -> None:
    """``ping`` without a profile."""
    _print_ping(cfg, await node_ping(cfg.engine_config(), cfg.server or "", cfg.args.count))


def _print_ping(cfg: CliConfig, p: api.PingResult) -> None:
    lines = [f"rtt {r:.2f} ms" for r in p.rtts_ms]
    lines.append(f"min/median/max {p.min_ms:.2f}/{p.median_ms:.2f}/{p.max_ms:.2f} ms")
    emit(cfg, lines, {**as_json(p), "median_ms": p.median_ms})


async def _create_group(e: Engine, cfg: CliConfig) -> None:
    c = await e.create_group(cfg.args.name)
    emit(cfg, f"created {c.label} {c.id}", as_json(c))


def _members_line(c: api.ChannelInfo) -> str:
    return f"{c.label}: members {', '.join(c.members)} (epoch {c.epoch})"


async def _invite(e: Engine, cfg: CliConfig) -> None:
    c = await e.invite(cfg.args.channel, list(cfg.args.users))
    emit(cfg, _members_line(c), as_json(c))


async def _sync(e: Engine, cfg: CliConfig) -> None:
    before = {c.id for c in await e.channels() if c.active}
    msgs = await e.sync()
    chans = await e.channels()
    names = {c.id: c.label for c in chans}
    joined = [c for c in chans if c.active and c.id not in before]
    lines = [f"joined {c.label} {c.id}" for c in joined]
    lines += [format_message(m, names.get(m.channel, "")) for m in msgs]
    emit(cfg, lines, {"joined": as_json(joined), "messages": as_json(msgs)})


async def _dm(e: Engine, cfg: CliConfig) -> None:
    c = await e.dm(cfg.args.user)
    data: dict[str, Any] = {"channel": as_json(c)}
    lines = [f"dm {c.label}: {c.id}"]
    if cfg.args.text:
        m = await e.send(c.id, cfg.args.text)
        data["message"] = as_json(m)
        lines.append(delivery_text(m.state))
    emit(cfg, lines, data)


async def _leave(e: Engine, cfg: CliConfig) -> None:
    await e.leave(cfg.args.channel)
    emit(cfg, "left", {"left": cfg.args.channel})


async def _remove(e: Engine, cfg: CliConfig) -> None:
    c = await e.remove(cfg.args.channel, list(cfg.args.users))
    emit(cfg, _members_line(c), as_json(c))


async def _members(e: Engine, cfg: CliConfig) -> None:
    ms = await e.members(cfg.args.channel)
    lines = [f"{m.user}{' (you)' if m.is_self else ''}  {len(m.devices)} device(s)" for m in ms]
    emit(cfg, lines, as_json(ms))


async def _channels(e: Engine, cfg: CliConfig) -> None:
    cs = await e.channels()
    emit(cfg, [_channel_line(c) for c in cs] or ["no channels"], as_json(cs))


async def _send(e: Engine, cfg: CliConfig) -> None:
    m = await e.send(
        cfg.args.channel, cfg.args.text or "", reply_to=cfg.args.reply_to, action=cfg.args.me
    )
    emit(cfg, f"{delivery_text(m.state)}; id {m.msg_id}", as_json(m))


async def _react(e: Engine, cfg: CliConfig) -> None:
    m = await e.react(cfg.args.channel, cfg.args.id, cfg.args.emoji, remove=cfg.args.remove)
    emit(cfg, format_message(m, with_id=True), as_json(m))


async def _edit(e: Engine, cfg: CliConfig) -> None:
    m = await e.edit(cfg.args.channel, cfg.args.id, cfg.args.text or "")
    emit(cfg, format_message(m, with_id=True), as_json(m))


async def _delete(e: Engine, cfg: CliConfig) -> None:
    m = await e.delete(cfg.args.channel, cfg.args.id)
    emit(cfg, format_message(m, with_id=True), as_json(m))


async def _topic(e: Engine, cfg: CliConfig) -> None:
    if cfg.args.text is None:
        c = e.channel_info(e.resolve(cfg.args.channel))
    else:
        c = await e.set_topic(cfg.args.channel, cfg.args.text)
    emit(cfg, f"{c.name}: {c.topic or '(no topic)'}", as_json(c))


def _on_off(value: str | None) -> bool | None:
    if value is None:
        return None
    if value not in ("on", "off"):
        raise ConfigError(f"expected on or off, not {value!r}")
    return value == "on"


async def _privacy(e: Engine, cfg: CliConfig) -> None:
    p = await e.set_privacy(receipts=_on_off(cfg.args.receipts), typing=_on_off(cfg.args.typing))
    lines = [
        f"read receipts:  {'on' if p.receipts else 'off'}",
        f"typing notices: {'on' if p.typing else 'off'}",
    ]
    emit(cfg, lines, as_json(p))


async def _history(e: Engine, cfg: CliConfig) -> None:
    cid = e.resolve(cfg.args.channel).hex()
    msgs = await e.history(cid, limit=cfg.args.limit)
    label = e.channel_info(bytes.fromhex(cid)).label
    emit(cfg, [format_message(m, label, with_id=True) for m in msgs], as_json(msgs))


async def _search(e: Engine, cfg: CliConfig) -> None:
    channel = cfg.args.channel
    msgs = await e.search(str(cfg.args.text), channel=channel, limit=cfg.args.limit)
    lines = [format_message(m, e.channel_info(bytes.fromhex(m.channel)).label) for m in msgs]
    emit(cfg, lines or ["no matches"], as_json(msgs))


_KEY_FLAGS = {
    "changed": "!!! KEY CHANGED",
    "new": "first seen (pinned, not verified)",
    "unverified": "matches the pinned key (not verified: compare the safety number)",
    "verified": "VERIFIED (you compared the safety number)",
}


async def _check_key(e: Engine, cfg: CliConfig) -> None:
    k = await e.check_key(cfg.args.user, accept=cfg.args.accept, verify=cfg.args.verify)
    lines = []
    for d in k.devices:
        # The same fingerprint format as `qpc whoami` prints for our own device.
        dev = fingerprint(bytes.fromhex(d.device))
        lines.append(f"device:      {dev}  {_KEY_FLAGS.get(d.status, d.status)}")
        if d.linked_by:
            by = fingerprint(bytes.fromhex(d.linked_by))
            lines.append(f"  linked by:     {by} (certified by that device of {k.user})")
        lines.append(f"  safety number: {d.safety_number}")
    if k.changed:
        lines.append(
            f"WARNING: {k.user}'s key changed. Compare safety numbers in person, "
            f"then run `qpc check-key {k.user} --accept`."
        )
    elif any(d.status != "verified" for d in k.devices):
        lines.append(
            f"Not verified: compare the safety numbers with {k.user} (in person or by call); "
            f"if they match, run `qpc check-key {k.user} --verify`."
        )
    emit(cfg, lines or [f"{k.user} has no devices"], {**as_json(k), "changed": k.changed})


async def _notify(e: Engine, cfg: CliConfig) -> None:
    """Show or set a channel's notify level (the same ``notify.json`` the TUI uses)."""
    info = e.channel_info(e.resolve(cfg.args.channel))
    if cfg.args.level is not None:
        save_level(cfg.profile_dir, info.id, NotifyLevel(cfg.args.level))
    level = load_levels(cfg.profile_dir).get(info.id, NotifyLevel.ALL)
    emit(
        cfg,
        f"{info.label}: notify {level.value}",
        {"channel": info.id, "label": info.label, "level": level.value},
    )


async def _refresh_keypackages(e: Engine, cfg: CliConfig) -> None:
    s = await e.refresh_keypackages()
    emit(cfg, f"keypackages: {s.count} + last resort", as_json(s))


async def _update(e: Engine, cfg: CliConfig) -> None:
    c = await e.self_update(cfg.args.channel)
    emit(cfg, f"{c.name}: self-update committed (epoch {c.epoch})", as_json(c))


async def _link(e: Engine, cfg: CliConfig) -> None:
    from tui.client.linking import format_code

    if cfg.args.code:
        r = await e.link_join(cfg.args.code, cfg.args.timeout)
        emit(
            cfg,
            [
                f"linked to device {r.device[:16]} of {e.user}",
                "it now adds this device to its channels: run `qpc join` to enter them",
            ],
            {"linked": r.device, "role": "new"},
        )
        return
    code = e.link_offer()
    emit(
        cfg,
        [
            f"link code: {format_code(code)}",
            "on the new device (logged in to this account) run: qpc link " + format_code(code),
        ],
        {"code": format_code(code)},
    )
    sys.stdout.flush()
    r = await e.link_wait(cfg.args.timeout)
    emit(
        cfg,
        f"linked device {r.device[:16]}; added it to {len(r.channels)} channel(s)",
        {"linked": r.device, "role": "existing", "channels": list(r.channels)},
    )


async def _devices(e: Engine, cfg: CliConfig) -> None:
    ds = await e.devices()
    lines = [
        f"{d.device[:16]}  {d.fingerprint}  in {d.channels} channel(s)"
        + ("  (this device)" if d.this_device else "")
        for d in ds
    ]
    emit(cfg, lines, as_json(ds))


async def _unlink(e: Engine, cfg: CliConfig) -> None:
    removed = await e.unlink(cfg.args.device)
    emit(
        cfg,
        f"unlinked; removed from {len(removed)} channel(s)",
        {"unlinked": cfg.args.device, "channels": list(removed)},
    )


async def _demo_group(cfg: CliConfig) -> None:
    await run_demo(cfg)


def _serve_ssh(ns: argparse.Namespace) -> int:
    from tui.ssh.cli import serve_ssh  # asyncssh is imported for this command only

    return serve_ssh(ns)


def _serve_web(ns: argparse.Namespace) -> int:
    from tui.web import serve_web  # textual-serve is imported for this command only

    return serve_web(ns)


async def _local_node(cfg: CliConfig) -> None:
    node = await asyncio.to_thread(ensure_local_node)
    emit(
        cfg,
        [
            f"local node: {node.address}",
            f"key:        {node.fingerprint}",
            f"others on this machine use it with: qpc --server {node.address}",
        ],
        {"address": node.address, "fingerprint": node.fingerprint, "pid": node.pid},
    )


async def _stop_local_node(cfg: CliConfig) -> None:
    stopped = await asyncio.to_thread(stop_local_node)
    emit(cfg, "stopped" if stopped else "no local node running", {"stopped": stopped})


# ------------------------------------------------------------------- table

Argument = tuple[tuple[str, ...], dict[str, Any]]
"""``add_argument`` flags and keywords."""
EngineStep = Callable[[Engine, CliConfig], Awaitable[None]]
Standalone = Callable[[CliConfig], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One ``qpc`` subcommand."""

    name: str
    help: str
    arguments: tuple[Argument, ...] = ()
    with_engine: EngineStep | None = None
    """Runs with the opened profile's engine."""
    standalone: Standalone | None = None
    """Runs without a profile."""
    without_profile: Standalone | None = None
    """Runs instead of ``with_engine`` when there is no profile (creates none)."""
    creates_profile: bool = False
    """A missing profile is created (register, login)."""
    tui: bool = False
    """Starts the full-screen client."""
    own_config: Callable[[argparse.Namespace], int] | None = None
    """Runs on its own: builds its own typed config from the parsed arguments
    (``serve-ssh``: :class:`tui.ssh.config.SshServeConfig`)."""


def _a(*flags: str, **kw: Any) -> Argument:
    return (flags, kw)


_CHANNEL = _a("channel")
_USERS = _a("users", nargs="+")

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            name="register",
            help="create an account (OPAQUE) and this device",
            arguments=(_a("user"),),
            with_engine=_register,
            creates_profile=True,
        ),
        Command(
            name="login",
            help="log in (a new profile becomes a new device)",
            arguments=(_a("user"),),
            with_engine=_login,
            creates_profile=True,
        ),
        Command(
            name="whoami",
            help="user, device fingerprint, KeyPackage stock, server key",
            with_engine=_whoami,
        ),
        Command(
            name="health",
            help="the node's health (no account needed)",
            with_engine=_health,
            without_profile=_health_bare,
        ),
        Command(
            name="ping",
            help="round-trip times to the node (no account needed)",
            arguments=(_a("-c", "--count", type=int, default=3),),
            with_engine=_ping,
            without_profile=_ping_bare,
        ),
        Command(
            name="create-group",
            help="create a group channel",
            arguments=(_a("name"),),
            with_engine=_create_group,
        ),
        Command(
            name="invite",
            help="add users (all their devices) to a channel",
            arguments=(_CHANNEL, _USERS),
            with_engine=_invite,
        ),
        Command(
            name="join",
            help="process waiting invitations (Welcome + later commits)",
            with_engine=_sync,
        ),
        Command(
            name="dm",
            help="open (or create) the DM channel with a user",
            arguments=(_a("user"), _a("text", nargs="?")),
            with_engine=_dm,
        ),
        Command(name="leave", help="leave a channel", arguments=(_CHANNEL,), with_engine=_leave),
        Command(
            name="remove",
            help="remove users from a channel",
            arguments=(_CHANNEL, _USERS),
            with_engine=_remove,
        ),
        Command(
            name="members",
            help="list a channel's members",
            arguments=(_CHANNEL,),
            with_engine=_members,
        ),
        Command(name="channels", help="list channels", with_engine=_channels),
        Command(
            name="send",
            help="send a message",
            arguments=(
                _CHANNEL,
                _a("text"),
                _a("--reply-to", default="", metavar="ID", help="reply to message ID"),
                _a("--me", action="store_true", help="an action: '* you TEXT'"),
            ),
            with_engine=_send,
        ),
        Command(
            name="react",
            help="react to a message with an emoji (--remove takes it back)",
            arguments=(
                _CHANNEL,
                _a("id", help="message id (see `qpc history --json`)"),
                _a("emoji"),
                _a("--remove", action="store_true"),
            ),
            with_engine=_react,
        ),
        Command(
            name="edit",
            help="replace the text of one of your messages",
            arguments=(_CHANNEL, _a("id"), _a("text")),
            with_engine=_edit,
        ),
        Command(
            name="delete",
            help="delete one of your messages on every member's device",
            arguments=(_CHANNEL, _a("id")),
            with_engine=_delete,
        ),
        Command(
            name="privacy",
            help="show or switch read receipts and typing notices (on/off)",
            arguments=(
                _a("--receipts", choices=("on", "off"), default=None),
                _a("--typing", choices=("on", "off"), default=None),
            ),
            with_engine=_privacy,
        ),
        Command(
            name="topic",
            help="show or set a channel's topic",
            arguments=(_CHANNEL, _a("text", nargs="?")),
            with_engine=_topic,
        ),
        Command(name="recv", help="fetch, decrypt and print new messages", with_engine=_sync),
        Command(
            name="listen",
            help="hold the subscription and print messages as they arrive",
            arguments=(
                _a("--count", type=int, default=0, help="exit after N messages"),
                _a("--timeout", type=float, default=0.0, help="exit after S seconds"),
            ),
            with_engine=_listen,
        ),
        Command(
            name="history",
            help="print a channel's stored messages",
            arguments=(_CHANNEL, _a("-n", "--limit", type=int, default=50)),
            with_engine=_history,
        ),
        Command(
            name="search",
            help="search the local history (every word, any case; newest first)",
            arguments=(
                _a("text"),
                _a("--channel", default=None, help="only this channel (name or id)"),
                _a("-n", "--limit", type=int, default=50),
            ),
            with_engine=_search,
        ),
        Command(
            name="check-key",
            help="safety numbers of a user's devices",
            arguments=(
                _a("user"),
                _a("--accept", action="store_true", help="re-pin after checking"),
                _a(
                    "--verify",
                    action="store_true",
                    help="mark the keys verified (after comparing the safety numbers)",
                ),
            ),
            with_engine=_check_key,
        ),
        Command(
            name="notify",
            help="show or set a channel's notifications: all, mentions (and DMs), mute",
            arguments=(
                _CHANNEL,
                _a("level", nargs="?", choices=[v.value for v in NotifyLevel]),
            ),
            with_engine=_notify,
        ),
        Command(
            name="link",
            help="link devices: without CODE show a code here; with CODE (new device) enter it",
            arguments=(
                _a("code", nargs="?", help="the code the existing device shows"),
                _a("--timeout", type=float, default=300.0, metavar="S"),
            ),
            with_engine=_link,
        ),
        Command(
            name="devices",
            help="this account's devices and the channels each is in",
            with_engine=_devices,
        ),
        Command(
            name="unlink",
            help="remove another device of this account from every channel and the account",
            arguments=(_a("device", help="hex id or prefix (>= 8 digits) from `qpc devices`"),),
            with_engine=_unlink,
        ),
        Command(
            name="refresh-keypackages",
            help="upload fresh KeyPackages now",
            with_engine=_refresh_keypackages,
        ),
        Command(
            name="update",
            help="commit a self-update (new leaf key) in a channel",
            arguments=(_CHANNEL,),
            with_engine=_update,
        ),
        Command(
            name="demo-group",
            help="throwaway node + three profiles: a group, a removal, printed",
            standalone=_demo_group,
        ),
        Command(
            name="demo",
            help="the TUI in a live group with scripted peers (throwaway node)",
            tui=True,
        ),
        Command(
            name="local-node",
            help="the shared embedded node's address and key (started if none runs)",
            standalone=_local_node,
        ),
        Command(
            name="stop-local-node",
            help="stop the shared embedded node",
            standalone=_stop_local_node,
        ),
        Command(
            name="serve-ssh",
            help="serve the TUI over SSH: a process per session, identity by SSH key",
            arguments=(
                _a("--listen", default="127.0.0.1:2222", metavar="HOST:PORT"),
                _a("--state-dir", metavar="DIR", help="host key, profiles, embedded node"),
                _a("--server-fingerprint", metavar="HEX", help="expected key of --server"),
                _a("--max-sessions", type=int, default=200),
                _a("--max-sessions-per-key", type=int, default=5),
                _a("--idle-timeout", type=float, default=3600.0, metavar="S"),
                _a("--auth-rate", type=float, default=1.0, metavar="PER_S"),
                _a("--auth-burst", type=int, default=10),
                _a("--metrics", metavar="HOST:PORT", help="Prometheus endpoint"),
            ),
            own_config=_serve_ssh,
        ),
        Command(
            name="serve-web",
            help="serve the TUI to browsers (textual-serve): a process and a profile per session",
            arguments=(
                _a("--listen", default="127.0.0.1:8000", metavar="HOST:PORT"),
                _a("--state-dir", metavar="DIR", help="profiles, embedded node"),
            ),
            own_config=_serve_web,
        ),
    )
}
"""Every subcommand by name, in ``qpc --help`` order."""


async def run_command(cfg: CliConfig) -> int:
    """Run the configured subcommand; raises :class:`proto.errors.QpcError` on failure."""
    assert cfg.command is not None
    command = COMMANDS[cfg.command]
    if command.standalone is not None:
        await command.standalone(cfg)
        return 0
    if command.without_profile is not None and not Profile.exists(cfg.profile_dir):
        await command.without_profile(cfg)
        return 0
    assert command.with_engine is not None
    engine = await _open(cfg, create_ok=command.creates_profile)
    try:
        await command.with_engine(engine, cfg)
        # Anything sent while offline stays in the outbox; say so.
        n = len(engine.state.outbox)
        if n and not cfg.json and command.name != "listen":
            emit(cfg, f"({n} message(s) waiting in the outbox)", None)
    finally:
        await engine.close()
    return 0


async def run_plain_command(cfg: CliConfig) -> int:
    """``qpc --plain``: the line-mode interface on an opened engine (docs/TUI.md)."""
    from tui.plain import run_plain

    engine = await _open(cfg)
    try:
        return await run_plain(engine)
    finally:
        await engine.close()
