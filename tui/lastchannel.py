"""The channel a person left off in, kept in the profile so a reconnect reopens it.

A restarted TUI, a new ``ssh`` session for the same key (``qpc serve-ssh``)
or a browser session on the same profile opens this channel instead of the
one with the newest activity. The file holds one channel id (hex; the node
knows channel ids already, names stay in the encrypted profile), mode 0600.
"""

from __future__ import annotations

import string
from pathlib import Path

from proto import files

__all__ = ["LAST_CHANNEL_FILE", "load_last_channel", "save_last_channel"]

LAST_CHANNEL_FILE = "last-channel"
"""In the profile directory."""


def load_last_channel(profile_dir: Path | None) -> str | None:
    """The saved channel id, or None (no profile, no file, or not a channel id)."""
    if profile_dir is None:
        return None
    try:
        text = (profile_dir / LAST_CHANNEL_FILE).read_text("ascii").strip()
    except (OSError, ValueError):
        return None
    if not text or len(text) > 128 or not all(c in string.hexdigits for c in text):
        return None
    return text


def save_last_channel(profile_dir: Path, channel: str) -> None:
    """Remember ``channel`` (written atomically, 0600; an existing profile dir only)."""
    if profile_dir.is_dir():
        files.write_private(profile_dir / LAST_CHANNEL_FILE, channel.encode("ascii"))
