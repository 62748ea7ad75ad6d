"""The channel/DM list: unread counts, last activity, newest first."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.client.api import ChannelInfo, ChannelKind

__all__ = ["ChannelList", "ChannelRow", "format_activity"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelRow:
    """A channel as the list shows it (the app owns the unread count)."""

    info: ChannelInfo
    """The engine's view of the channel."""
    unread: int = 0
    """Messages not yet seen in this session."""
    last_activity_ms: int = 0
    """Newest activity (engine's or a message that just arrived), Unix ms."""
    mentions: int = 0
    """Unseen messages naming the reader (shown as ``@N`` before the unread count)."""


def format_activity(ms: int, now: float | None = None) -> str:
    """``HH:MM`` today, weekday within a week, else ``DD Mon``; "" when unknown."""
    if ms <= 0:
        return ""
    now = time.time() if now is None else now
    when = datetime.fromtimestamp(ms / 1000)
    today = datetime.fromtimestamp(now).date()
    delta_days = (today - when.date()).days
    if delta_days <= 0:
        return when.strftime("%H:%M")
    if delta_days < 7:
        return when.strftime("%a")
    return when.strftime("%d %b")


def _prompt(row: ChannelRow, width: int) -> Text:
    """``#name ……… 3 14:02`` fitted to ``width`` cells."""
    info = row.info
    sigil = "@" if info.kind is ChannelKind.DM else "#"
    when = format_activity(row.last_activity_ms)
    badge = f" {min(row.unread, 99)}{'+' if row.unread > 99 else ''} " if row.unread else ""
    named = f"@{min(row.mentions, 99)}" if row.mentions else ""
    right = len(badge) + (len(named) + 1 if named else 0) + (len(when) + 1 if when else 0)
    name = Text(f"{sigil}{info.name}", no_wrap=True, overflow="ellipsis")
    if not info.active:
        name.stylize("dim strike")
    elif row.unread:
        name.stylize("bold")
    name.truncate(max(1, width - right - 1), overflow="ellipsis", pad=True)
    text = Text.assemble(name, " ")
    if named:
        text.append(named, "bold reverse yellow")
        text.append(" ")
    if badge:
        text.append(badge, "bold reverse")
    if when:
        text.append(" " + when, "dim")
    text.no_wrap = True
    return text


class ChannelList(OptionList):
    """Channels and DMs, newest activity first; Enter opens one."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="channels.down"),
        Binding("k", "cursor_up", "Up", show=False, id="channels.up"),
    ]

    DEFAULT_CSS = """
    ChannelList { border: none; padding: 0; }
    """

    @dataclass
    class Opened(Message):
        """The user chose a channel."""

        channel_id: str
        """Hex id of the chosen channel."""

    def __init__(self, *, id: str | None = None) -> None:
        """Create an empty list."""
        super().__init__(id=id)
        self._rows: dict[str, ChannelRow] = {}
        self._order: list[str] = []

    @property
    def channel_ids(self) -> list[str]:
        """Channel ids in display order."""
        return list(self._order)

    def row(self, channel_id: str) -> ChannelRow | None:
        """The row shown for ``channel_id``."""
        return self._rows.get(channel_id)

    def set_rows(self, rows: Iterable[ChannelRow]) -> None:
        """Show ``rows`` sorted by activity (active channels first), keeping the cursor."""
        current = self.highlighted_id
        ordered = sorted(
            rows, key=lambda r: (not r.info.active, -r.last_activity_ms, r.info.name.lower())
        )
        self._rows = {r.info.id: r for r in ordered}
        self._order = [r.info.id for r in ordered]
        self.clear_options()
        width = self._prompt_width()
        self.add_options([Option(_prompt(r, width), id=r.info.id) for r in ordered])
        if current in self._rows:
            self.highlighted = self._order.index(current)
        elif self._order:
            self.highlighted = 0

    def update_row(self, row: ChannelRow) -> None:
        """Replace one row (re-sorting if its activity changed)."""
        old = self._rows.get(row.info.id)
        if old is not None and old.last_activity_ms == row.last_activity_ms:
            self._rows[row.info.id] = row
            self.replace_option_prompt(row.info.id, _prompt(row, self._prompt_width()))
            return
        rows = dict(self._rows)
        rows[row.info.id] = row
        self.set_rows(rows.values())

    def _prompt_width(self) -> int:
        return max(8, self.scrollable_content_region.width or 22)

    def on_resize(self) -> None:
        """Refit the rows to the new width."""
        if self._rows:
            self.set_rows(list(self._rows.values()))

    @property
    def highlighted_id(self) -> str | None:
        """Id of the highlighted channel, if any."""
        if self.highlighted is None or not self._order:
            return None
        if self.highlighted >= len(self._order):
            return None
        return self._order[self.highlighted]

    def select_id(self, channel_id: str) -> None:
        """Move the cursor to ``channel_id``."""
        if channel_id in self._rows:
            self.highlighted = self._order.index(channel_id)

    def _on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Opened(event.option.id))
