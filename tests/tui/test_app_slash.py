"""Slash commands, completion, mentions, the hotlist, search, paste and links (fake engine)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import events
from textual.widgets import DataTable, Input, OptionList

from tests.tui.conftest import Recorder, current, main_screen, populated_engine, settle
from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui import slash
from tui.app import QpcApp
from tui.links import find_urls, urls_newest_first
from tui.notifications import NotifyLevel, load_levels
from tui.screens.help import HelpScreen
from tui.screens.links import LinksScreen
from tui.screens.search import SearchScreen
from tui.widgets.channel_list import ChannelList
from tui.widgets.composer import Composer
from tui.widgets.message_log import MessageLog

AppFactory = Callable[..., QpcApp]


# ------------------------------------------------------------------ parsing


def test_parse_commands_text_and_literal_slash() -> None:
    assert slash.parse("hello") == slash.Text(text="hello")
    assert slash.parse("//etc/hosts is the file") == slash.Text(text="/etc/hosts is the file")
    assert slash.parse("/ not a command") == slash.Text(text="/ not a command")
    me = slash.parse("/me waves at bob")
    assert isinstance(me, slash.Invocation)
    assert me.command.name == "me" and me.args == "waves at bob"
    assert isinstance(slash.parse("/HELP"), slash.Invocation)
    assert slash.parse("/hlep") == slash.Unknown(name="hlep")
    assert slash.parse("/tmp/x") == slash.Unknown(name="tmp/x")
    multi = slash.parse("/me line one\nline two")
    assert isinstance(multi, slash.Invocation) and multi.args == "line one\nline two"


def test_complete_commands_names_and_levels() -> None:
    users = ["bob", "barbara", "carol"]
    got = slash.complete("/in", users)
    assert got is not None and got.candidates == ("/invite ",) and got.start == 0
    got = slash.complete("/", users)
    assert got is not None and len(got.candidates) == len(slash.SLASH_COMMANDS)
    got = slash.complete("hi @b", users)
    assert got is not None and got.start == 3 and got.candidates == ("@bob ", "@barbara ")
    got = slash.complete("car", users)  # at line start: IRC style "carol: "
    assert got is not None and got.candidates == ("carol: ",)
    got = slash.complete("/invite bob ca", users)
    assert got is not None and got.candidates == ("carol ",)
    got = slash.complete("/notify me", users)
    assert got is not None and got.candidates == ("mentions ",)
    assert slash.complete("/me wa", users) is None  # /me takes text, not names
    assert slash.complete("hi there x", users) is None
    assert slash.complete("/zz", users) is None


def test_find_urls() -> None:
    text = "see https://example.org/a_(b), and (www.python.org). ftp://no http://x"
    assert find_urls(text) == ["https://example.org/a_(b)", "https://www.python.org"]
    assert urls_newest_first(["https://a.org x", "https://b.org https://a.org"]) == [
        "https://a.org",
        "https://b.org",
    ]


# --------------------------------------------------------------------- app


async def _type(pilot: object, composer: Composer, text: str) -> None:
    composer.load_text(text)
    composer.move_cursor(composer.document.end)


async def test_unknown_command_is_not_sent_and_kept(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30), message_hook=recorder) as pilot:
        await settle(app, pilot)
        composer = main_screen(app).query_one(Composer)
        composer.focus()
        await _type(pilot, composer, "/hlep")
        await pilot.press("enter")
        await settle(app, pilot)
        assert not [c for c in engine.calls if c[0] == "send"]
        assert composer.text == "/hlep"
        assert any("Unknown command /hlep" in text for _, text in recorder.notifications())
        # //text sends a literal slash
        await _type(pilot, composer, "//shrug")
        await pilot.press("enter")
        await settle(app, pilot)
        assert [c[1][1] for c in engine.calls if c[0] == "send"] == ["/shrug"]


async def test_help_me_topic_notify_join_commands(
    engine: FakeEngine,
    app_factory: AppFactory,
    recorder: Recorder,
    tmp_path: Path,
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        composer = main.query_one(Composer)
        composer.focus()
        await _type(pilot, composer, "/help")
        await pilot.press("enter")
        await settle(app, pilot)
        screen = current(app)
        assert isinstance(screen, HelpScreen)
        table = screen.query_one("#help-commands", DataTable)
        firsts = [str(table.get_row_at(i)[0]).split()[0] for i in range(table.row_count)]
        assert firsts == [f"/{c.name}" for c in slash.SLASH_COMMANDS]
        await pilot.press("escape")
        await settle(app, pilot)
        # /notify with a bad level: usage, kept; with a good one: set
        await _type(pilot, composer, "/notify loud")
        await pilot.press("enter")
        await settle(app, pilot)
        assert composer.text == "/notify loud"
        assert recorder.notifications()[-1][1].startswith("Usage: /notify")
        await _type(pilot, composer, "/notify mentions")
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.notifier is not None and main.active_channel is not None
        assert app.notifier.level(main.active_channel) is NotifyLevel.MENTIONS
        profile = app.factory.profile_dir
        if profile is not None:
            assert load_levels(profile).get(main.active_channel) is NotifyLevel.MENTIONS
        # /join an existing channel opens it; a new name creates a group
        await _type(pilot, composer, "/join #random")
        await pilot.press("enter")
        await settle(app, pilot)
        assert main.channel(main.active_channel or "") is not None
        assert main.rows[main.active_channel or ""].info.name == "random"
        await _type(pilot, main.query_one(Composer), "/join ops")
        await pilot.press("enter")
        await settle(app, pilot)
        assert ("create_group", ("ops",)) in engine.calls


async def test_tab_completes_commands_and_nicks(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        composer = main_screen(app).query_one(Composer)
        composer.focus()
        await pilot.press("slash", "i", "n", "v", "tab")
        assert composer.text == "/invite "
        composer.clear()
        await pilot.press("h", "i", "space", "at", "tab")
        first = composer.text
        await pilot.press("tab")
        second = composer.text
        assert {first, second} == {"hi @bob ", "hi @carol "}  # Tab again: the next name
        composer.clear()
        await pilot.press("c", "a", "tab")
        assert composer.text == "carol: "
        # nothing to complete: Tab moves the focus as before
        composer.clear()
        await pilot.press("x", "y", "z", "space", "tab")
        assert app.focused is not composer


async def test_mentions_highlighted_counted_and_hotlist(app_factory: AppFactory) -> None:
    engine, general, random = populated_engine()
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel == general.id
        dm = next(c for c in main.rows if main.rows[c].info.name == "bob")
        await engine.deliver(dm, "bob", "plain message")
        await engine.deliver(random.id, "bob", "hey @alice, look")
        await engine.deliver(random.id, "bob", "and alice: again")
        await engine.deliver(random.id, "bob", "no name here")
        await settle(app, pilot)
        assert main.rows[random.id].mentions == 2 and main.rows[random.id].unread == 3
        assert main.rows[dm].mentions == 0 and main.rows[dm].unread == 1
        # the hotlist: mentions first, then the rest; Alt+A walks it
        assert main.hotlist() == [random.id, dm]
        await pilot.press("alt+a")
        await settle(app, pilot)
        assert main.active_channel == random.id
        assert main.rows[random.id].mentions == 0
        log = main.query_one(MessageLog)
        marked = {
            i.text: i.mention
            for i in (log.item(str(m.id)) for m in engine._messages[random.id])
            if i is not None
        }
        assert marked == {"hey @alice, look": True, "and alice: again": True, "no name here": False}
        await pilot.press("alt+a")
        await settle(app, pilot)
        assert main.active_channel == dm
        await pilot.press("alt+a")
        await settle(app, pilot)
        assert main.active_channel == dm  # nothing left: stays


async def test_search_screen_jumps_to_message(app_factory: AppFactory) -> None:
    engine, general, random = populated_engine()
    target = engine.add_message(random.id, "bob", "the Deploy KEY is in the vault")
    for i in range(60):
        engine.add_message(random.id, "bob", f"filler {i}")
    engine.clear_unread(random.id)
    app = app_factory(FakeFactory(engine))
    app.history_page = 20  # the hit is beyond the first page: older pages load
    app.history_limit = 20
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        main.post_message(ChannelList.Opened(general.id))
        await settle(app, pilot)
        assert main.active_channel == general.id
        await pilot.press("ctrl+f")
        await settle(app, pilot)
        screen = current(app)
        assert isinstance(screen, SearchScreen)
        screen.query_one(Input).value = "deploy key"
        await settle(app, pilot)
        assert [m.id for m in screen.results] == [target.id]
        await pilot.press("enter", "enter")
        await settle(app, pilot)
        assert current(app) is main
        assert main.active_channel == random.id
        log = main.query_one(MessageLog)
        item = log.item(str(target.id))
        assert item is not None and item.mention  # flashed
        row = log.row_of(str(target.id))
        assert row is not None
        assert log.scroll_y <= row < log.scroll_y + log.size.height


async def test_paste_is_one_message_and_links_copy(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine))
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign,assignment]
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        composer = main.query_one(Composer)
        composer.focus()
        composer.post_message(events.Paste("line one\r\nline two https://example.org/x\nthree"))
        await pilot.pause()
        await pilot.press("enter")
        await settle(app, pilot)
        sends = [c[1][1] for c in engine.calls if c[0] == "send"]
        assert sends == ["line one\nline two https://example.org/x\nthree"]
        await pilot.press("ctrl+l")
        await settle(app, pilot)
        screen = current(app)
        assert isinstance(screen, LinksScreen)
        assert screen.urls[0] == "https://example.org/x"
        await pilot.press("enter")
        await settle(app, pilot)
        assert copied == ["https://example.org/x"]
        assert current(app) is main
        assert isinstance(main.query_one(ChannelList), OptionList)


async def test_me_and_topic_reach_the_engine(app_factory: AppFactory, recorder: Recorder) -> None:
    engine = FakeEngine()
    general = engine.add_channel("general", ("bob",))
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 30), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel == general.id
        composer = main.query_one(Composer)
        composer.focus()
        await _type(pilot, composer, "/me waves")
        await pilot.press("enter")
        await settle(app, pilot)
        assert ("send", (general.id, "waves")) in engine.calls
        sent = engine._messages[general.id][-1]
        assert sent.action and sent.text == "waves"
        assert main.query_one(MessageLog).message_count == 1
        await _type(pilot, composer, "/me")
        await pilot.press("enter")
        await settle(app, pilot)
        assert composer.text == "/me" and "Usage: /me" in recorder.notifications()[-1][1]
        await _type(pilot, composer, "/topic release day")
        await pilot.press("enter")
        await settle(app, pilot)
        assert ("set_topic", (general.id, "release day")) in engine.calls
        assert composer.text == ""
        await _type(pilot, composer, "/topic")
        await pilot.press("enter")
        await settle(app, pilot)
        assert recorder.notifications()[-1][1] == "Topic of #general: release day"
