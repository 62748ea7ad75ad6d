"""The connection status line: connected / reconnecting in Ns / offline."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from rich.text import Text
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget

from tui.client.api import ConnectionState, ConnectionStatus

__all__ = ["StatusBar", "describe_connection"]


def describe_connection(state: ConnectionState, retry_left_s: float | None = None) -> str:
    """The words the status bar shows for ``state``."""
    outbox = f" · {state.outbox_count} queued" if state.outbox_count else ""
    if state.status is ConnectionStatus.CONNECTED:
        return f"● connected{outbox}"
    if state.status is ConnectionStatus.RECONNECTING:
        left = state.retry_in_s if retry_left_s is None else retry_left_s
        if left < 0.5:
            return f"◌ reconnecting…{outbox}"
        return f"◌ reconnecting in {math.ceil(left)}s{outbox}"
    return f"○ offline · {state.outbox_count} queued"


class StatusBar(Widget):
    """One line: who and where on the left, connection state on the right.

    While reconnecting, a one-second timer counts down; otherwise nothing
    ticks, so an idle screen costs no CPU.
    """

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; }
    StatusBar.-connected .status-bar--state { color: $success; }
    StatusBar > .status-bar--ok { color: $success; }
    StatusBar > .status-bar--warn { color: $warning; }
    StatusBar > .status-bar--bad { color: $error; }
    """

    COMPONENT_CLASSES = {"status-bar--ok", "status-bar--warn", "status-bar--bad"}

    clock: Callable[[], float] = staticmethod(time.monotonic)
    """The countdown's clock (tests freeze it so a snapshot cannot depend on load)."""

    state: reactive[ConnectionState] = reactive(
        ConnectionState(status=ConnectionStatus.OFFLINE), layout=False
    )
    """Connection state from the engine."""
    title: reactive[str] = reactive("")
    """Left-hand text (user, server, open channel)."""

    def __init__(self, *, id: str | None = None) -> None:
        """Create the bar (offline until told otherwise)."""
        super().__init__(id=id)
        self._deadline = 0.0
        self._timer: Timer | None = None

    @property
    def state_text(self) -> str:
        """What the right-hand side currently says."""
        return describe_connection(self.state, self._retry_left())

    def _retry_left(self) -> float | None:
        if self.state.status is not ConnectionStatus.RECONNECTING:
            return None
        return max(0.0, self._deadline - self.clock())

    def watch_state(self, state: ConnectionState) -> None:
        """Start or stop the countdown."""
        if state.status is ConnectionStatus.RECONNECTING:
            self._deadline = self.clock() + state.retry_in_s
            if self._timer is None:
                self._timer = self.set_interval(1.0, self.refresh)
        elif self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.refresh()

    def render(self) -> Text:
        """Title on the left, connection state on the right."""
        right = self.state_text
        if self.state.status is ConnectionStatus.CONNECTED:
            cls = "status-bar--ok"
        elif self.state.status is ConnectionStatus.RECONNECTING:
            cls = "status-bar--warn"
        else:
            cls = "status-bar--bad"
        style = self.get_component_rich_style(cls, partial=True)
        width = self.size.width
        left = Text(f" {self.title}", no_wrap=True, overflow="ellipsis")
        room = max(0, width - len(right) - 2)
        left.truncate(room, overflow="ellipsis", pad=True)
        text = Text.assemble(left, (right + " ", style))
        text.no_wrap = True
        return text
