"""The whoami, health and ping panes."""

from __future__ import annotations

import statistics
from collections import deque

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Sparkline, Static

from tui.client.api import Health, PingResult, WhoAmI

__all__ = ["HealthPane", "PingPane", "WhoAmIPane", "format_uptime", "group_hex"]


def group_hex(value: str, size: int = 4) -> str:
    """``abcd1234...`` -> ``abcd 1234 ...`` for reading aloud."""
    return " ".join(value[i : i + size] for i in range(0, len(value), size))


def format_uptime(ms: int) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``, ``12s``."""
    s = max(0, ms // 1000)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


def _kv(rows: list[tuple[str, str | Text]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table


class WhoAmIPane(Static):
    """User, device fingerprint, KeyPackage stock, server and its pinned key."""

    whoami: reactive[WhoAmI | None] = reactive(None)
    """What the engine reported (``None`` until asked)."""

    def render(self) -> Table | Text:
        """A key/value table."""
        who = self.whoami
        if who is None:
            return Text("Asking the engine…", "dim")
        if who.key_stock is None:
            stock: str | Text = Text("unknown", "dim")
        else:
            last = "yes" if who.key_stock.has_last_resort else "MISSING"
            stock = f"{who.key_stock.count} one-time, last resort {last}"
        return _kv(
            [
                ("user", who.user),
                ("device", who.device_fingerprint or group_hex(who.device[:32])),
                ("keypackages", stock),
                ("server", who.server),
                ("server key", group_hex(who.server_fingerprint)),
                ("registered", "yes" if who.device_registered else "no"),
            ]
        )


class HealthPane(Static):
    """Node status, version, uptime, store backend and the last error seen."""

    health: reactive[Health | None] = reactive(None)
    """The node's last health report."""
    last_error: reactive[str] = reactive("")
    """The last user-facing error (empty when none)."""

    def render(self) -> Table | Text:
        """A key/value table."""
        health = self.health
        rows: list[tuple[str, str | Text]] = []
        if health is None:
            rows.append(("status", Text("unknown", "dim")))
        else:
            status = Text(health.status, "bold green" if health.status == "ok" else "bold red")
            rows += [
                ("status", status),
                ("version", health.version),
                ("uptime", format_uptime(health.uptime_ms)),
                ("store", health.store_backend),
            ]
            if health.server:
                rows.append(("server", health.server))
        rows.append(("last error", self.last_error or Text("none", "dim")))
        return _kv(rows)


class PingPane(Vertical):
    """A live round-trip sparkline with min/median/max."""

    DEFAULT_CSS = """
    PingPane { height: auto; }
    PingPane Sparkline { height: 3; margin: 1 0; }
    """

    HISTORY = 60
    """Samples kept for the sparkline."""

    def __init__(self, *, id: str | None = None) -> None:
        """Create an empty pane."""
        super().__init__(id=id)
        self._samples: deque[float] = deque(maxlen=self.HISTORY)

    def compose(self) -> ComposeResult:
        """Sparkline above, numbers below."""
        yield Sparkline([], summary_function=max)
        yield Static(Text("no pings yet", "dim"), id="ping-stats")

    @property
    def samples(self) -> list[float]:
        """Round trips kept, oldest first (ms)."""
        return list(self._samples)

    def add_result(self, result: PingResult) -> None:
        """Append the round trips of ``result`` and redraw."""
        self._samples.extend(result.rtts_ms)
        if not self._samples:
            return
        data = list(self._samples)
        self.query_one(Sparkline).data = data
        stats = (
            f"min {min(data):.2f} ms   median {statistics.median(data):.2f} ms   "
            f"max {max(data):.2f} ms   ({len(data)} samples)"
        )
        self.query_one("#ping-stats", Static).update(stats)
