"""Exec requests (``ssh HOST whoami|health|ping [--json]``): the CLI's answers, no PTY.

``health`` and ``ping`` need no account: the server asks the node itself
(one shared connection, the node's key pinned at start). ``whoami`` is about
the key's own profile, so it runs ``qpc whoami`` on that profile in a
process of its own with the passphrase read from the client's stdin
(``echo "$PASS" | ssh HOST whoami``); the host never keeps it.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from proto.errors import QpcError
from tui.client import api
from tui.client.profile import Profile
from tui.output import as_json, health_line, ping_json, ping_lines

if TYPE_CHECKING:
    import asyncssh

    from tui.ssh.host import AuthKey, Host

__all__ = ["ExecCommand", "ExecSession", "parse_exec", "run_exec"]

_EXEC_COMMANDS = ("whoami", "health", "ping")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecCommand:
    """A parsed exec request."""

    name: str
    """``whoami``, ``health`` or ``ping``."""
    json: bool = False
    """``--json`` output."""
    count: int = 3
    """``ping -c N``."""


def parse_exec(command: str) -> ExecCommand | str:
    """Parse an exec request; a string is the usage error to show."""
    usage = "usage: whoami|health|ping [-c N] [--json]"
    try:
        words = shlex.split(command)
    except ValueError:
        return usage
    if not words or words[0] not in _EXEC_COMMANDS:
        return usage
    name, rest = words[0], words[1:]
    as_json, count = False, 3
    while rest:
        word = rest.pop(0)
        if word == "--json":
            as_json = True
        elif name == "ping" and word in ("-c", "--count") and rest and rest[0].isdigit():
            count = int(rest.pop(0))
            if not 1 <= count <= 100:
                return "ping: the count must be 1..100"
        else:
            return usage
    return ExecCommand(name=name, json=as_json, count=count)


class ExecSession(Protocol):
    """What an exec command needs of its SSH session (:class:`tui.ssh.session.Session`)."""

    @property
    def channel(self) -> asyncssh.SSHServerChannel[bytes]:
        """The session's channel."""
        ...

    @property
    def key(self) -> AuthKey:
        """The key that authenticated the connection."""
        ...

    @property
    def host(self) -> Host:
        """The server the session belongs to."""
        ...

    async def run_cli(self, *args: str) -> int:
        """Run ``qpc ARGS`` on the key's profile; the exit status."""
        ...


def _out(session: ExecSession, cmd: ExecCommand, human: list[str], data: Any) -> None:
    text = json.dumps(data, ensure_ascii=False) if cmd.json else "\n".join(human)
    session.channel.write((text + "\n").encode())


async def run_exec(session: ExecSession, cmd: ExecCommand) -> int:
    """Answer ``cmd`` on the session's channel; the exit status."""
    host = session.host
    try:
        if cmd.name == "health":
            res = await (await host.node_client()).health(auth=b"")
            h = api.Health(
                status=res.status,
                version=res.version,
                uptime_ms=res.uptime_ms,
                store_backend=res.store_backend,
                server=host.node_address,
            )
            _out(session, cmd, [health_line(h)], as_json(h))
            return 0
        if cmd.name == "ping":
            rpc = await host.node_client()
            rtts, server_ms = [], 0
            for i in range(cmd.count):
                t0 = time.perf_counter()
                pong = await rpc.ping(payload=i.to_bytes(4, "big"), auth=b"")
                rtts.append((time.perf_counter() - t0) * 1000)
                server_ms = pong.server_time_ms
            p = api.PingResult(rtts_ms=tuple(rtts), server_time_ms=server_ms)
            _out(session, cmd, ping_lines(p), ping_json(p))
            return 0
    except QpcError as exc:
        session.channel.write_stderr(f"qpc: error: the node: {type(exc).__name__}\n".encode())
        return 1
    # whoami: this key's own profile.
    profile = host.config.profiles_dir / session.key.profile_name
    if not Profile.exists(profile):
        text = (
            f"no account for this key ({session.key.fingerprint}): "
            "connect with `ssh -t` to register"
        )
        if cmd.json:
            _out(session, cmd, [], {"error": "no account", "key": session.key.fingerprint})
        else:
            session.channel.write_stderr(f"qpc: {text}\n".encode())
        return 1
    return await session.run_cli("whoami", *(["--json"] if cmd.json else []))
