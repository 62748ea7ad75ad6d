"""F1 and ``/help``: the slash commands, then every key binding with its id.

The id is the name to use in ``[tui.keys]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from tui.slash import SLASH_COMMANDS

__all__ = ["HelpScreen", "binding_rows"]


def binding_rows(
    sources: Iterable[tuple[str, Iterable[BindingType]]], keymap: Mapping[str, str]
) -> list[tuple[str, str, str, str]]:
    """``(where, keys, description, id)`` for every binding that has an id.

    ``keymap`` overrides the default keys the same way ``App.set_keymap`` does.
    """
    rows: list[tuple[str, str, str, str]] = []
    for where, bindings in sources:
        for binding in bindings:
            if not isinstance(binding, Binding) or not binding.id:
                continue
            keys = keymap.get(binding.id, binding.key)
            rows.append((where, keys.replace(",", " / "), binding.description, binding.id))
    return rows


class HelpScreen(ModalScreen[None]):
    """The slash commands and a table of keys; Escape or F1 closes it."""

    BINDINGS = [
        Binding("escape,f1,q", "close", "Close", id="help.close"),
    ]

    def __init__(self, rows: list[tuple[str, str, str, str]]) -> None:
        """Show ``rows`` from :func:`binding_rows`."""
        super().__init__()
        self._rows = rows

    def compose(self) -> ComposeResult:
        """Title, table, footnote."""
        with Vertical(id="help-box", classes="dialog-box"):
            yield Label("Commands (type in the composer; Tab completes)", classes="dialog-title")
            commands: DataTable[Text] = DataTable(
                cursor_type="row", zebra_stripes=True, id="help-commands"
            )
            commands.add_columns("command", "does")
            for command in SLASH_COMMANDS:
                # Text, not markup: "[user…]" is an argument, not a style.
                usage = Text(f"/{command.name} {command.usage}".rstrip())
                commands.add_row(usage, Text(command.help))
            yield commands
            yield Label("Keys", classes="dialog-title")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, id="help-keys")
            table.add_columns("where", "keys", "does", "id")
            for row in self._rows:
                table.add_row(*row)
            yield table
            yield Static(
                "Remap any key in config.toml under [tui.keys], e.g. "
                '"main.new_group" = "ctrl+g". Ctrl+P opens the command palette. '
                "//text sends a line that starts with a slash; @ + Tab completes a name.",
                classes="dialog-footnote",
            )

    def on_mount(self) -> None:
        """Focus the table so arrows scroll it."""
        self.query_one("#help-commands", DataTable).focus()

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
