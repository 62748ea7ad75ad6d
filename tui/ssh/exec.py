"""Exec requests (``ssh HOST whoami|health|ping [--json]``): the CLI's answers, no PTY.

``health`` and ``ping`` need no account: the server asks the node itself
(one shared connection, the node's key pinned at start). ``whoami`` is about
the key's own profile, so it runs ``qpc whoami`` on that profile in a
process of its own with the passphrase read from the client's stdin
(``echo "$PASS" | ssh HOST whoami``); the host never keeps it.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from proto.errors import QpcError
from tui.cli.commands import as_json, health_line, ping_json, ping_lines
from tui.client import api
from tui.client.profile import Profile

if TYPE_CHECKING:
    from tui.ssh.session import ExecCommand, Session

__all__ = ["run_exec"]


def _out(session: Session, cmd: ExecCommand, human: list[str], data: Any) -> None:
    text = json.dumps(data, ensure_ascii=False) if cmd.json else "\n".join(human)
    session.channel.write((text + "\n").encode())


async def run_exec(session: Session, cmd: ExecCommand) -> int:
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
