"""``qpc``: the command-line client (scripts the client engine without the TUI)."""

from tui.cli.main import main

__all__ = ["main"]
