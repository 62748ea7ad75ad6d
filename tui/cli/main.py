"""Argument parsing, profile/engine setup, output and exit codes of ``qpc``.

Global options (``--server``, ``--profile``, ``--json``, ``--passphrase-fd``,
``--trust-new-key``, ``-v``) are accepted before or after the subcommand.
Every subcommand prints human-readable lines, or with ``--json`` one JSON
object (``listen``: one JSON object per line). Failure: one line
``qpc: error: ...`` on stderr and exit status 1 (2 for usage errors).

Environment: ``QPC_PASSPHRASE`` (profile passphrase), ``QPC_PASSWORD``
(account password for register/login), ``QPC_DATA_DIR`` (data dir for
profiles and the local node), ``QPC_PROFILE`` (profile dir), ``QPC_KDF=fast``
(cheap Argon2id for new profiles; tests only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proto import files
from proto.crypto.atrest import DEFAULT_PARAMS, FAST_TEST_PARAMS
from proto.errors import (
    Expired,
    FingerprintMismatch,
    QpcError,
    RpcError,
    Unauthenticated,
)
from tui.client.core import EngineConfig
from tui.client.localnode import data_dir

__all__ = ["Options", "build_parser", "main"]

KDF_ENV = "QPC_KDF"
"""``fast`` selects cheap Argon2id parameters for new profiles (tests only)."""
PROFILE_ENV = "QPC_PROFILE"
"""Default profile directory."""

Options = argparse.Namespace

_COMMANDS: list[tuple[str, str, list[tuple[tuple[str, ...], dict[str, Any]]]]] = [
    ("register", "create an account (OPAQUE) and this device", [(("user",), {})]),
    ("login", "log in (a new profile becomes a new device)", [(("user",), {})]),
    ("whoami", "user, device fingerprint, KeyPackage stock, server key", []),
    ("health", "the node's health", []),
    ("ping", "round-trip times to the node", [(("-c", "--count"), {"type": int, "default": 3})]),
    ("create-group", "create a group channel", [(("name",), {})]),
    (
        "invite",
        "add users (all their devices) to a channel",
        [(("channel",), {}), (("users",), {"nargs": "+"})],
    ),
    ("join", "process waiting invitations (Welcome + later commits)", []),
    (
        "dm",
        "open (or create) the DM channel with a user",
        [(("user",), {}), (("text",), {"nargs": "?"})],
    ),
    ("leave", "leave a channel", [(("channel",), {})]),
    (
        "remove",
        "remove users from a channel",
        [(("channel",), {}), (("users",), {"nargs": "+"})],
    ),
    ("members", "list a channel's members", [(("channel",), {})]),
    ("channels", "list channels", []),
    ("send", "send a message", [(("channel",), {}), (("text",), {})]),
    ("recv", "fetch, decrypt and print new messages", []),
    (
        "listen",
        "hold the subscription and print messages as they arrive",
        [
            (("--count",), {"type": int, "default": 0, "help": "exit after N messages"}),
            (("--timeout",), {"type": float, "default": 0.0, "help": "exit after S seconds"}),
        ],
    ),
    (
        "history",
        "print a channel's stored messages",
        [(("channel",), {}), (("-n", "--limit"), {"type": int, "default": 50})],
    ),
    (
        "check-key",
        "safety numbers of a user's devices",
        [
            (("user",), {}),
            (("--accept",), {"action": "store_true", "help": "re-pin after checking"}),
        ],
    ),
    ("refresh-keypackages", "upload fresh KeyPackages now", []),
    ("update", "commit a self-update (new leaf key) in a channel", [(("channel",), {})]),
    ("demo-group", "throwaway node + three profiles: a group, a removal, printed", []),
    ("demo", "the TUI in a live group with scripted peers (throwaway node)", []),
    ("stop-local-node", "stop the shared embedded node", []),
    (
        "serve-ssh",
        "serve the TUI over SSH: a process per session, identity by SSH key",
        [
            (("--listen",), {"default": "127.0.0.1:2222", "metavar": "HOST:PORT"}),
            (("--state-dir",), {"metavar": "DIR", "help": "host key, profiles, embedded node"}),
            (("--server-fingerprint",), {"metavar": "HEX", "help": "expected key of --server"}),
            (("--max-sessions",), {"type": int, "default": 200}),
            (("--max-sessions-per-key",), {"type": int, "default": 5}),
            (("--idle-timeout",), {"type": float, "default": 3600.0, "metavar": "S"}),
            (("--auth-rate",), {"type": float, "default": 1.0, "metavar": "PER_S"}),
            (("--auth-burst",), {"type": int, "default": 10}),
            (("--metrics",), {"metavar": "HOST:PORT", "help": "Prometheus endpoint"}),
        ],
    ),
]


def _globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    d: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--server",
        metavar="HOST:PORT[,HOST:PORT]",
        help="node address; several: processes of one deployment, tried in turn",
        **d,
    )
    parser.add_argument("--profile", metavar="DIR", help="profile directory", **d)
    parser.add_argument("--json", action="store_true", help="JSON output", **d)
    parser.add_argument(
        "--passphrase-fd", type=int, metavar="N", help="read the profile passphrase from fd N", **d
    )
    parser.add_argument(
        "--password-fd", type=int, metavar="N", help="read the account password from fd N", **d
    )
    parser.add_argument(
        "--trust-new-key", action="store_true", help="accept a changed node key", **d
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging", **d)


def build_parser() -> argparse.ArgumentParser:
    """The ``qpc`` parser."""
    parser = argparse.ArgumentParser(
        prog="qpc",
        description="quicnprotochat command-line client (end-to-end encrypted MLS chat).",
        epilog="Environment: QPC_PASSPHRASE, QPC_PASSWORD, QPC_DATA_DIR, QPC_PROFILE, QPC_KDF.",
    )
    _globals(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text, args in _COMMANDS:
        p = sub.add_parser(name, help=text, description=text)
        for flags, kw in args:
            p.add_argument(*flags, **kw)
        _globals(p, top=False)
    return parser


def profile_dir(opts: Options) -> Path:
    """The profile directory from options, environment or the data dir."""
    if opts.profile:
        return Path(opts.profile).expanduser()
    env = os.environ.get(PROFILE_ENV)
    if env:
        return Path(env).expanduser()
    return data_dir() / "profiles" / "default"


def engine_config(opts: Options) -> EngineConfig:
    """The engine settings for these options."""
    fast = os.environ.get(KDF_ENV) == "fast"
    return EngineConfig(
        profile_dir=profile_dir(opts),
        server=opts.server,
        trust_new_key=opts.trust_new_key,
        kdf=FAST_TEST_PARAMS if fast else DEFAULT_PARAMS,
    )


def _setup_logging(path: Path, verbose: bool) -> None:
    files.private_dir(path)
    handler = logging.StreamHandler(files.open_private(path / "client.log", "a"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("quic").setLevel(logging.WARNING)


def emit(opts: Options, human: str | list[str], data: object) -> None:
    """Print a result: human lines, or JSON with ``--json``."""
    if opts.json:
        print(json.dumps(data, ensure_ascii=False, default=str), flush=True)
    else:
        lines = [human] if isinstance(human, str) else human
        for line in lines:
            print(line, flush=True)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, Unauthenticated | Expired):
        return "the session expired or is unknown: run `qpc login`"
    if isinstance(exc, FingerprintMismatch):
        return str(exc)
    if isinstance(exc, RpcError):
        return f"node refused: {exc.code.name.lower()}: {exc.message or type(exc).__name__}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qpc`` console script; returns the exit status."""
    files.set_program_umask()  # second line behind proto.files (docs/THREAT_MODEL.md)
    from tui.cli.commands import run_command

    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.command is None or opts.command == "demo":
        # No subcommand (or `demo`): the full-screen client.
        try:
            from tui.app import run_tui
        except ImportError as exc:
            print(f"qpc: error: the TUI is not available ({exc})", file=sys.stderr)
            return 1
        return run_tui(opts)
    if opts.command == "serve-ssh":
        from tui.ssh.cli import serve_ssh

        return serve_ssh(opts)
    if opts.command not in ("demo-group", "stop-local-node"):
        _setup_logging(profile_dir(opts), opts.verbose)
    try:
        return asyncio.run(run_command(opts))
    except KeyboardInterrupt:
        return 130
    except QpcError as exc:
        logging.getLogger("tui.cli").info("command failed: %s", type(exc).__name__)
        print(f"qpc: error: {_error_text(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"qpc: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
