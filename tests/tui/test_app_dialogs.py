"""Dialogs: new group, invite, remove, DM, leave, keys (verify, update), server trust."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input, Static

from tests.tui.conftest import Recorder, main_screen, settle
from tests.tui.fake_engine import FINGERPRINT, FakeEngine, FakeFactory
from tui.app import QpcApp
from tui.client.api import ChannelKind
from tui.screens.dialogs import (
    ConfirmDialog,
    InviteDialog,
    KeyCheckDialog,
    NewDmDialog,
    NewGroupDialog,
    RemoveMembersDialog,
    TrustServerDialog,
    VerifyKeysDialog,
    parse_users,
)
from tui.screens.main import MainScreen
from tui.screens.welcome import WelcomeScreen
from tui.widgets.member_list import MemberList
from tui.widgets.message_log import MessageLog

AppFactory = Callable[..., QpcApp]


def test_parse_users() -> None:
    assert parse_users(" bob, @carol  dave,bob ") == ["bob", "carol", "dave"]
    assert parse_users(" , ") == []


async def test_new_group_dialog_creates_and_opens(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, NewGroupDialog)
        await pilot.press("enter")  # empty: refused with a reason, dialog stays
        assert isinstance(app.screen, NewGroupDialog)
        error = app.screen.query_one("#dialog-error", Static)
        assert "name" in str(error.render())
        await pilot.press(*"friends", "enter")
        await settle(app, pilot)
        main = main_screen(app)
        assert ("create_group", ("friends",)) in engine.calls
        assert main.active_channel is not None
        assert main.rows[main.active_channel].info.name == "friends"
        assert ("information", "Created #friends. Ctrl+T invites people.") in (
            recorder.notifications()
        )


async def test_escape_cancels_dialogs(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for key, dialog in (
            ("ctrl+n", NewGroupDialog),
            ("ctrl+t", InviteDialog),
            ("ctrl+o", NewDmDialog),
            ("f6", VerifyKeysDialog),
            ("f8", ConfirmDialog),
        ):
            await pilot.press(key)
            assert isinstance(app.screen, dialog), key
            await pilot.press("escape")
            await settle(app, pilot)
            assert isinstance(app.screen, MainScreen), key
        assert not [c for c in engine.calls if c[0] in ("create_group", "invite", "dm", "leave")]


async def test_invite_adds_members_and_announces(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        channel = main.active_channel
        await pilot.press("ctrl+t", *"dave, erin", "enter")
        await settle(app, pilot)
        assert ("invite", (channel, ("dave", "erin"))) in engine.calls
        assert main.query_one(MemberList).users == ["alice", "bob", "carol", "dave", "erin"]
        log = main.query_one(MessageLog)
        notices = [log.item(k) for k in list(log._by_key) if k.startswith("join:")]
        assert sorted(i.text for i in notices if i) == ["dave joined", "erin joined"]


async def test_new_dm_opens_direct_channel(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+o", *"dave", "enter")
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel is not None
        info = main.rows[main.active_channel].info
        assert (info.name, info.kind) == ("dave", ChannelKind.DM)
        assert main.channel_label(main.active_channel) == "@dave"


async def test_dm_dialog_wants_exactly_one_user(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+o", *"bob carol", "enter")
        assert isinstance(app.screen, NewDmDialog)
        assert "exactly one" in str(app.screen.query_one("#dialog-error", Static).render())


async def test_verify_keys_shows_safety_numbers(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f6", *"bob", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, KeyCheckDialog)
        texts = " ".join(str(s.render()) for s in app.screen.query(".safety-number"))
        assert "11111 22222 33333 44444" in texts and "unverified" in texts
        # Enter (on Close) never marks anything verified.
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert not engine.verified
        # Compared the numbers: mark verified.
        await pilot.press("f6", *"bob", "enter")
        await settle(app, pilot)
        await pilot.click("#verify")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert ("check_key", ("bob", False, True)) in engine.calls
        await pilot.press("f6", *"bob", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, KeyCheckDialog)
        texts = " ".join(str(s.render()) for s in app.screen.query(".safety-number"))
        assert "unverified" not in texts and "verified" in texts
        assert not app.screen.query("#verify")


async def _fill_welcome(pilot: object, app: QpcApp, *, register: bool) -> None:
    screen = app.screen
    assert isinstance(screen, WelcomeScreen)
    screen.query_one("#server", Input).value = "chat.example:7000"
    screen.query_one("#user", Input).value = "alice"
    screen.query_one("#password", Input).value = "pw"
    screen.query_one("#passphrase", Input).value = "pp"


async def test_first_connection_asks_to_trust_fingerprint(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    factory = FakeFactory(engine, resume=False, pinned="")
    app = app_factory(factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await _fill_welcome(pilot, app, register=True)
        await pilot.press("ctrl+r")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, TrustServerDialog)
        assert dialog.server_key.fingerprint == FINGERPRINT
        assert "5f5f 5f5f" in " ".join(str(s.render()) for s in dialog.query(Static))
        await pilot.press("enter")  # "Trust" has the focus
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert factory.trusted == [FINGERPRINT]
        assert factory.forms[0].register and factory.forms[0].server == "chat.example:7000"
        assert ("register", ("alice",)) in engine.calls


async def test_changed_key_declined_stays_on_welcome(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    factory = FakeFactory(engine, resume=False, pinned="aa" * 32)
    app = app_factory(factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await _fill_welcome(pilot, app, register=False)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert isinstance(app.screen, TrustServerDialog)
        assert "CHANGED" in " ".join(str(s.render()) for s in app.screen.query(Static))
        await pilot.press("enter")  # focus is on Cancel for a changed key
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        assert "did not trust" in str(welcome.query_one("#welcome-error", Static).render())
        assert factory.forms == []
        assert not welcome.busy


async def test_pinned_key_connects_without_asking(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    factory = FakeFactory(engine, resume=False)
    app = app_factory(factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await _fill_welcome(pilot, app, register=False)
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert ("login", ("alice",)) in engine.calls


async def test_welcome_requires_fields(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine, resume=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+l")
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        assert "password" in str(welcome.query_one("#welcome-error", Static).render())
        assert app.focused is welcome.query_one("#password", Input)


async def test_tab_in_a_burst_moves_to_the_next_field(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    from textual import events

    app = app_factory(FakeFactory(engine, resume=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        for key, char in (("a", "a"), ("tab", "\t"), ("b", "b"), ("tab", "\t"), ("c", "c")):
            app.post_message(events.Key(key, char))
        await settle(app, pilot)
        values = [welcome.query_one(f"#{f}", Input).value for f in ("password", "passphrase")]
        assert values == ["a", "b"]
        assert app.focused is not None and app.focused.id == "login"


async def _run_from_palette(pilot: Pilot[None], app: QpcApp, title: str) -> None:
    """Open the palette, type ``title``, run the hit (as a user finds a command)."""
    await pilot.press("ctrl+p", *title)
    await settle(app, pilot)  # the palette searches in a worker of its own
    await pilot.press("enter")
    await settle(app, pilot)


async def test_remove_members_names_confirms_then_removes(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        channel = main.active_channel
        await _run_from_palette(pilot, app, "members: remove")
        assert isinstance(app.screen, RemoveMembersDialog)
        await pilot.press("enter")  # nobody named: refused, dialog stays
        assert isinstance(app.screen, RemoveMembersDialog)
        await pilot.press(*"carol", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")  # cancelled, and said so
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert not [c for c in engine.calls if c[0] == "remove"]
        assert any("nobody was removed" in text for _, text in recorder.notifications())
        await app.run_action("remove_members")
        await pilot.press(*"carol", "enter")
        await pilot.pause()
        await pilot.press("enter")  # focus starts on Remove
        await settle(app, pilot)
        assert ("remove", (channel, ("carol",))) in engine.calls
        assert main.query_one(MemberList).users == ["alice", "bob"]
        assert any("Removed carol" in text for _, text in recorder.notifications())


async def test_update_keys_commits_a_fresh_key_in_the_open_channel(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        channel = main.active_channel
        assert channel is not None
        epoch = {c.id: c for c in await engine.channels()}[channel].epoch
        await _run_from_palette(pilot, app, "keys: update")
        assert ("self_update", (channel,)) in engine.calls
        info = {c.id: c for c in await engine.channels()}[channel]
        assert info.epoch == epoch + 1
        assert any("fresh key" in text for _, text in recorder.notifications())


async def test_existing_profile_resumes_its_session_without_the_password(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    factory = FakeFactory(engine, resume=False, profile_present=True)
    app = app_factory(factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        welcome.query_one("#user", Input).value = "alice"
        welcome.query_one("#passphrase", Input).value = "pp"
        await pilot.press("ctrl+r")  # registering still needs a password
        assert "password" in str(welcome.query_one("#welcome-error", Static).render())
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        assert not [c for c in engine.calls if c[0] in ("login", "register")]
        assert ("whoami", ()) in engine.calls
        assert factory.forms[-1].password == ""


async def test_resuming_as_someone_else_asks_for_the_password(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine, resume=False, profile_present=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        welcome.query_one("#user", Input).value = "mallory"
        welcome.query_one("#passphrase", Input).value = "pp"
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert isinstance(app.screen, WelcomeScreen)
        error = str(welcome.query_one("#welcome-error", Static).render())
        assert "no session for mallory" in error
        assert app.focused is welcome.query_one("#password", Input)
        assert not [c for c in engine.calls if c[0] == "login"]


@pytest.mark.parametrize(
    ("keys", "method", "dialog", "typed"),
    [
        ("ctrl+t", "invite", InviteDialog, "dave, ghost"),
        ("ctrl+o", "dm", NewDmDialog, "ghost"),
        ("ctrl+n", "create_group", NewGroupDialog, "ops"),
    ],
)
async def test_a_failed_form_comes_back_filled_in_with_the_error(
    engine: FakeEngine,
    app_factory: AppFactory,
    keys: str,
    method: str,
    dialog: type[Screen[object]],
    typed: str,
) -> None:
    from proto.errors import NotFound

    engine.fail[method] = NotFound("no such user: ghost")
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press(keys, *typed, "enter")
        await settle(app, pilot)
        # The dialog is back with what was typed, the error, and the focus.
        assert isinstance(app.screen, dialog)
        field = app.screen.query_one("#dialog-input", Input)
        assert field.value == typed
        assert app.focused is field
        assert "ghost" in str(app.screen.query_one("#dialog-error", Static).render())
        # Fixing it and confirming again works.
        await pilot.press("enter")
        await settle(app, pilot)
        assert not isinstance(app.screen, dialog)
        assert sum(1 for name, _ in engine.calls if name == method) == 2


async def test_welcome_keeps_the_form_after_an_error(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    from proto.errors import LoginFailed

    engine.fail["login"] = LoginFailed("")
    app = app_factory(FakeFactory(engine, resume=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        welcome = app.screen
        assert isinstance(welcome, WelcomeScreen)
        values = {"server": "127.0.0.1:7000", "user": "alice", "password": "nope"}
        for field, value in {**values, "passphrase": "pp"}.items():
            welcome.query_one(f"#{field}", Input).value = value
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        assert app.screen is welcome
        for field, value in values.items():
            assert welcome.query_one(f"#{field}", Input).value == value
        assert welcome.query_one("#passphrase", Input).value == "pp"
        assert app.focused is welcome.query_one("#password", Input)
        # Enter moves on to the kept passphrase, Enter there retries.
        await pilot.press("enter", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
