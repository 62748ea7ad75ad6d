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
import os
import shlex
import sys
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
    return 0
