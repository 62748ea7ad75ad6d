"""The multi-line message composer with per-session input history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from tui.slash import complete

__all__ = ["Composer"]

_MAX_HISTORY = 200


class Composer(TextArea):
    """Where messages are written.

    Enter sends; Ctrl+J inserts a newline (it survives SSH and tmux, unlike
    Shift+Enter; Alt+Enter works too where the terminal reports it). Up on
    the first line and Down on the last line walk through what was sent
    before, like a shell.
    """

    BINDINGS = [
        # Not a priority binding: those run before keys still queued for the
        # text area, so a fast typist (or tmux) would send half a message.
        Binding("enter", "submit", "Send", show=False, id="composer.send"),
        Binding("alt+enter,ctrl+j", "newline", "Newline", show=False, id="composer.newline"),
        Binding("ctrl+up", "history_prev", "Previous", show=False, id="composer.history_prev"),
        Binding("ctrl+down", "history_next", "Next", show=False, id="composer.history_next"),
        # PgUp/PgDn scroll the message log (the screen's action), not the cursor.
        Binding("pageup", "screen.log_page(-1)", "Older", show=False, id="composer.page_up"),
        Binding("pagedown", "screen.log_page(1)", "Newer", show=False, id="composer.page_down"),
        Binding("tab", "complete", "Complete", show=False, id="composer.complete"),
    ]

    DEFAULT_CSS = """
    Composer { height: auto; min-height: 3; max-height: 8; border: tall $border-blurred; }
    Composer:focus { border: tall $border; }
    """

    @dataclass
    class Submitted(Message):
        """The user pressed Enter with some text."""

        composer: Composer
        """The composer that was submitted."""
        text: str
        """What was written (never empty or only whitespace)."""

        @property
        def control(self) -> Composer:
            """The composer (for ``@on`` selectors)."""
            return self.composer

    def __init__(self, *, id: str | None = None, placeholder: str = "") -> None:
        """Create an empty composer."""
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            compact=True,
            placeholder=placeholder,
        )
        # A blinking cursor repaints twice a second: idle CPU and SSH traffic.
        self.cursor_blink = False
        self._history: list[str] = []
        self._history_pos: int | None = None
        self._draft = ""
        self.users: Callable[[], list[str]] = list
        """Names Tab completes (members of the open channel first); set by the screen."""
        self._cycle: tuple[int, tuple[str, ...], int, str] | None = None
        # (start offset, candidates, index shown, text before the cursor after it)

    @property
    def sent_history(self) -> list[str]:
        """What was sent from this composer, oldest first (a copy)."""
        return list(self._history)

    def action_submit(self) -> None:
        """Post :class:`Submitted` and clear, unless the text is blank."""
        text = self.text.strip("\n")
        if not text.strip():
            return
        if not self._history or self._history[-1] != text:
            self._history.append(text)
            del self._history[:-_MAX_HISTORY]
        self._history_pos = None
        self._draft = ""
        self.clear()
        self.post_message(self.Submitted(self, text))

    def action_complete(self) -> None:
        """Tab: complete the word before the cursor (again: the next candidate).

        With nothing to complete, Tab moves the focus on as elsewhere.
        """
        row, col = self.cursor_location
        before = self.get_text_range((0, 0), (row, col))
        cycle = self._cycle
        if cycle is not None and cycle[3] == before:
            start, candidates, index, _ = cycle
            index = (index + 1) % len(candidates)
        else:
            found = complete(before, self.users())
            if found is None:
                self._cycle = None
                self.screen.focus_next()
                return
            start, candidates, index = found.start, found.candidates, 0
        head = before[:start]
        start_loc = (head.count("\n"), start - (head.rfind("\n") + 1))
        self.replace(candidates[index], start_loc, (row, col))
        self._cycle = (start, candidates, index, head + candidates[index])

    def action_newline(self) -> None:
        """Insert a line break at the cursor."""
        self.insert("\n")

    def action_history_prev(self) -> None:
        """Show the previous entry of the history."""
        if not self._history:
            return
        if self._history_pos is None:
            self._draft = self.text
            self._history_pos = len(self._history)
        if self._history_pos > 0:
            self._history_pos -= 1
            self._show(self._history[self._history_pos])

    def action_history_next(self) -> None:
        """Show the next entry of the history, then the unsent draft."""
        if self._history_pos is None:
            return
        self._history_pos += 1
        if self._history_pos >= len(self._history):
            self._history_pos = None
            self._show(self._draft)
        else:
            self._show(self._history[self._history_pos])

    def _show(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)

    async def _on_paste(self, event: events.Paste) -> None:
        """A paste is inserted whole (newlines included), so it becomes one message.

        Terminals send CR or CRLF line ends in a bracketed paste; the composer
        keeps LF only.
        """
        event.stop()
        event.prevent_default()
        if self.read_only:
            return
        text = event.text.replace("\r\n", "\n").replace("\r", "\n")
        self._cycle = None
        if result := self._replace_via_keyboard(text, *self.selection):
            self.move_cursor(result.end_location)
            self.focus()

    async def _on_key(self, event: events.Key) -> None:
        if event.key != "tab":
            self._cycle = None
        active = self.screen.active_bindings.get(event.key)
        binding_id = "" if active is None else active.binding.id or ""
        if active is not None and active.node is self and binding_id.startswith("composer."):
            # One of our bindings (Enter sends): run it here, in key order,
            # instead of letting the text area insert the key.
            event.stop()
            event.prevent_default()
            await self.run_action(active.binding.action)
            return
        # Up/Down leave the text area only at its edges, so multi-line
        # editing keeps working and the history is one key away.
        if event.key == "up" and self.cursor_location[0] == 0:
            event.prevent_default()
            event.stop()
            self.action_history_prev()
            return
        last_line = self.cursor_location[0] == self.document.line_count - 1
        if event.key == "down" and last_line and self._history_pos is not None:
            event.prevent_default()
            event.stop()
            self.action_history_next()
            return
        await super()._on_key(event)
