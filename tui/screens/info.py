"""The whoami / health / ping panes, as tabs of one modal screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import TabbedContent, TabPane

from tui.widgets.panes import HealthPane, PingPane, WhoAmIPane

__all__ = ["InfoScreen"]


class InfoScreen(ModalScreen[None]):
    """Tabs: whoami, health, ping. The app pushes data into the panes."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="info.close"),
        Binding("f2", "show('whoami')", "Whoami", id="info.whoami"),
        Binding("f3", "show('health')", "Health", id="info.health"),
        Binding("f4", "show('ping')", "Ping", id="info.ping"),
        Binding("r", "refresh_panes", "Refresh", id="info.refresh"),
    ]

    def __init__(self, tab: str = "whoami") -> None:
        """Open on ``tab`` (``whoami``, ``health`` or ``ping``)."""
        super().__init__()
        self._tab = tab

    def compose(self) -> ComposeResult:
        """Three tabs."""
        with Vertical(id="info-box", classes="dialog-box"), TabbedContent(initial=self._tab):
            with TabPane("whoami", id="whoami"):
                yield WhoAmIPane(id="whoami-pane")
            with TabPane("health", id="health"):
                yield HealthPane(id="health-pane")
            with TabPane("ping", id="ping"):
                yield PingPane(id="ping-pane")

    def action_show(self, tab: str) -> None:
        """Switch to ``tab``."""
        self.query_one(TabbedContent).active = tab

    async def action_refresh_panes(self) -> None:
        """Ask the app to fetch fresh data."""
        await self.app.run_action("refresh_info")

    def action_close(self) -> None:
        """Close the panes."""
        self.dismiss(None)
