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
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from proto import files, memory
from proto.errors import (
    Expired,
    FingerprintMismatch,
    QpcError,
    RpcError,
    Unauthenticated,
)
from tui.cli.commands import COMMANDS, run_command, run_plain_command
from tui.cli.config import CliConfig, cli_config
from tui.client.profile import Profile

__all__ = ["build_parser", "main"]


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
    parser.add_argument(
        "--plain",
        action="store_true",
        help="line-mode interface for screen readers (no full-screen drawing, no colour)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        for flags, kw in command.arguments:
            p.add_argument(*flags, **kw)
        _globals(p, top=False)
    return parser


def _setup_logging(path: Path, verbose: bool) -> None:
    files.private_dir(path)
    handler = logging.StreamHandler(files.open_private(path / "client.log", "a"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("quic").setLevel(logging.WARNING)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, Unauthenticated | Expired):
        return "the session expired or is unknown: run `qpc login`"
    if isinstance(exc, FingerprintMismatch):
        return str(exc)
    if isinstance(exc, RpcError):
        return f"node refused: {exc.code.name.lower()}: {exc.message or type(exc).__name__}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def _run_tui(cfg: CliConfig) -> int:
    try:
        from tui.launch import LaunchConfig, launch  # textual is imported only for the TUI
    except ImportError as exc:
        print(f"qpc: error: the TUI is not available ({exc})", file=sys.stderr)
        return 1
    return launch(
        LaunchConfig(
            engine=cfg.engine_config(),
            demo=cfg.command == "demo",
            passphrase_fd=cfg.passphrase_fd,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qpc`` console script; returns the exit status."""
    files.set_program_umask()  # second line behind proto.files (docs/THREAT_MODEL.md)
    memory.cap_mmap_threshold()  # freed KDF and tree buffers go back (proto/memory.py)
    ns = build_parser().parse_args(argv)
    cfg = cli_config(ns)
    command = None if cfg.command is None else COMMANDS[cfg.command]
    if command is None and cfg.plain:
        return _run_cli(cfg, run_plain_command)
    if command is None or command.tui:
        return _run_tui(cfg)
    if command.own_config is not None:
        return command.own_config(ns)
    bare = command.without_profile is not None and not Profile.exists(cfg.profile_dir)
    if command.with_engine is not None and not bare:  # a profile-less run writes nothing
        _setup_logging(cfg.profile_dir, cfg.verbose)
    return _run_cli(cfg, run_command)


def _run_cli(cfg: CliConfig, run: Callable[[CliConfig], Coroutine[Any, Any, int]]) -> int:
    if cfg.command is None:
        _setup_logging(cfg.profile_dir, cfg.verbose)
    try:
        return asyncio.run(run(cfg))
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
