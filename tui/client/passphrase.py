"""Where the CLI gets the profile passphrase: a file descriptor, the environment, or a prompt.

Precedence in :func:`resolve_passphrase`: ``--passphrase-fd N`` (explicit), then
``QPC_PASSPHRASE``, then an interactive prompt when stdin is a terminal.
Passphrases are never logged or echoed.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping

from proto.errors import ConfigError

__all__ = [
    "ENV_VAR",
    "MAX_PASSPHRASE_BYTES",
    "passphrase_from_env",
    "prompt_passphrase",
    "read_passphrase_fd",
    "resolve_passphrase",
]

ENV_VAR = "QPC_PASSPHRASE"
"""Environment variable holding the passphrase, for scripts."""

MAX_PASSPHRASE_BYTES = 4096
"""Longest passphrase read from a file descriptor."""


def read_passphrase_fd(fd: int) -> str:
    """Read one line (up to EOF or the first newline) from file descriptor ``fd``.

    Like gpg's ``--passphrase-fd``: the newline is not part of the passphrase and
    the fd is read no further, so a parent process may keep the pipe open.

    Raises:
        ConfigError: the fd cannot be read, is not UTF-8, is too long or is empty.
    """
    data = bytearray()
    try:
        while len(data) <= MAX_PASSPHRASE_BYTES:
            chunk = os.read(fd, 1)
            if not chunk or chunk == b"\n":
                break
            data += chunk
    except OSError as exc:
        raise ConfigError(f"cannot read passphrase from fd {fd}: {exc.strerror}") from exc
    if len(data) > MAX_PASSPHRASE_BYTES:
        raise ConfigError(f"passphrase from fd {fd} is longer than {MAX_PASSPHRASE_BYTES} bytes")
    if data.endswith(b"\r"):
        del data[-1]
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"passphrase from fd {fd} is not UTF-8") from exc
    if not text:
        raise ConfigError(f"empty passphrase from fd {fd}")
    return text


def passphrase_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The passphrase from ``QPC_PASSPHRASE``, or None when unset or empty."""
    env = os.environ if environ is None else environ
    return env.get(ENV_VAR) or None


def prompt_passphrase(
    *,
    confirm: bool = False,
    getpass_fn: Callable[[str], str] = getpass.getpass,
) -> str:
    """Ask on the terminal (no echo); with ``confirm``, ask twice (for a new profile).

    Raises:
        ConfigError: empty, or the two entries differ.
    """
    first = getpass_fn("Profile passphrase: ")
    if not first:
        raise ConfigError("empty passphrase")
    if confirm and getpass_fn("Repeat passphrase: ") != first:
        raise ConfigError("passphrases do not match")
    return first


def resolve_passphrase(
    *,
    fd: int | None = None,
    environ: Mapping[str, str] | None = None,
    interactive: bool | None = None,
    confirm: bool = False,
    getpass_fn: Callable[[str], str] = getpass.getpass,
) -> str:
    """Get the passphrase from the first available source.

    Args:
        fd: ``--passphrase-fd`` value, if given.
        environ: environment to read ``QPC_PASSPHRASE`` from (default ``os.environ``).
        interactive: whether prompting is allowed (default: stdin is a terminal).
        confirm: ask twice when prompting (creating a profile).
        getpass_fn: the prompt function (tests inject one).

    Raises:
        ConfigError: no source is available, or the chosen one fails.
    """
    if fd is not None:
        return read_passphrase_fd(fd)
    from_env = passphrase_from_env(environ)
    if from_env is not None:
        return from_env
    if interactive is None:
        interactive = sys.stdin.isatty()
    if interactive:
        return prompt_passphrase(confirm=confirm, getpass_fn=getpass_fn)
    raise ConfigError(f"no passphrase: pass --passphrase-fd N, set {ENV_VAR}, or run in a terminal")
