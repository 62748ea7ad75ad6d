"""Which incoming messages become a toast or a bell: a sans-I/O policy.

The controller feeds every incoming message to :meth:`Notifier.message` and
calls :meth:`Notifier.flush` once per redraw tick; ``flush`` returns what to
show. Nothing here touches the screen, so the rules are tested directly:

* a channel's notify level (``all``, ``mentions``, ``mute``) decides whether a
  message counts at all; ``mentions`` counts only messages naming us
  (``@name`` or the bare name as a word);
* nothing for our own messages, for the channel that is open while the
  terminal has focus, or for the backlog fetched when the session starts
  (messages sent before it, which the unread badges already show);
* one toast per channel per burst: a channel's messages are held until it
  has been quiet for ``quiet_ms`` (or ``max_delay_ms`` passed since the first),
  then shown as one toast with the count (``bob: hi (+4 more)``); at most one
  bell per flush.
"""

from __future__ import annotations

import enum
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "NOTIFY_FILE",
    "Alert",
    "Notifier",
    "NotifyLevel",
    "load_levels",
    "mentions",
    "save_level",
]


class NotifyLevel(enum.Enum):
    """How much a channel may interrupt (iamb, WeeChat and profanity have the same three)."""

    ALL = "all"
    MENTIONS = "mentions"
    MUTE = "mute"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One toast for one channel."""

    channel: str
    title: str
    text: str
    count: int
    mention: bool


@dataclass(slots=True)
class _Pending:
    title: str
    first_sender: str
    first_text: str
    first_ms: int
    last_ms: int = 0
    count: int = 0
    mention: bool = False


def mentions(user: str, text: str) -> bool:
    """Whether ``text`` names ``user`` (``@user`` or ``user`` as a whole word)."""
    if not user:
        return False
    return re.search(rf"(?<![\w@])@?{re.escape(user)}(?!\w)", text, re.IGNORECASE) is not None


@dataclass(slots=True, kw_only=True)
class Notifier:
    """Coalesces incoming messages into toasts and bells (see module docstring)."""

    user: str
    session_start_ms: int
    """Messages the sender stamped before this (minus ``backlog_slack_ms``) are backlog."""
    levels: dict[str, NotifyLevel] = field(default_factory=dict)
    """Channel id -> level; missing means ``all``."""
    backlog_slack_ms: int = 5_000
    preview_chars: int = 60
    quiet_ms: int = 1_000
    """A burst ends when its channel had no message for this long."""
    max_delay_ms: int = 5_000
    """A toast is never held longer than this after the burst's first message."""
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _ring: bool = False

    def level(self, channel: str) -> NotifyLevel:
        return self.levels.get(channel, NotifyLevel.ALL)

    def message(
        self,
        *,
        channel: str,
        title: str,
        sender: str,
        text: str,
        time_ms: int,
        outgoing: bool,
        channel_in_view: bool,
        now_ms: int,
    ) -> None:
        """Account for one incoming message (``channel_in_view``: open and focused).

        ``time_ms`` is the sender's stamp (backlog check), ``now_ms`` our clock.
        """
        if outgoing or channel_in_view:
            return
        if time_ms < self.session_start_ms - self.backlog_slack_ms:
            return
        named = mentions(self.user, text)
        level = self.level(channel)
        if level is NotifyLevel.MUTE or (level is NotifyLevel.MENTIONS and not named):
            return
        pending = self._pending.get(channel)
        if pending is None:
            pending = self._pending[channel] = _Pending(title, sender, text, now_ms)
        pending.last_ms = now_ms
        pending.count += 1
        pending.mention = pending.mention or named
        self._ring = True

    @property
    def pending(self) -> bool:
        """Whether some burst is still held (the caller should flush again later)."""
        return bool(self._pending)

    def flush(self, now_ms: int) -> tuple[list[Alert], bool]:
        """Toasts for the bursts that ended (one per channel), and whether to ring once."""
        alerts = []
        done = [
            ch
            for ch, p in self._pending.items()
            if now_ms - p.last_ms >= self.quiet_ms or now_ms - p.first_ms >= self.max_delay_ms
        ]
        for channel in done:
            p = self._pending.pop(channel)
            text = p.first_text
            if len(text) > self.preview_chars:
                text = text[: self.preview_chars - 1] + "…"
            line = f"{p.first_sender}: {text}"
            if p.count > 1:
                line += f" (+{p.count - 1} more)"
            alerts.append(
                Alert(channel=channel, title=p.title, text=line, count=p.count, mention=p.mention)
            )
        ring = bool(alerts) and self._ring
        if ring:
            self._ring = False
        return alerts, ring


NOTIFY_FILE = "notify.json"
"""Per-profile file of channel notify levels (channel id -> level), mode 0600."""


def load_levels(profile_dir: Path | None) -> dict[str, NotifyLevel]:
    """The saved levels; a missing or unreadable file means every channel is ``all``."""
    if profile_dir is None:
        return {}
    try:
        doc = json.loads((profile_dir / NOTIFY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    out = {}
    for channel, value in doc.items():
        try:
            out[str(channel)] = NotifyLevel(value)
        except ValueError:
            continue
    return out


def save_level(profile_dir: Path, channel: str, level: NotifyLevel) -> None:
    """Set one channel's level (``all`` removes the entry); written atomically, 0600."""
    levels = load_levels(profile_dir)
    if level is NotifyLevel.ALL:
        levels.pop(channel, None)
    else:
        levels[channel] = level
    data = json.dumps({k: v.value for k, v in sorted(levels.items())}, indent=1).encode()
    tmp = profile_dir / (NOTIFY_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, profile_dir / NOTIFY_FILE)
