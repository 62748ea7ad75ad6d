"""Fixtures for the TUI tests: a fake engine, a recorder of posted messages, settling."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget

from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp, make_app
from tui.client.api import ChannelInfo
from tui.screens.main import MainScreen
from tui.settings import TuiSettings


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times in the log are local: fix the zone so screens look the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class Recorder:
    """Collects every message the app posts (``run_test(message_hook=...)``)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def of(self, kind: type[Message]) -> list[Message]:
        """Messages of one class, in order."""
        return [m for m in self.messages if isinstance(m, kind)]

    def notifications(self) -> list[tuple[str, str]]:
        """(severity, text) of every notification posted."""
        return [
            (m.notification.severity, m.notification.message)
            for m in self.messages
            if isinstance(m, Notify)
        ]


def current(app: QpcApp) -> Screen[Any]:
    """The active screen (a call, so mypy does not carry narrowing across key presses)."""
    return app.screen


def main_screen(app: QpcApp) -> MainScreen:
    """The active screen, which must be the main screen."""
    assert isinstance(app.screen, MainScreen)
    return app.screen


def shown(widget: Widget) -> bool:
    """Whether ``widget`` is displayed (a call, for the same reason)."""
    return widget.display


async def settle(app: QpcApp, pilot: Pilot[None]) -> None:
    """Wait for every worker except the endless event subscription, then repaint.

    Workers can start others (open a channel after creating it), so this
    loops until nothing is left running.
    """
    for _ in range(10):
        pending = [w for w in app.workers if w.group != "events" and not w.is_finished]
        if not pending:
            await pilot.pause()
            pending = [w for w in app.workers if w.group != "events" and not w.is_finished]
            if not pending:
                return
        else:
            await app.workers.wait_for_complete(pending)
        await pilot.pause()


def populated_engine() -> tuple[FakeEngine, ChannelInfo, ChannelInfo]:
    """alice in #general (with history) and #random, plus a DM with bob."""
    from tui.client.api import ChannelKind

    engine = FakeEngine()
    general = engine.add_channel("general", ("bob", "carol"))
    texts = [
        ("bob", "morning! did the new node come up?"),
        ("carol", "yes, health says ok, uptime 2h"),
        ("alice", "great, I'll invite dave later"),
        ("bob", "the ping pane shows about half a millisecond to it"),
        (
            "carol",
            "a longer message that has to wrap across more than one line of the log "
            "so that the continuation indent is visible in the screenshot",
        ),
    ]
    for sender, text in texts:
        engine.add_message(general.id, sender, text)
    engine.clear_unread(general.id)  # read in an earlier session
    random = engine.add_channel("random", ("bob",), activity_ms=engine.now_ms - 86_400_000)
    engine.add_channel("bob", ("bob",), kind=ChannelKind.DM, activity_ms=engine.now_ms - 60_000)
    return engine, general, random


@pytest.fixture
def engine() -> FakeEngine:
    """An engine with a few channels."""
    return populated_engine()[0]


@pytest.fixture
def recorder() -> Recorder:
    """Collects posted messages."""
    return Recorder()


@pytest.fixture
def app_factory() -> Callable[..., QpcApp]:
    """Build an app around a fake factory (pings off so nothing ticks)."""

    def build(factory: FakeFactory, **settings: object) -> QpcApp:
        options: dict[str, object] = {"ping_interval_s": 0.0, **settings}
        app = make_app(factory, TuiSettings(**options))  # type: ignore[arg-type]
        fake = factory.engine
        app.wall_clock_ms = lambda: fake.now_ms  # the fake engine's clock: not backlog
        return app

    return build


async def wait_for_alerts(app: QpcApp, pilot: Pilot[None]) -> None:
    """Wait until the coalesced toasts and bell of the last burst have gone out."""
    for _ in range(100):
        if not app._alert_scheduled:
            return
        await pilot.pause(0.05)
    raise AssertionError("alerts were never flushed")
