"""The typed configuration of one ``qpc`` run, built once from argv and the environment.

:func:`cli_config` turns the parsed arguments into a :class:`CliConfig`; nothing
after it sees ``argparse``. :func:`emit` prints a result the way the run asked
for (human lines or JSON).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proto.crypto.atrest import DEFAULT_PARAMS, FAST_TEST_PARAMS, KdfParams
from tui.client.core import EngineConfig
from tui.client.localnode import data_dir

__all__ = [
    "KDF_ENV",
    "PROFILE_ENV",
    "CliConfig",
    "CommandArgs",
    "cli_config",
    "emit",
]

KDF_ENV = "QPC_KDF"
"""``fast`` selects cheap Argon2id parameters for new profiles (tests only)."""
PROFILE_ENV = "QPC_PROFILE"
"""Default profile directory."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandArgs:
    """The subcommand's own arguments (each command reads the ones it declares)."""

    user: str = ""
    users: tuple[str, ...] = ()
    channel: str = ""
    name: str = ""
    text: str | None = None
    count: int = 0
    timeout: float = 0.0
    limit: int = 50
    accept: bool = False
    verify: bool = False
    """``check-key --verify``."""
    level: str | None = None
    """``notify``: the new level (None: show the current one)."""
    id: str = ""
    emoji: str = ""
    reply_to: str = ""
    me: bool = False
    remove: bool = False
    receipts: str | None = None
    typing: str | None = None
    code: str = ""
    device: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CliConfig:
    """Everything one ``qpc`` run was asked to do."""

    command: str | None
    """Subcommand name; None = the full-screen client."""
    server: str | None = None
    """``--server HOST:PORT`` (None: the profile's server or the embedded node)."""
    profile_dir: Path
    """``--profile``, else ``$QPC_PROFILE``, else ``<data dir>/profiles/default``."""
    json: bool = False
    """One JSON object per result instead of human lines."""
    passphrase_fd: int | None = None
    """Read the profile passphrase from this fd."""
    password_fd: int | None = None
    """Read the account password from this fd."""
    trust_new_key: bool = False
    """Accept a changed node key."""
    verbose: bool = False
    """Debug logging."""
    plain: bool = False
    """``--plain``: the line-mode interface for screen readers instead of the TUI."""
    kdf: KdfParams = DEFAULT_PARAMS
    """Argon2id parameters for a new profile (``QPC_KDF=fast``: test parameters)."""
    args: CommandArgs = field(default_factory=CommandArgs)
    """The subcommand's arguments."""

    def engine_config(self) -> EngineConfig:
        """The client engine's settings for this run."""
        return EngineConfig(
            profile_dir=self.profile_dir,
            server=self.server,
            trust_new_key=self.trust_new_key,
            kdf=self.kdf,
        )


def _profile_dir(option: str | None, environ: dict[str, str]) -> Path:
    if option:
        return Path(option).expanduser()
    env = environ.get(PROFILE_ENV)
    if env:
        return Path(env).expanduser()
    return data_dir() / "profiles" / "default"


def cli_config(ns: argparse.Namespace, environ: dict[str, str] | None = None) -> CliConfig:
    """The typed config for parsed arguments ``ns`` and ``environ`` (default: os.environ)."""
    env = dict(os.environ if environ is None else environ)

    def get(name: str, default: Any) -> Any:
        return getattr(ns, name, default)

    args = CommandArgs(
        user=get("user", ""),
        users=tuple(get("users", ())),
        channel=get("channel", ""),
        name=get("name", ""),
        text=get("text", None),
        count=get("count", 0),
        timeout=get("timeout", 0.0),
        limit=get("limit", 50),
        accept=get("accept", False),
        verify=get("verify", False),
        level=get("level", None),
        id=get("id", ""),
        emoji=get("emoji", ""),
        reply_to=get("reply_to", ""),
        me=bool(get("me", False)),
        remove=bool(get("remove", False)),
        receipts=get("receipts", None),
        typing=get("typing", None),
        code=get("code", None) or "",
        device=get("device", ""),
    )
    return CliConfig(
        command=get("command", None),
        server=get("server", None),
        profile_dir=_profile_dir(get("profile", None), env),
        json=bool(get("json", False)),
        passphrase_fd=get("passphrase_fd", None),
        password_fd=get("password_fd", None),
        trust_new_key=bool(get("trust_new_key", False)),
        verbose=bool(get("verbose", False)),
        plain=bool(get("plain", False)),
        kdf=FAST_TEST_PARAMS if env.get(KDF_ENV) == "fast" else DEFAULT_PARAMS,
        args=args,
    )


def emit(cfg: CliConfig, human: str | list[str], data: object) -> None:
    """Print a result: human lines, or JSON with ``--json``."""
    if cfg.json:
        print(json.dumps(data, ensure_ascii=False, default=str), flush=True)
    else:
        lines = [human] if isinstance(human, str) else human
        for line in lines:
            print(line, flush=True)
