"""``qpc serve-web``: the TUI in a browser (textual-serve), one process and profile per session.

Every browser session (one websocket) starts its own ``qpc`` process
(textual-serve runs the command once per session) on a profile directory
created for that session (``STATE/web/session-XXXXXXXX``, mode 0700): a
browser never shares a profile or a passphrase with another. A session
registers a new account, or logs in to an existing one as a new device of
it; its profile stays on the host, encrypted with its passphrase. What this
trusts the host with: ``docs/THREAT_MODEL.md``, "Hosted sessions".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from proto import files
from proto.errors import ConfigError
from tui.client.localnode import data_dir

__all__ = ["serve_web"]


def _command(state: Path, server: str | None) -> str:
    """The shell command textual-serve runs per session: a fresh profile each time."""
    template = shlex.quote(str(state / "web" / "session-XXXXXXXX"))
    argv = [sys.executable, "-m", "tui.cli"]
    if server:
        argv += ["--server", server]
    return f'exec {shlex.join(argv)} --profile "$(mktemp -d {template})"'


def serve_web(opts: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the exit status."""
    from tui.ssh.cli import listen_address

    try:
        host, port = listen_address(opts.listen)
    except ConfigError as exc:
        print(f"qpc: error: {exc}", file=sys.stderr)
        return 2
    if port == 0:
        print("qpc: error: serve-web needs a fixed port (the page names it)", file=sys.stderr)
        return 2
    try:
        from textual_serve.server import Server
    except ImportError:
        print(
            "qpc: error: serve-web needs textual-serve (pip install textual-serve)", file=sys.stderr
        )
        return 1
    state = Path(opts.state_dir).expanduser().absolute() if opts.state_dir else data_dir() / "web"
    files.private_dir(state)
    files.private_dir(state / "web")
    # Inherited by every session process (textual-serve copies this environment).
    os.environ.update(QPC_DATA_DIR=str(state), QPC_CONFIG=str(state / "tui.toml"), QPC_HOSTED="web")
    print(f"listening: http://{host}:{port}/", flush=True)
    server = Server(_command(state, opts.server), host=host, port=port, title="quicnprotochat")
    server.serve()
    _reap_sessions(grace=_SESSION_GRACE_S)
    return 0


_SESSION_GRACE_S = 20.0
"""How long a session process may take to close its engine after the server stops."""


def _children() -> list[int]:
    """Pids of this process's living children (the session processes)."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces; split after the last ")"
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] == me and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


def _reap_sessions(*, grace: float) -> None:
    """Wait for the session processes to close (each releases its profile and
    the node); SIGTERM, then SIGKILL, whatever is left after ``grace``.

    textual-serve asks each session to close when it stops but does not wait:
    without this the server's exit would leave sessions still closing behind it.
    """
    deadline = time.monotonic() + grace
    signalled = False
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        left = _children()
        if not left:
            return
        if time.monotonic() >= deadline:
            sig = signal.SIGKILL if signalled else signal.SIGTERM
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            signalled = True
            deadline = time.monotonic() + 5.0
        time.sleep(0.05)
