"""A virtualised message log built on Textual's Line API.

Only the rows on screen are rendered. Each entry (a message or a day
separator) is wrapped once for the current width and kept as plain text
chunks; :meth:`MessageLog.render_line` turns the visible ones into strips on
demand, so 10,000 messages cost one wrap pass and a few dozen strips per
frame. Appending a message wraps only that message.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.actions import SkipAction
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["DeliveryMark", "LogItem", "MessageLog", "wrap_cells"]

_TIME_W = 5
_SENDER_W = 10
_SENDER_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")


class DeliveryMark(enum.Enum):
    """Delivery state of a message as the log shows it."""

    NONE = " "
    """Someone else's message (nothing to show)."""
    PENDING = "…"
    """Written, waiting in the outbox."""
    SENT = "✓"
    """Accepted by the node."""
    FAILED = "✗"
    """The node refused it or it could not be sealed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogItem:
    """One message as the log shows it."""

    key: str
    """Stable identity, used to update the delivery state in place."""
    sender: str
    """Display name of the sender."""
    text: str
    """Message text (may contain newlines)."""
    time: datetime
    """Local time the message was sent or received."""
    mark: DeliveryMark = DeliveryMark.NONE
    """Delivery state glyph."""
    own: bool = False
    """True for messages this device wrote."""
    system: bool = False
    """True for membership notices ("bob joined")."""
    mention: bool = False
    """The message names the reader (shown highlighted)."""
    selected: bool = False
    """The message the reply/react/edit/delete keys act on (shown highlighted)."""


@dataclass(slots=True)
class _Entry:
    item: LogItem | None  # None: day separator
    day: date
    # A tuple of str: the collector stops tracking it after its first pass,
    # so a full collection walks one object fewer per loaded message (full
    # collections are the longest stalls while scrolling a long history).
    lines: tuple[str, ...]


def wrap_cells(text: str, width: int) -> list[str]:
    """Word-wrap ``text`` to ``width`` terminal cells (hard-breaking long words).

    Newlines in ``text`` always start a new line. Returns at least one line.
    """
    width = max(1, width)
    out: list[str] = []
    for para in text.split("\n"):
        # Printable ASCII is one cell a character: len() instead of cell_len(),
        # the larger part of wrapping a page of history.
        measure = len if para.isascii() and para.isprintable() else cell_len
        if measure(para) <= width:
            out.append(para)
            continue
        line = ""
        line_w = 0
        for word in para.split(" "):
            word_w = measure(word)
            sep = 1 if line else 0
            if line_w + sep + word_w <= width:
                line = f"{line} {word}" if line else word
                line_w += sep + word_w
                continue
            if line:
                out.append(line)
            line, line_w = "", 0
            while word_w > width:
                cut = _cut_at_cells(word, width)
                out.append(word[:cut])
                word = word[cut:]
                word_w = measure(word)
            line, line_w = word, word_w
        out.append(line)
    return out or [""]


def _cut_at_cells(word: str, width: int) -> int:
    total = 0
    for i, ch in enumerate(word):
        total += cell_len(ch)
        if total > width:
            return max(1, i)
    return len(word)


def sender_colour(name: str) -> str:
    """A stable ANSI colour for ``name`` (works in 16-colour terminals)."""
    digest = hashlib.blake2s(name.encode(), digest_size=1).digest()[0]
    return _SENDER_COLOURS[digest % len(_SENDER_COLOURS)]


class MessageLog(ScrollView, can_focus=True):
    """Scrollable, virtualised list of messages with day separators."""

    BINDINGS = [
        Binding("up", "scroll_up", "Up", show=False, id="log.up"),
        Binding("down", "scroll_down", "Down", show=False, id="log.down"),
        Binding("pageup", "page_up", "Page up", show=False, id="log.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="log.page_down"),
        Binding("home", "scroll_home", "Oldest", show=False, id="log.home"),
        Binding("end", "scroll_end", "Newest", show=False, id="log.end"),
    ]

    COMPONENT_CLASSES = {
        "message-log--time",
        "message-log--self",
        "message-log--day",
        "message-log--system",
        "message-log--pending",
        "message-log--failed",
        "message-log--sent",
        "message-log--mention",
        "message-log--selected",
    }

    DEFAULT_CSS = """
    MessageLog { background: $surface; overflow-x: hidden; scrollbar-gutter: stable; }
    MessageLog > .message-log--time { color: $text-muted; }
    MessageLog > .message-log--self { color: $text; text-style: bold; }
    MessageLog > .message-log--day { color: $text-muted; }
    MessageLog > .message-log--system { color: $text-muted; text-style: italic; }
    MessageLog > .message-log--pending { color: $warning; }
    MessageLog > .message-log--failed { color: $error; text-style: bold; }
    MessageLog > .message-log--sent { color: $success; }
    MessageLog > .message-log--mention { background: $warning 25%; text-style: bold; }
    MessageLog > .message-log--selected { background: $accent 35%; }
    """

    @dataclass
    class ReachedTop(Message):
        """The view nears the oldest loaded message and older history exists."""

        log: MessageLog
        """The log that wants older messages."""

    PREFETCH_SCREENS = 2
    """Ask for older history (:class:`ReachedTop`) when the view is this many
    screens or fewer from the top of what is loaded."""

    follow: reactive[bool] = reactive(True, init=False)
    """Keep the newest message in view as messages arrive (off while scrolled up)."""

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        """Create an empty log."""
        super().__init__(name=name, id=id)
        self._entries: list[_Entry] = []
        # First row of each entry, in a row space whose origin stays put when
        # older entries are put above (their rows are negative): prepending a
        # page touches only that page, never the entries already shown.
        self._starts: list[int] = []
        self._end = 0  # row after the last entry
        self._rows = 0
        # key -> sequence number; index in _entries = seq - _seq0.
        self._by_key: dict[str, int] = {}
        self._seq0 = 0
        self._wrap_width = 0
        self.has_older = False
        """Whether older history exists than what is loaded."""
        self._loading_older = False
        self._anchor: str | None = None
        self._anchor_centred = False
        self._cache: LRUCache[tuple[int, int], Strip] = LRUCache(256)

    # ------------------------------------------------------------------ data

    @property
    def message_count(self) -> int:
        """Number of messages (day separators not counted)."""
        return len(self._by_key)

    @property
    def row_count(self) -> int:
        """Number of rows the log occupies at the current width."""
        return self._rows

    def clear(self) -> None:
        """Remove every message."""
        self._anchor = None
        self.has_older = False
        self._loading_older = False
        self._reset()
        self._update_size()
        self.refresh()

    def _reset(self) -> None:
        self._entries.clear()
        self._starts.clear()
        self._by_key.clear()
        self._rows = 0
        self._end = 0
        self._seq0 = 0
        self._cache.clear()

    def _index(self, key: str) -> int | None:
        seq = self._by_key.get(key)
        return None if seq is None else seq - self._seq0

    def set_items(
        self, items: Iterable[LogItem], *, has_older: bool = False, anchor: str | None = None
    ) -> None:
        """Replace the contents with ``items`` (oldest first) and show the newest.

        ``has_older``: more history exists; reaching the top posts
        :class:`ReachedTop` so the app can :meth:`prepend_items`.
        ``anchor``: key of an item to show at the top instead (the "N new"
        marker of a backlog); when everything after it fits, the view is at
        the bottom anyway and follows new messages.
        """
        self._rebuild(list(items))
        self.has_older = has_older
        self._loading_older = False
        self._anchor = anchor if anchor in self._by_key else None
        self._anchor_centred = False
        if self._anchor is None:
            self.follow = True
            self.scroll_end(animate=False, immediate=True, force=True)
            self.scroll_end(animate=False, force=True)
        else:
            self.follow = False
            self._scroll_to_anchor()
            self.call_after_refresh(self._scroll_to_anchor)
        self.call_after_refresh(self._check_top)

    def _scroll_to_anchor(self) -> None:
        index = None if self._anchor is None else self._index(self._anchor)
        if index is None:
            return
        # Centred (a jump to a message), or one row of context above it (the
        # "N new" marker).
        above = self.size.height // 2 if self._anchor_centred else 1
        row = max(0, self._starts[index] - self._starts[0] - above)
        self.scroll_to(y=row, animate=False, immediate=True, force=True)

    def scroll_to_newest(self) -> None:
        """Show the newest message and follow new ones (after the user sends)."""
        self._anchor = None
        self.follow = True
        self.scroll_end(animate=False, immediate=True, force=True)

    def action_page_up(self) -> None:
        """Scroll one page towards older messages (at once: one frame, no animation)."""
        self._anchor = None
        if not self.allow_vertical_scroll:
            raise SkipAction()
        self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        """Scroll one page towards newer messages (at once: one frame, no animation)."""
        self._anchor = None
        if not self.allow_vertical_scroll:
            raise SkipAction()
        self.scroll_page_down(animate=False)

    def prepend_items(self, items: list[LogItem], *, has_older: bool) -> None:
        """Put older ``items`` above the current ones, keeping the view where it is.

        Only the new items are wrapped; the entries already shown are reused.
        """
        fresh = [i for i in items if i.key not in self._by_key]
        before = self._rows
        if fresh:
            page: list[_Entry] = []
            for item in fresh:
                day = item.time.date()
                if not page or page[-1].day != day:
                    sep = _Entry(None, day, ())
                    sep.lines = self._wrap(sep)
                    page.append(sep)
                entry = _Entry(item, day, ())
                entry.lines = self._wrap(entry)
                page.append(entry)
            shown = self._entries
            if shown and shown[0].item is None and shown[0].day == page[-1].day:
                # The same day continues: one separator.
                self._rows -= len(shown[0].lines)
                del shown[0]
                del self._starts[0]
                self._seq0 += 1
            top = self._starts[0] if self._starts else self._end
            starts: list[int] = []
            row = top - sum(len(e.lines) for e in page)
            for entry in page:
                starts.append(row)
                row += len(entry.lines)
            self._rows += top - starts[0]
            if not shown:
                self._end = top
            self._entries[:0] = page
            self._starts[:0] = starts
            self._seq0 -= len(page)
            for n, entry in enumerate(page):
                if entry.item is not None:
                    self._by_key[entry.item.key] = self._seq0 + n
            self._cache.clear()
            self._update_size()
            self.refresh()
        self.has_older = has_older
        self._loading_older = False
        if self.follow:
            # At the newest message (or about to be: set_items scrolls after
            # the next refresh): stay there.
            self.scroll_end(animate=False, immediate=True, force=True)
        else:
            self.scroll_to(
                y=self.scroll_y + (self._rows - before),
                animate=False,
                immediate=True,
                force=True,
            )
        self.call_after_refresh(self._check_top)

    def _rebuild(self, items: list[LogItem]) -> None:
        self._reset()
        for item in items:
            self._append(item)
        self._update_size()
        self.refresh()

    def add_item(self, item: LogItem) -> None:
        """Append ``item``, or update it in place if its key is already shown."""
        if item.key in self._by_key:
            self.update_item(item)
            return
        self._append(item)
        self._cache.clear()  # rows past the old end were cached blank
        self._update_size()
        if item.own:  # what the user just wrote is always shown
            self._anchor = None
            self.follow = True
        if self.follow:
            self.scroll_end(animate=False, force=True)
        self.refresh()

    def update_item(self, item: LogItem) -> None:
        """Replace the message with ``item.key`` (e.g. a new delivery state)."""
        index = self._index(item.key)
        if index is None:
            return
        entry = self._entries[index]
        entry.item = item
        new_lines = self._wrap(entry)
        if len(new_lines) == len(entry.lines):
            entry.lines = new_lines
            self._cache.clear()
            self.refresh()
            return
        entry.lines = new_lines
        self._relayout(from_index=index)

    def item(self, key: str) -> LogItem | None:
        """The message shown under ``key``."""
        index = self._index(key)
        return None if index is None else self._entries[index].item

    def scroll_to_key(self, key: str) -> bool:
        """Bring the message ``key`` to the middle of the view (False: not loaded)."""
        if self._index(key) is None:
            return False
        self._anchor, self._anchor_centred = key, True
        self.follow = False
        self._scroll_to_anchor()
        self.call_after_refresh(self._scroll_to_anchor)  # after a pending scroll_end
        return True

    def row_of(self, key: str) -> int | None:
        """The content row where the message ``key`` starts (None: not loaded)."""
        index = self._index(key)
        return None if index is None else self._starts[index] - self._starts[0]

    def set_mark(self, key: str, mark: DeliveryMark) -> None:
        """Change the delivery glyph of one message."""
        item = self.item(key)
        if item is not None and item.mark is not mark:
            self.update_item(replace(item, mark=mark))

    # ---------------------------------------------------------------- layout

    def _append(self, item: LogItem) -> None:
        day = item.time.date()
        if not self._entries or self._entries[-1].day != day:
            sep = _Entry(None, day, ())
            sep.lines = self._wrap(sep)
            self._push(sep)
        entry = _Entry(item, day, ())
        entry.lines = self._wrap(entry)
        self._by_key[item.key] = self._seq0 + len(self._entries)
        self._push(entry)

    def _push(self, entry: _Entry) -> None:
        self._starts.append(self._end)
        self._entries.append(entry)
        self._end += len(entry.lines)
        self._rows += len(entry.lines)

    def _body_width(self) -> int:
        return max(8, self._wrap_width - (_TIME_W + 3 + _SENDER_W + 1))

    def _wrap(self, entry: _Entry) -> tuple[str, ...]:
        if entry.item is None:
            return ("",)
        width = self._body_width() if self._wrap_width > 0 else 1_000_000
        return tuple(wrap_cells(entry.item.text, width))

    def _relayout(self, from_index: int = 0) -> None:
        base = self._starts[0] if self._starts else 0
        del self._starts[from_index:]
        row = (
            base if from_index == 0 else self._starts[-1] + len(self._entries[from_index - 1].lines)
        )
        for entry in self._entries[from_index:]:
            if from_index == 0:
                entry.lines = self._wrap(entry)
            self._starts.append(row)
            row += len(entry.lines)
        self._end = row
        self._rows = row - base
        self._cache.clear()
        self._update_size()
        self.refresh()

    def _update_size(self) -> None:
        self.virtual_size = Size(self._wrap_width, self._rows)

    def on_resize(self) -> None:
        """Re-wrap every entry when the width changes."""
        width = self.scrollable_content_region.width
        if width != self._wrap_width:
            at_end = self.follow
            self._wrap_width = width
            self._relayout()
            if self._anchor is not None:
                self._scroll_to_anchor()
            elif at_end:
                self.scroll_end(animate=False, force=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Follow new messages only at the bottom; ask for older ones at the top."""
        super().watch_scroll_y(old_value, new_value)
        self.follow = round(new_value) >= self.max_scroll_y
        self._check_top()

    def _check_top(self) -> None:
        """Ask for older history when the view nears the top (also when all of it fits).

        "Near" is within :attr:`PREFETCH_SCREENS` screens, so a page is
        usually loaded before someone paging up gets there.
        """
        if not self.has_older or self._loading_older or not self._rows:
            return
        if round(self.scroll_y) <= self.PREFETCH_SCREENS * max(1, self.size.height):
            self._loading_older = True
            self.post_message(self.ReachedTop(self))

    def older_request_dropped(self) -> None:
        """The app dropped the older page asked for: ask again when near the top."""
        self._loading_older = False
        self.call_after_refresh(self._check_top)

    # ---------------------------------------------------------------- render

    def render_line(self, y: int) -> Strip:
        """Render one visible row (Line API)."""
        row = round(self.scroll_offset.y) + y
        width = self.scrollable_content_region.width
        key = (row, width)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        strip = self._render_row(row, width)
        self._cache[key] = strip
        return strip

    def _entry_at(self, row: int) -> int:
        """Index of the entry on content row ``row`` (0: the top of the log)."""
        return bisect.bisect_right(self._starts, row + self._starts[0]) - 1

    def _render_row(self, row: int, width: int) -> Strip:
        base = self.rich_style
        if row >= self._rows or not self._entries:
            return Strip.blank(width, base)
        index = self._entry_at(row)
        entry = self._entries[index]
        line_no = row + self._starts[0] - self._starts[index]
        segments: list[Segment]
        if entry.item is None:
            label = f" {entry.day.strftime('%A %-d %B %Y')} "
            style = base + self.get_component_rich_style("message-log--day")
            side = max(0, (width - cell_len(label)) // 2)
            segments = [Segment("─" * side + label + "─" * width, style)]
        else:
            segments = self._message_segments(entry.item, entry.lines[line_no], line_no, base)
        return Strip(segments).adjust_cell_length(width, base).crop(0, width)

    def _message_segments(
        self, item: LogItem, body: str, line_no: int, base: Style
    ) -> list[Segment]:
        indent = " " * (_TIME_W + 3 + _SENDER_W + 1)
        if item.system:
            system = base + self.get_component_rich_style("message-log--system")
            if line_no:
                return [Segment(indent, base), Segment(body, system)]
            time_style = base + self.get_component_rich_style("message-log--time")
            pad = " " * (_SENDER_W - 1)
            return [
                Segment(item.time.strftime("%H:%M"), time_style),
                Segment(f"   {pad}* ", system),
                Segment(body, system),
            ]
        body_style = base
        if item.mention:
            body_style = base + self.get_component_rich_style("message-log--mention")
        if item.selected:
            body_style = body_style + self.get_component_rich_style("message-log--selected")
        if line_no:
            return [Segment(indent, base), Segment(body, body_style)]
        time_style = base + self.get_component_rich_style("message-log--time")
        mark_style = base + self._mark_style(item.mark)
        if item.own:
            name_style = base + self.get_component_rich_style("message-log--self")
        else:
            name_style = base + Style(color=sender_colour(item.sender), bold=True)
        name = item.sender
        if cell_len(name) > _SENDER_W:
            name = name[: _SENDER_W - 1] + "…"
        name = " " * (_SENDER_W - cell_len(name)) + name
        return [
            Segment(item.time.strftime("%H:%M"), time_style),
            Segment(" ", base),
            Segment(item.mark.value, mark_style),
            Segment(" ", base),
            Segment(name, name_style),
            Segment(" ", base),
            Segment(body, body_style),
        ]

    def _mark_style(self, mark: DeliveryMark) -> Style:
        if mark is DeliveryMark.PENDING:
            return self.get_component_rich_style("message-log--pending")
        if mark is DeliveryMark.FAILED:
            return self.get_component_rich_style("message-log--failed")
        if mark is DeliveryMark.SENT:
            return self.get_component_rich_style("message-log--sent")
        return Style()

    def notify_style_update(self) -> None:
        """Drop cached strips when the theme or CSS changes."""
        super().notify_style_update()
        self._cache.clear()
