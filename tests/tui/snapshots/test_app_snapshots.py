"""Snapshots of the main screens at 80x24 and 120x40 (a mismatch fails).

Update after an intended change with ``pytest tests/tui/snapshots --snapshot-update``
and review the SVGs in ``__snapshots__``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.tui.conftest import populated_engine, settle
from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp, make_app
from tui.client.api import ConnectionState
from tui.settings import TuiSettings
from tui.widgets.status_bar import StatusBar

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
Snap = Callable[..., bool]


def _app(engine: FakeEngine | None = None, *, resume: bool = True) -> QpcApp:
    engine = engine or populated_engine()[0]
    return make_app(FakeFactory(engine, resume=resume), TuiSettings(ping_interval_s=0))


def _then(*keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, QpcApp)
        await settle(app, pilot)
        if keys:
            await pilot.press(*keys)
            await settle(app, pilot)

    return run


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_then())


@pytest.mark.parametrize("size", SIZES)
def test_main_screen_with_members_and_unread(
    snap_compare: Snap, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the "reconnecting in 7s" countdown must not tick while a loaded box renders
    monkeypatch.setattr(StatusBar, "clock", staticmethod(lambda: 1000.0))
    engine, _general, random = populated_engine()
    earlier = engine.now_ms - 3_600_000  # older than #general's news: #general stays open
    engine.add_message(random.id, "bob", "unread one", time_ms=earlier)
    engine.add_message(random.id, "bob", "unread two", time_ms=earlier + 1000)
    engine.state = ConnectionState.reconnecting(7, outbox_count=2)

    async def run(pilot: Pilot[Any]) -> None:
        await _then("f5")(pilot)

    assert snap_compare(_app(engine), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_welcome_screen(snap_compare: Snap, size: tuple[int, int]) -> None:
    async def run(pilot: Pilot[Any]) -> None:
        await _then()(pilot)
        pilot.app.screen.query_one("#user", Input).value = "alice"

    assert snap_compare(_app(resume=False), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_then("f1"))


@pytest.mark.parametrize("size", SIZES)
def test_whoami_pane(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_then("f2"))


@pytest.mark.parametrize("size", SIZES)
def test_new_group_dialog(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_then("ctrl+n", *"friends"))


@pytest.mark.parametrize("size", SIZES)
def test_empty_main_screen(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(_app(FakeEngine()), terminal_size=size, run_before=_then())
