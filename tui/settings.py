"""TUI settings: key remapping, bell, theme, log file.

Read once at the CLI edge from the ``[tui]`` table of the config file and
passed down to :func:`tui.app.make_app`; widgets never read it themselves.

Example ``config.toml``::

    [tui]
    bell = true
    theme = "ansi-dark"
    ping_interval_s = 5

    [tui.keys]            # binding id = key(s), see F1 for the ids
    "app.quit" = "ctrl+q"
    "main.new_group" = "ctrl+g"
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from proto.errors import ConfigError

__all__ = ["TuiSettings", "default_config_path", "load_settings"]


def default_config_path() -> Path:
    """Where the config file lives by default."""
    return Path(platformdirs.user_config_dir("quicnprotochat")) / "config.toml"


@dataclass(frozen=True, slots=True, kw_only=True)
class TuiSettings:
    """Everything the TUI can be configured with."""

    keymap: dict[str, str] = field(default_factory=dict)
    """Binding id -> key(s), applied with ``App.set_keymap``."""
    bell: bool = False
    """Ring the terminal bell when a message arrives in another channel."""
    theme: str = ""
    """Textual theme name; empty keeps the default."""
    ping_interval_s: float = 5.0
    """Seconds between background pings for the ping pane (0 disables)."""
    log_file: Path | None = None
    """Where the TUI logs; ``None`` picks ``tui.log`` in the profile directory."""
    notify_messages: bool = True
    """Show a notification for messages arriving in other channels."""
    damage_tracking: bool = True
    """Write only the cells that changed since the last frame (``tui.damage``)."""


def _log_path(value: str) -> Path:
    try:
        return Path(value).expanduser()
    except RuntimeError:  # "~user/..." of a user that does not exist
        raise ConfigError(f"[tui] log_file: cannot expand {value!r}") from None


def _settings_from_table(table: dict[str, Any]) -> TuiSettings:
    keys = table.get("keys", {})
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
    ):
        raise ConfigError("[tui.keys] must map binding ids to key strings")
    bell = table.get("bell", False)
    theme = table.get("theme", "")
    interval = table.get("ping_interval_s", 5.0)
    notify = table.get("notify_messages", True)
    log_file = table.get("log_file")
    damage = table.get("damage_tracking", True)
    if not isinstance(bell, bool) or not isinstance(notify, bool) or not isinstance(damage, bool):
        raise ConfigError("[tui] bell, notify_messages and damage_tracking must be true or false")
    if not isinstance(theme, str):
        raise ConfigError("[tui] theme must be a string")
    if not isinstance(interval, int | float) or not math.isfinite(interval) or interval < 0:
        raise ConfigError("[tui] ping_interval_s must be a number >= 0")
    if log_file is not None and not isinstance(log_file, str):
        raise ConfigError("[tui] log_file must be a path")
    return TuiSettings(
        keymap=dict(keys),
        bell=bell,
        theme=theme,
        ping_interval_s=float(interval),
        log_file=_log_path(log_file) if log_file else None,
        notify_messages=notify,
        damage_tracking=damage,
    )


def load_settings(path: Path | None = None) -> TuiSettings:
    """Read the ``[tui]`` table of ``path`` (default config path); defaults if absent."""
    path = path or default_config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return TuiSettings()
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    table = data.get("tui", {})
    if not isinstance(table, dict):
        raise ConfigError("[tui] must be a table")
    return _settings_from_table(table)
