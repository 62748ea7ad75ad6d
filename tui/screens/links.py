"""Ctrl+L / ``/links``: the links of the open channel, to copy or open.

Enter or ``c`` copies the highlighted link to the clipboard with OSC 52
(works through ssh and tmux with ``set-clipboard on``); ``o`` opens it in
the browser of the machine the client runs on (not offered when the client
runs on a host for someone connected over ssh: the browser would open there).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

__all__ = ["LinksScreen"]


class LinksScreen(ModalScreen[tuple[str, str] | None]):
    """Dismisses with ``("copy" | "open", url)`` or None."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="links.close"),
        Binding("c", "choose('copy')", "Copy", id="links.copy"),
        Binding("o", "choose('open')", "Open", id="links.open"),
    ]

    def __init__(self, urls: list[str], *, title: str, can_open: bool) -> None:
        """Offer ``urls`` (newest first)."""
        super().__init__()
        self.urls = urls
        self._title = title
        self._can_open = can_open

    def compose(self) -> ComposeResult:
        """Title, the links, what the keys do."""
        with Vertical(id="links-box", classes="dialog-box"):
            yield Label(self._title, classes="dialog-title")
            yield OptionList(*[Option(u, id=str(i)) for i, u in enumerate(self.urls)])
            keys = "Enter/c: copy (OSC 52)"
            keys += "   o: open in the browser" if self._can_open else ""
            yield Static(keys + "   Esc: close", classes="dialog-footnote")

    def on_mount(self) -> None:
        """Focus the list on the newest link."""
        options = self.query_one(OptionList)
        options.focus()
        options.highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter copies."""
        event.stop()
        self.action_choose("copy")

    def action_choose(self, what: str) -> None:
        """Copy or open the highlighted link."""
        index = self.query_one(OptionList).highlighted
        if index is None or not self.urls:
            return
        if what == "open" and not self._can_open:
            self.notify("Opening links is off on an ssh host: copy it instead.")
            return
        self.dismiss((what, self.urls[index]))

    def action_close(self) -> None:
        """Close."""
        self.dismiss(None)
