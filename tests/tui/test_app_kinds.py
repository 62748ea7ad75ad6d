"""Replies, reactions, edits, deletes, topic, typing and read receipts in the TUI
(fake engine: UI logic only; the real flows run in tests/e2e/test_cli_kinds.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input, Label, Static

from tests.tui.conftest import main_screen, populated_engine, settle, shown
from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp
from tui.client.api import MessageReceived, ReceiptsChanged, TypingChanged
from tui.kinds_view import message_text, seen_by, typing_text
from tui.screens.dialogs import ConfirmDialog, ReactDialog
from tui.widgets.composer import Composer
from tui.widgets.message_log import MessageLog

AppFactory = Callable[..., QpcApp]
SHOTS = os.environ.get("QPC_SCREENSHOTS")
"""A directory: save an SVG screenshot of each feature there (docs/screenshots)."""


def _shot(app: QpcApp, name: str) -> None:
    if SHOTS:
        app.save_screenshot(filename=f"{name}.svg", path=str(Path(SHOTS)))


def _log_text(app: QpcApp, key: int) -> str:
    item = main_screen(app).query_one(MessageLog).item(str(key))
    assert item is not None
    return item.text


async def _type(pilot: Pilot[None], text: str) -> None:
    for ch in text:
        await pilot.press(ch if ch != " " else "space")


async def _pick(app: QpcApp, pilot: Pilot[None], emoji: str) -> None:
    assert isinstance(app.screen, ReactDialog)
    app.screen.query_one(Input).value = emoji
    await pilot.press("enter")


def _setup() -> tuple[FakeEngine, str]:
    engine, general, _ = populated_engine()
    return engine, general.id


async def test_reply_quotes_the_parent_and_jumps_to_it(app_factory: AppFactory) -> None:
    engine, channel = _setup()
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        parent = engine._messages[channel][0]  # bob: morning! ...
        for _ in range(4):
            await pilot.press("alt+left")
        assert main.selected == parent.id + 1
        await pilot.press("alt+left")
        assert main.selected == parent.id
        log = main.query_one(MessageLog)
        assert log.item(str(parent.id)).selected  # type: ignore[union-attr]
        assert not log.item(str(parent.id + 1)).selected  # type: ignore[union-attr]
        assert "bob: morning!" in str(main.query_one("#selection", Static).render())
        await pilot.press("alt+r")
        assert main.composing == ("reply", parent)
        await _type(pilot, "yes it did")
        await pilot.press("enter")
        await settle(app, pilot)
        sent = engine._messages[channel][-1]
        assert (sent.text, sent.reply_to) == ("yes it did", parent.msg_id)
        assert _log_text(app, sent.id) == "↳ bob: morning! did the new node come up?\nyes it did"
        assert main_screen(app).composing is None
        _shot(app, "reply")
        main.select(sent.id)
        await pilot.press("alt+p")
        assert main.selected == parent.id


async def test_reactions_count_highlight_and_toggle(app_factory: AppFactory) -> None:
    engine, channel = _setup()
    target = engine._messages[channel][1]
    engine.react_as(channel, target.msg_id, "👍", "bob", remove=False)
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert _log_text(app, target.id).endswith("👍 1")
        main.select(target.id)
        await pilot.press("alt+m")
        assert isinstance(app.screen, ReactDialog)
        await _pick(app, pilot, "👍")
        await settle(app, pilot)
        assert _log_text(app, target.id).endswith("[👍 2]")  # ours: highlighted
        # another member's reaction arrives as an event
        engine.react_as(channel, target.msg_id, "🎉", "carol", remove=False)
        await settle(app, pilot)
        assert _log_text(app, target.id).endswith("[👍 2]  🎉 1")
        _shot(app, "reactions")
        # choosing our emoji again takes it back
        await pilot.press("alt+m")
        await _pick(app, pilot, "👍")
        await settle(app, pilot)
        assert _log_text(app, target.id).endswith("👍 1  🎉 1")
        assert engine.calls[-1] == ("react", (channel, target.msg_id, "👍", True))


async def test_edit_and_delete_only_our_own(app_factory: AppFactory) -> None:
    engine, channel = _setup()
    ours = engine._messages[channel][2]  # alice: great, I'll invite dave later
    theirs = engine._messages[channel][3]
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        main.select(theirs.id)
        await pilot.press("alt+e")
        assert main_screen(app).composing is None  # not ours: refused with a hint
        main.select(ours.id)
        await pilot.press("alt+e")
        composer = main.query_one(Composer)
        assert main_screen(app).composing == ("edit", ours) and composer.text == ours.text
        composer.text = "great, I'll invite dave now"
        await pilot.press("enter")
        await settle(app, pilot)
        assert _log_text(app, ours.id) == "great, I'll invite dave now (edited)"
        _shot(app, "edit")
        await pilot.press("alt+x")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")
        await settle(app, pilot)
        assert _log_text(app, ours.id) == "(message deleted)"
        assert engine._messages[channel][2].text == ""
        _shot(app, "delete")


async def test_topic_typing_and_seen_by(app_factory: AppFactory) -> None:
    engine, channel = _setup()
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        await engine.set_topic(channel, "release on Friday")
        await settle(app, pilot)
        title = str(main.query_one("#channel-title", Label).render())
        assert title.endswith("— release on Friday")
        await _type(pilot, "hi")
        await settle(app, pilot)
        assert ("typing", (channel,)) in engine.calls
        await engine.emit(TypingChanged(channel=channel, users=("bob",)))
        ours = engine._messages[channel][2]
        await engine.emit(ReceiptsChanged(channel=channel, seen=(("carol", ours.msg_id),)))
        await settle(app, pilot)
        activity = main.query_one("#activity", Static)
        assert shown(activity)
        assert str(activity.render()) == "bob is typing…   seen by carol"
        _shot(app, "typing-seen")
        # bob's message arrives: he is no longer typing
        msg = engine.add_message(channel, "bob", "done")
        await engine.emit(MessageReceived(message=msg))
        await settle(app, pilot)
        assert str(activity.render()) == "seen by carol"
        # our newer message: carol has not read that one yet
        await _type(pilot, "x")
        await pilot.press("enter")
        await settle(app, pilot)
        assert not shown(activity)


async def test_slash_me_and_topic_reach_the_engine(app_factory: AppFactory) -> None:
    engine, channel = _setup()
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        composer = main.query_one(Composer)
        composer.text = "/me waves"
        await pilot.press("enter")
        await settle(app, pilot)
        sent = engine._messages[channel][-1]
        assert sent.action and _log_text(app, sent.id) == "* alice waves"
        composer.text = "/topic release on Friday"
        await pilot.press("enter")
        await settle(app, pilot)
        assert ("set_topic", (channel, "release on Friday")) in engine.calls
        title = str(main.query_one("#channel-title", Label).render())
        assert title.endswith("— release on Friday")


def test_rendering_functions() -> None:
    engine = FakeEngine()
    chan = engine.add_channel("c", ("bob",)).id
    parent = engine.add_message(chan, "bob", "x" * 80)
    reply = engine.add_message(chan, "alice", "ok", reply_to=parent.msg_id)
    action = engine.add_message(chan, "bob", "waves", action=True)
    assert message_text(reply, parent) == "↳ bob: " + "x" * 59 + "…\nok"
    assert message_text(reply, None) == "↳ (an earlier message)\nok"
    assert message_text(action) == "* bob waves"
    assert typing_text(()) == "" and typing_text(("a", "b")) == "a and b are typing…"
    assert typing_text(("a", "b", "c", "d")) == "4 people are typing…"
    msgs = [parent, reply, action]
    assert seen_by(msgs, {"bob": action.msg_id, "carol": parent.msg_id}) == ("bob",)
