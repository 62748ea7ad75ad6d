"""Linked devices in the TUI: link a device (F9, /link, palette), link with a code, devices view."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import Button, Input, OptionList, Static

from tests.tui.conftest import Recorder, settle
from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp
from tui.client.linking import LinkFailed
from tui.screens.devices import DevicesScreen, LinkCodeDialog, LinkScreen
from tui.screens.dialogs import ConfirmDialog
from tui.screens.main import MainScreen
from tui.screens.welcome import WelcomeScreen

AppFactory = Callable[..., QpcApp]
NEW = "e7" * 32


def _text(screen: LinkScreen, widget_id: str) -> str:
    return str(screen.query_one(widget_id, Static).render())


async def _until(pilot: Pilot[None], ready: Callable[[], bool]) -> None:
    """Pump the app until ``ready()`` (no timing: bounded by event turns)."""
    for _ in range(200):
        if ready():
            return
        await pilot.pause()
    raise AssertionError("condition never became true")


async def test_f9_shows_code_progress_and_channels(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        engine.link_gate.clear()
        await pilot.press("f9")
        screen = app.screen
        assert isinstance(screen, LinkScreen)
        await asyncio.wait_for(engine.link_waiting.wait(), 5)
        await pilot.pause()
        assert "01234-56789" in _text(screen, "#link-code")
        assert "Waiting for the new device" in _text(screen, "#link-status")
        assert ("link_wait", (300.0, False)) in engine.calls  # the app's subscription pumps
        assert engine.link_arrival is not None
        engine.link_arrival.set_result(NEW)
        await _until(pilot, lambda: "proved the code" in _text(screen, "#link-status"))
        assert NEW[:16] in _text(screen, "#link-status")
        engine.link_gate.set()
        await settle(app, pilot)
        status = _text(screen, "#link-status")
        assert "added it to 3 channel(s)" in status
        assert "#general" in status and "#random" in status
        assert screen.linked and str(screen.query_one("#link-close", Button).label) == "Close"
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)


async def test_escape_cancels_the_offer(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f9")
        await asyncio.wait_for(engine.link_waiting.wait(), 5)
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert engine.link_cancelled


async def test_link_failure_is_shown(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.action_link_device()  # the palette's "devices: link"
        await asyncio.wait_for(engine.link_waiting.wait(), 5)
        screen = app.screen
        assert isinstance(screen, LinkScreen) and engine.link_arrival is not None
        engine.link_arrival.set_exception(LinkFailed("too many attempts"))
        await settle(app, pilot)
        assert "too many attempts" in _text(screen, "#link-error")
        assert screen.done and not screen.linked


async def test_slash_link_with_a_code_joins(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await pilot.press(*"/link 12", "enter")  # too short: the code dialog says why
        await settle(app, pilot)
        dialog = app.screen
        assert isinstance(dialog, LinkCodeDialog)
        assert "10 digits" in str(dialog.query_one("#dialog-error", Static).render())
        dialog.query_one("#dialog-input", Input).value = "98765 43210"
        await pilot.press("enter")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, LinkScreen)
        assert ("link_join", ("98765 43210", False)) in engine.calls
        assert "Linked to device e7e7" not in _text(screen, "#link-status")
        assert ("e1" * 8) in _text(screen, "#link-status")


async def test_welcome_link_logs_in_then_asks_for_the_code(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    factory = FakeFactory(engine, resume=False)
    app = app_factory(factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        for field, value in (("user", "alice"), ("password", "pw"), ("passphrase", "pp")):
            welcome.query_one(f"#{field}", Input).value = value
        await pilot.click("#link")
        await settle(app, pilot)
        assert ("login", ("alice",)) in engine.calls
        assert factory.forms[-1].link
        dialog = app.screen
        assert isinstance(dialog, LinkCodeDialog)
        await pilot.press(*"01234-56789", "enter")
        await settle(app, pilot)
        assert ("link_join", ("01234-56789", False)) in engine.calls
        assert isinstance(app.screen, LinkScreen)


async def test_devices_view_unlink_confirms_with_cancel_focused(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(120, 30), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await pilot.press("f7")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, DevicesScreen)
        rows = screen.query_one(OptionList)
        assert rows.option_count == 2
        assert "this device" in str(rows.get_option_at_index(0).prompt)
        await pilot.press("u")  # this device: refused, nothing asked
        await pilot.pause()
        assert app.screen is screen
        assert ("information", "This is the device you are using: unlink it from another one.") in (
            recorder.notifications()
        )
        await pilot.press("down", "u")
        await pilot.pause()
        confirm = app.screen
        assert isinstance(confirm, ConfirmDialog)
        assert app.focused is confirm.query_one("#cancel", Button)
        await pilot.press("enter")  # the default is the safe choice
        await settle(app, pilot)
        assert app.screen is screen
        assert not [c for c in engine.calls if c[0] == "unlink"]
        await pilot.press("delete")
        await pilot.pause()
        await pilot.click("#ok")
        await settle(app, pilot)
        assert ("unlink", ("c2" * 32,)) in engine.calls
        assert screen.query_one(OptionList).option_count == 1
        assert any("Unlinked device c2c2" in text for _, text in recorder.notifications())


async def test_slash_devices_and_palette_entries(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    from tui.commands import COMMANDS

    actions = {c.action for c in COMMANDS}
    assert {"link_device", "link_join", "devices"} <= actions
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press(*"/devices", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, DevicesScreen)
        await pilot.press("l")  # link from the devices view
        await asyncio.wait_for(engine.link_waiting.wait(), 5)
        assert isinstance(app.screen, LinkScreen)
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, DevicesScreen)


async def test_verify_keys_names_the_device_that_linked_one(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    from proto.crypto.identity import fingerprint
    from tui.screens.dialogs import KeyCheckDialog

    engine.linked.add("bob")
    engine.verified.add("bob")
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f6", *"bob", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, KeyCheckDialog)
        blocks = [str(s.render()) for s in app.screen.query(".safety-number")]
        assert len(blocks) == 2
        assert "linked by" not in blocks[0]
        assert f"linked by bob's device {fingerprint(bytes.fromhex('ab' * 32))}" in blocks[1]
        assert "verified" in blocks[1] and "unverified" not in blocks[1]
