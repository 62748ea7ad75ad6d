"""Ctrl+F / ``/search``: search the local history; Enter jumps to the message.

The screen shows results as the query is typed (each change cancels the
previous search). The app runs the search (:meth:`tui.client.api.ClientEngine.search`)
and calls :meth:`SearchScreen.show_results`; choosing a result dismisses the
screen with the message, and the app opens its channel scrolled to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message as TMessage
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui.client.api import Message
from tui.widgets.steady import steady_input

__all__ = ["SearchScreen"]


class SearchScreen(ModalScreen[Message | None]):
    """A query field over a list of matching messages, newest first."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="search.close"),
        Binding("down", "to_results", "Results", show=False, id="search.results"),
    ]

    @dataclass
    class Query(TMessage):
        """The user changed the query (the app searches and calls back)."""

        screen: SearchScreen
        text: str
        channel: str | None

    def __init__(
        self,
        *,
        query: str = "",
        channel: str | None = None,
        scope: str = "all channels",
        label: Callable[[str], str] = lambda c: c,
    ) -> None:
        """Search ``channel`` only (None: every channel); ``label`` names channels."""
        super().__init__()
        self._initial = query
        self.channel = channel
        self._scope = scope
        self._label = label
        self.results: list[Message] = []

    def compose(self) -> ComposeResult:
        """Title, query, results, status line."""
        with Vertical(id="search-box", classes="dialog-box"):
            yield Label(f"Search {self._scope}", classes="dialog-title")
            yield steady_input(
                value=self._initial, placeholder="words to find (any case)", id="query"
            )
            yield OptionList(id="results")
            yield Static("", id="search-status", classes="dialog-footnote")

    def on_mount(self) -> None:
        """Focus the query; search for a pre-filled one."""
        self.query_one(Input).focus()
        if self._initial.strip():
            self.post_message(self.Query(self, self._initial, self.channel))

    @on(Input.Changed, "#query")
    def _changed(self, event: Input.Changed) -> None:
        if event.value.strip():
            self.post_message(self.Query(self, event.value, self.channel))
        else:
            self.show_results(event.value, [])

    @on(Input.Submitted, "#query")
    def _submitted(self) -> None:
        results = self.query_one(OptionList)
        if self.results:
            results.focus()
            results.highlighted = 0

    def show_results(self, query: str, found: list[Message]) -> None:
        """Show ``found`` for ``query`` (ignored when the query changed since)."""
        if query != self.query_one(Input).value:
            return
        self.results = list(found)
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options([Option(self._line(m), id=str(i)) for i, m in enumerate(found)])
        status = self.query_one("#search-status", Static)
        if not query.strip():
            status.update("Type to search. Enter: to the results; Enter on one: jump to it.")
        else:
            n = len(found)
            status.update(f"{n} match{'es' if n != 1 else ''}" if n else "No matches.")

    def _line(self, m: Message) -> Text:
        when = datetime.fromtimestamp(m.time).strftime("%Y-%m-%d %H:%M")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(when + "  ", "dim")
        text.append(f"{self._label(m.channel)} ", "bold")
        text.append(f"{m.sender}: ", "bold")
        text.append(m.text.replace("\n", " ⏎ "))
        return text

    def action_to_results(self) -> None:
        """Down from the query goes to the results."""
        if self.results:
            self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected, "#results")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.dismiss(self.results[int(event.option.id)])

    def action_close(self) -> None:
        """Close without jumping."""
        self.dismiss(None)
