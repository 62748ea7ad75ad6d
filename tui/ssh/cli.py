"""``qpc serve-ssh``: options to :class:`tui.ssh.config.SshServeConfig`, then serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from proto.errors import ConfigError
from tui.client.localnode import data_dir
from tui.ssh.config import SshServeConfig

__all__ = ["config_from_options", "serve_ssh"]

_PASSED_ENV = ("QPC_KDF",)
"""Server environment handed to session processes (``QPC_KDF=fast`` in tests)."""


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` to listen on (port 0: any free port); IPv6 literals in brackets.

    Raises:
        ConfigError: not ``HOST:PORT``.
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"the address must be HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def config_from_options(opts: argparse.Namespace) -> SshServeConfig:
    """The server's config from ``qpc serve-ssh`` options.

    Raises:
        ConfigError: a malformed address.
    """
    host, port = listen_address(opts.listen)
    metrics_host, metrics_port = listen_address(opts.metrics) if opts.metrics else (None, 0)
    state = Path(opts.state_dir).expanduser() if opts.state_dir else data_dir() / "ssh"
    return SshServeConfig(
        host=host,
        port=port,
        state_dir=state.absolute(),
        server=opts.server or None,
        server_fingerprint=opts.server_fingerprint,
        max_sessions=opts.max_sessions,
        max_sessions_per_key=opts.max_sessions_per_key,
        idle_timeout_s=opts.idle_timeout,
        auth_rate=opts.auth_rate,
        auth_burst=opts.auth_burst,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        child_env=tuple((k, os.environ[k]) for k in _PASSED_ENV if k in os.environ),
    )


def serve_ssh(opts: argparse.Namespace) -> int:
    """Run the SSH server until SIGTERM/SIGINT; the exit status."""
    from tui.ssh.server import main_serve

    try:
        config = config_from_options(opts)
    except ConfigError as exc:
        print(f"qpc: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if opts.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("quic").setLevel(logging.WARNING)
    return main_serve(config)
