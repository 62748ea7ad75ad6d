"""Errors reach the user as one-line notifications, never as tracebacks."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from textual.widgets import Input, Static

from proto.errors import (
    ConnectionLost,
    FingerprintMismatch,
    LoginFailed,
    NotFound,
    QueueFull,
    RateLimited,
    WrongPassphrase,
)
from tests.tui.conftest import Recorder, settle
from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp
from tui.client.api import SecurityWarning
from tui.screens.main import MainScreen
from tui.screens.welcome import WelcomeScreen
from tui.userfacing import describe_error
from tui.widgets.panes import HealthPane
from tui.widgets.status_bar import StatusBar

AppFactory = Callable[..., QpcApp]


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (WrongPassphrase("x"), "Wrong passphrase for this profile."),
        (LoginFailed("bad"), "Wrong username or password."),
        (QueueFull(""), "The recipient's inbox is full; try again later."),
        (NotFound("user not found: dave"), "User not found: dave."),
        (NotFound(""), "Not found: check the user or channel name."),
        (RateLimited("", retry_after_ms=2500), "Slow down: try again in 2 s."),
        (
            FingerprintMismatch("aa", "bb"),
            "The server's key changed since you last connected. Not connecting.",
        ),
        (
            ConnectionLost("x"),
            "Cannot reach the server (is it running, and is the address right?).",
        ),
        (
            ConnectionRefusedError(111, "refused"),
            "Cannot reach the server (is it running, and is the address right?).",
        ),
        (RuntimeError("internal detail"), "Something went wrong (details are in the log file)."),
    ],
)
def test_describe_error(error: BaseException, text: str) -> None:
    assert describe_error(error) == text


async def test_failed_send_is_a_notification(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    engine.fail["send"] = QueueFull("inbox full")
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await pilot.press(*"hi", "enter")
        await settle(app, pilot)
        assert ("error", "The recipient's inbox is full; try again later.") in (
            recorder.notifications()
        )
        assert isinstance(app.screen, MainScreen)  # still running, nothing crashed


async def test_unexpected_error_shows_no_traceback(
    engine: FakeEngine,
    app_factory: AppFactory,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine.fail["create_group"] = RuntimeError("secret internal state")
    app = app_factory(FakeFactory(engine))
    with caplog.at_level(logging.ERROR, logger="tui"):
        async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
            await settle(app, pilot)
            await pilot.press("ctrl+n", *"x", "enter")
            await settle(app, pilot)
            # The form comes back with the error in it.
            error = str(app.screen.query_one("#dialog-error", Static).render())
            assert error == "Something went wrong (details are in the log file)."
            shown = recorder.notifications()
            assert not any("secret" in text or "Traceback" in text for _, text in shown)
            # The health pane remembers the last error.
            await pilot.press("escape", "f3")
            await settle(app, pilot)
            pane = app.screen.query_one(HealthPane)
            assert (
                pane.last_error
                == "create group: Something went wrong (details are in the log file)."
            )
    # The traceback goes to the log file instead.
    assert any(r.exc_info for r in caplog.records)


async def test_wrong_password_on_welcome(engine: FakeEngine, app_factory: AppFactory) -> None:
    engine.fail["login"] = LoginFailed("")
    app = app_factory(FakeFactory(engine, resume=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        welcome.query_one("#user", Input).value = "alice"
        welcome.query_one("#password", Input).value = "nope"
        welcome.query_one("#passphrase", Input).value = "pp"
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert str(welcome.query_one("#welcome-error", Static).render()) == (
            "Wrong username or password."
        )
        assert not welcome.busy
        assert engine.closed  # the half-open engine was closed


async def test_unreachable_server_on_welcome(engine: FakeEngine, app_factory: AppFactory) -> None:
    factory = FakeFactory(engine, resume=False)
    factory.probe_error = ConnectionLost("timeout")
    app = app_factory(factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        for field, value in (("user", "a"), ("password", "b"), ("passphrase", "c")):
            welcome.query_one(f"#{field}", Input).value = value
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert "Cannot reach the server" in str(
            welcome.query_one("#welcome-error", Static).render()
        )


async def test_subscription_failure_goes_offline(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    engine.fail["events"] = ConnectionLost("gone")
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await app.workers.wait_for_complete([w for w in app.workers if w.group == "events"])
        await pilot.pause()
        bar = app.screen.query_one(StatusBar)
        assert bar.state_text == "○ offline · 0 queued"
        # The status bar says it; no notification on top (it would repeat on every retry).
        assert recorder.notifications() == []
        assert app.last_error == "events: " + describe_error(ConnectionLost(""))


async def test_security_warning_is_loud(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await engine.emit(SecurityWarning(reason="bob's device key changed", user="bob"))
        await settle(app, pilot)
        assert ("error", "bob's device key changed (bob)") in recorder.notifications()


async def test_actions_need_a_channel(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    empty = FakeEngine()
    app = app_factory(FakeFactory(empty))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        assert isinstance(app.screen, MainScreen)
        assert ("warning", "Open a channel first.") in recorder.notifications()


async def test_wrong_passphrase_focuses_the_passphrase(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    engine.fail["login"] = WrongPassphrase("")
    app = app_factory(FakeFactory(engine, resume=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        for field, value in (("user", "a"), ("password", "b"), ("passphrase", "c")):
            welcome.query_one(f"#{field}", Input).value = value
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert str(welcome.query_one("#welcome-error", Static).render()) == (
            "Wrong passphrase for this profile."
        )
        assert app.focused is welcome.query_one("#passphrase", Input)
        await pilot.press("d")  # the old passphrase is selected: typing replaces it
        assert welcome.query_one("#passphrase", Input).value == "d"


async def test_rate_limited_register_counts_down_and_retries(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    """The node says "slow down": the welcome screen counts down, then the retry logs in."""
    engine.rate_limit_waits = [3.0]
    app = app_factory(FakeFactory(engine, resume=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        welcome.query_one("#user", Input).value = "alice"
        welcome.query_one("#password", Input).value = "pw"
        welcome.query_one("#passphrase", Input).value = "pp"
        await pilot.press("ctrl+r")
        await engine.rate_limit_waiting.wait()
        await pilot.pause()
        text = str(welcome.query_one("#welcome-wait", Static).render())
        assert "retrying in 3 s" in text
        assert welcome.busy and not isinstance(app.screen, MainScreen)
        engine.rate_limit_gate.set()
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert ("register", ("alice",)) in engine.calls


async def test_unknown_user_on_the_local_node_says_how_to_share_it(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    """Two HOMEs on one machine each get a node: the TUI says how to use one."""
    engine.embedded = True
    engine.fail["invite"] = NotFound("user not found: bob")
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+t")
        await settle(app, pilot)
        await pilot.press(*"bob", "enter")
        await settle(app, pilot)
        # The invite dialog comes back with the error and the hint in it.
        shown = str(app.screen.query_one("#dialog-error", Static).render())
        address = engine.server_info().address
        assert shown.startswith("User not found: bob."), shown
        assert f"qpc --server {address}" in shown.replace("\n", ""), shown
