"""Navigation, unread counts, sending and engine events on the main screen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tui.conftest import Recorder, main_screen, settle, shown, wait_for_alerts
from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp
from tui.client.api import (
    ChannelsChanged,
    ConnectionChanged,
    ConnectionState,
    DeliveryState,
    MessageStateChanged,
)
from tui.lastchannel import LAST_CHANNEL_FILE
from tui.messages import EngineEventPosted
from tui.widgets.channel_list import ChannelList
from tui.widgets.composer import Composer
from tui.widgets.message_log import DeliveryMark, MessageLog
from tui.widgets.status_bar import StatusBar

AppFactory = Callable[..., QpcApp]


async def test_resume_opens_newest_channel(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        names = [main.rows[c].info.name for c in main.query_one(ChannelList).channel_ids]
        assert names == ["general", "bob", "random"]  # newest activity first
        assert main.active_channel == main.query_one(ChannelList).channel_ids[0]
        assert main.query_one(MessageLog).message_count == 5
        assert isinstance(app.focused, Composer)
        assert main.rows[main.active_channel].unread == 0


async def test_unread_count_and_notification_for_other_channel(
    app_factory: AppFactory, recorder: Recorder
) -> None:
    from tests.tui.conftest import populated_engine

    engine, general, random = populated_engine()
    app = app_factory(FakeFactory(engine), bell=True)
    rings: list[None] = []
    app.bell = lambda: rings.append(None)  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel == general.id
        await engine.deliver(random.id, "bob", "psst, over here")
        await engine.deliver(random.id, "bob", "second one")
        await settle(app, pilot)
        assert len(recorder.of(EngineEventPosted)) == 2
        assert main.rows[random.id].unread == 2
        # Newest activity moved #random to the top.
        assert main.query_one(ChannelList).channel_ids[0] == random.id
        await wait_for_alerts(app, pilot)
        # One toast for the burst, with its count, and one bell.
        assert ("information", "bob: psst, over here (+1 more)") in recorder.notifications()
        assert len(rings) == 1
        # Opening it clears the count and shows the messages.
        main.post_message(ChannelList.Opened(random.id))
        await settle(app, pilot)
        assert main.active_channel == random.id
        assert main.rows[random.id].unread == 0
        log = main.query_one(MessageLog)
        assert log.message_count == 3  # two messages and the "2 new" marker
        marker = log.item("unread-marker")
        assert marker is not None and marker.text == "2 new"


async def test_message_in_open_channel_is_appended_without_unread(
    engine: FakeEngine, app_factory: AppFactory, recorder: Recorder
) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        channel = main.active_channel
        assert channel is not None
        await engine.deliver(channel, "carol", "live!")
        await settle(app, pilot)
        log = main.query_one(MessageLog)
        assert log.message_count == 6
        assert main.rows[channel].unread == 0
        assert recorder.notifications() == []
        # The engine is told, so the count is still 0 after a restart.
        assert engine.calls[-1] == ("mark_read", (channel,))
        assert next(c for c in await engine.channels() if c.id == channel).unread == 0


async def test_cycle_channels_with_keys(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        ids = main.query_one(ChannelList).channel_ids
        await pilot.press("alt+down")
        await settle(app, pilot)
        assert main.active_channel == ids[1]
        await pilot.press("alt+down")
        await settle(app, pilot)
        assert main.active_channel == ids[2]
        await pilot.press("alt+up")
        await settle(app, pilot)
        assert main.active_channel == ids[1]


async def test_channel_list_keyboard_open(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        channels = main.query_one(ChannelList)
        channels.focus()
        await pilot.press("down", "down", "enter")
        await settle(app, pilot)
        assert main.active_channel == channels.channel_ids[2]
        assert isinstance(app.focused, Composer)


async def test_send_shows_delivery_state(engine: FakeEngine, app_factory: AppFactory) -> None:
    engine.send_state = DeliveryState.PENDING
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        await pilot.press(*"hello there", "enter")
        await settle(app, pilot)
        assert ("send", (main.active_channel, "hello there")) in engine.calls
        log = main.query_one(MessageLog)
        sent = engine.calls[-1]
        assert sent[0] == "send"
        newest = max(engine._messages[main.active_channel or ""], key=lambda m: m.id)
        item = log.item(str(newest.id))
        assert item is not None and item.mark is DeliveryMark.PENDING and item.own
        await engine.emit(
            MessageStateChanged(
                message_id=newest.id, channel=newest.channel, state=DeliveryState.SENT
            )
        )
        await settle(app, pilot)
        item = log.item(str(newest.id))
        assert item is not None and item.mark is DeliveryMark.SENT
        assert main.query_one(Composer).text == ""


async def test_composer_history_and_newline(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        composer = main_screen(app).query_one(Composer)
        await pilot.press(*"first", "enter", *"second", "enter")
        await settle(app, pilot)
        await pilot.press("up")
        assert composer.text == "second"
        await pilot.press("up")
        assert composer.text == "first"
        await pilot.press("down", "down")
        assert composer.text == ""
        await pilot.press(*"two", "ctrl+j", *"lines")
        assert composer.text == "two\nlines"
        await pilot.press("enter")
        await settle(app, pilot)
        assert engine.calls[-1] == ("send", (main_screen(app).active_channel, "two\nlines"))


async def test_blank_message_is_not_sent(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("space", "space", "enter")
        await settle(app, pilot)
        assert not [c for c in engine.calls if c[0] == "send"]


async def test_member_list_toggle(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        pane = main_screen(app).query_one("#members-pane")
        assert not shown(pane)
        await pilot.press("f5")
        assert shown(pane)
        from tui.widgets.member_list import MemberList

        assert main_screen(app).query_one(MemberList).users == ["alice", "bob", "carol"]
        await pilot.press("f5")
        assert not shown(pane)


async def test_connection_state_in_status_bar(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        bar = main_screen(app).query_one(StatusBar)
        assert bar.state_text == "● connected"
        await engine.emit(ConnectionChanged(state=ConnectionState.reconnecting(5, outbox_count=2)))
        await settle(app, pilot)
        assert bar.state_text in (
            "◌ reconnecting in 5s · 2 queued",
            "◌ reconnecting in 4s · 2 queued",
        )
        await engine.emit(ConnectionChanged(state=ConnectionState.offline(3)))
        await settle(app, pilot)
        assert bar.state_text == "○ offline · 3 queued"


async def test_channels_changed_coalesce(engine: FakeEngine) -> None:
    channels = await engine.channels()
    first = EngineEventPosted(ChannelsChanged(channels=channels))
    second = EngineEventPosted(ChannelsChanged(channels=channels[:1]))
    assert second.can_replace(first)
    state = EngineEventPosted(ConnectionChanged(state=ConnectionState.offline(1)))
    assert not state.can_replace(first)
    assert EngineEventPosted(ConnectionChanged(state=ConnectionState.offline(2))).can_replace(state)


async def test_leave_greys_out_channel(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        channel = main.active_channel
        assert channel is not None
        await pilot.press("f8")
        await pilot.press("enter")  # focus starts on the action the user chose
        await settle(app, pilot)
        assert ("leave", (channel,)) in engine.calls
        # Another channel opens in its place.
        assert main.active_channel not in (None, channel)
        assert not main.rows[channel].info.active
        # Left channels sink to the bottom.
        assert main.query_one(ChannelList).channel_ids[-1] == channel


async def test_keys_arriving_in_a_burst_keep_their_order(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    """Enter must not overtake characters still queued for the composer (a paste, tmux)."""
    from textual import events

    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for ch in "fast typist":
            app.post_message(events.Key(ch if ch != " " else "space", ch))
        app.post_message(events.Key("enter", "\r"))
        await settle(app, pilot)
        assert ("send", (main_screen(app).active_channel, "fast typist")) in engine.calls
        assert main_screen(app).query_one(Composer).text == ""


def _follows(log: MessageLog) -> bool:
    return log.follow  # a call: mypy keeps no narrowing across key presses


def _has_older(log: MessageLog) -> bool:
    return log.has_older  # a call: mypy keeps no narrowing across key presses


async def test_scrolling_to_the_top_loads_older_history(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MessageLog, "PREFETCH_SCREENS", 0)  # only at the very top
    engine = FakeEngine()
    chan = engine.add_channel("long", ("bob",))
    for i in range(75):
        engine.add_message(chan.id, "bob", f"message {i}")
    engine.clear_unread(chan.id)
    app = app_factory(FakeFactory(engine))
    app.history_limit = 30
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        log = main_screen(app).query_one(MessageLog)
        assert log.message_count == 30 and _has_older(log)
        first = log.item("46")  # the oldest message shown (ids start at 1)
        assert first is not None and first.text == "message 45"
        log.scroll_home(animate=False, immediate=True)
        await settle(app, pilot)
        assert log.message_count == 60
        # The view stays on what was at the top; the older page is above it.
        assert round(log.scroll_y) == 30  # 30 older rows; the day line stays on top
        assert "message 45" in log.render_line(1).text
        log.scroll_home(animate=False, immediate=True)
        await settle(app, pilot)
        assert log.message_count == 75 and not _has_older(log)
        log.scroll_home(animate=False, immediate=True)
        await settle(app, pilot)
        assert log.message_count == 75  # nothing older: no more requests
        assert "message 0" in log.render_line(1).text


async def test_message_arriving_while_a_channel_opens_is_shown_once(
    app_factory: AppFactory, recorder: Recorder
) -> None:
    import asyncio

    from tests.tui.conftest import populated_engine

    engine, _general, random = populated_engine()
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        engine.history_gate = asyncio.Event()
        engine._messages[random.id].clear()
        main.post_message(ChannelList.Opened(random.id))
        await pilot.pause()
        # History was read before this message was stored; it arrives meanwhile.
        await engine.deliver(random.id, "bob", "just in time")
        await pilot.pause()
        engine.history_gate.set()
        await settle(app, pilot)
        assert main.active_channel == random.id
        log = main.query_one(MessageLog)
        items = [log.item(k) for k in log._by_key]
        assert [i.text for i in items if i is not None] == ["just in time"]
        assert recorder.notifications() == []  # not "another channel"


def _keys(log: MessageLog) -> list[int]:
    """The message keys the log holds, top to bottom."""
    return [int(e.item.key) for e in log._entries if e.item is not None]


def _top_key(log: MessageLog) -> int:
    """The message at the top of the view (its first row, or a later one)."""
    for y in range(log.size.height):
        index = log._entry_at(round(log.scroll_y) + y)
        item = log._entries[index].item
        if item is not None:
            return int(item.key)
    raise AssertionError("no message in view")


async def test_a_long_channel_opens_with_one_page_and_pages_in_near_the_top(
    app_factory: AppFactory,
) -> None:
    engine = FakeEngine()
    chan = engine.add_channel("long", ("bob",))
    for i in range(1000):
        engine.add_message(chan.id, "bob", f"message {i}")
    engine.clear_unread(chan.id)
    app = app_factory(FakeFactory(engine))
    app.history_page = 100
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        log = main_screen(app).query_one(MessageLog)
        # One page, nothing read in the background: the view is far from its top.
        assert log.message_count == 100 and _has_older(log)
        assert sum(1 for name, _ in engine.calls if name == "history") == 1
        assert log.follow
        assert "message 999" in log.render_line(log.size.height - 1).text
        # Within PREFETCH_SCREENS of the top, the next page is asked for.
        log.scroll_to(y=log.PREFETCH_SCREENS * log.size.height, animate=False, immediate=True)
        await settle(app, pilot)
        assert log.message_count == 200
        assert sum(1 for name, _ in engine.calls if name == "history") == 2
        log.scroll_home(animate=False, immediate=True)
        await settle(app, pilot)
        assert log.message_count == 300  # one page per approach, the view moved down
        while _has_older(log):
            log.scroll_home(animate=False, immediate=True)
            await settle(app, pilot)
        assert _keys(log) == list(range(1, 1001))


async def test_paging_up_through_history_finds_each_message_once_in_order(
    app_factory: AppFactory,
) -> None:
    engine = FakeEngine()
    chan = engine.add_channel("long", ("bob", "carol"))
    day_ms = 86_400_000
    for i in range(700):
        # Several days (separators at page edges) and wrapped lines.
        text = f"message {i} " + "lorem ipsum " * (i % 9)
        engine.add_message(chan.id, ("bob", "carol")[i % 2], text, time_ms=i * day_ms // 150)
    engine.clear_unread(chan.id)
    app = app_factory(FakeFactory(engine))
    app.history_page = 64
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        log = main_screen(app).query_one(MessageLog)
        tops = [_top_key(log)]
        while round(log.scroll_y) > 0 or _has_older(log):
            await pilot.press("pageup")
            await settle(app, pilot)
            tops.append(_top_key(log))
            # Each page up shows older messages; a page put above never moves the view.
            assert tops[-1] < tops[-2] or round(log.scroll_y) == 0
        assert tops[-1] == 1
        assert _keys(log) == list(range(1, 701))  # no gap, no duplicate, in order
        pages = [p for name, p in engine.calls if name == "history"]
        assert len(pages) == 700 // 64 + 1  # each page read once
        days = [e.day for e in log._entries if e.item is None]
        assert days == sorted(set(days))  # one separator a day, across page edges


async def test_a_backlog_opens_at_the_new_marker(app_factory: AppFactory) -> None:
    engine = FakeEngine()
    chan = engine.add_channel("backlog", ("bob",))
    for i in range(200):
        if i == 140:
            engine.clear_unread(chan.id)
        engine.add_message(chan.id, "bob", f"message {i}")
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        log = main_screen(app).query_one(MessageLog)
        marker = log.item("unread-marker")
        assert marker is not None and marker.text == "60 new"
        # The marker is on screen near the top; the newest message is below the fold.
        top = [log.render_line(y).text for y in range(3)]
        assert any("60 new" in line for line in top), top
        assert not log.follow
        assert "message 140" in "".join(log.render_line(y).text for y in range(4))


async def test_page_keys_scroll_a_page_at_once(engine: FakeEngine, app_factory: AppFactory) -> None:
    # Like other terminal chat clients: PgUp moves a full page in one frame
    # (no scroll animation repainting the log for half a second per key).
    chan = engine.add_channel("chatty", ("bob",), activity_ms=4_000_000_000_000)
    for i in range(100):
        engine.add_message(chan.id, "bob", f"message {i}")
    engine.clear_unread(chan.id)
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        log = main_screen(app).query_one(MessageLog)
        bottom = round(log.scroll_y)
        page = log.scrollable_content_region.height
        assert bottom > 2 * page
        log.action_page_up()
        assert round(log.scroll_y) == bottom - page
        assert not app.animator.is_being_animated(log, "scroll_y")
        log.action_page_down()
        assert round(log.scroll_y) == bottom
        await settle(app, pilot)
        assert _follows(log)


async def test_sending_while_scrolled_up_jumps_to_the_bottom(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    chan = engine.add_channel("chatty", ("bob",), activity_ms=4_000_000_000_000)
    for i in range(100):
        engine.add_message(chan.id, "bob", f"message {i}")
    engine.clear_unread(chan.id)
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel == chan.id
        log = main.query_one(MessageLog)
        assert isinstance(app.focused, Composer)
        bottom = log.scroll_y
        # PgUp / PgDn from the composer scroll the log.
        await pilot.press("pageup")
        await settle(app, pilot)
        assert log.scroll_y < bottom and not _follows(log)
        await pilot.press("pageup")
        await settle(app, pilot)
        up = log.scroll_y
        await pilot.press("pagedown")
        await settle(app, pilot)
        assert up < log.scroll_y < bottom
        assert isinstance(app.focused, Composer)
        await pilot.press(*"hello", "enter")
        await settle(app, pilot)
        assert _follows(log) and round(log.scroll_y) == log.max_scroll_y
        assert "hello" in log.render_line(log.size.height - 1).text


async def test_member_count_follows_joins_and_leaves(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    from textual.widgets import Label

    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        channel = main.active_channel
        assert channel is not None
        title = main.query_one("#channel-title", Label)
        before = len(engine._members[channel])
        assert f"({before} members)" in str(title.render())
        # Someone else's commit adds dave (no ChannelsChanged follows it).
        await engine._set_members(channel, [m.user for m in engine._members[channel]] + ["dave"])
        await settle(app, pilot)
        assert f"({before + 1} members)" in str(title.render())
        assert main.channel(channel) is not None
        assert "dave" in main.channel(channel).members  # type: ignore[union-attr]
        await engine._set_members(channel, [m.user for m in engine._members[channel]][:-1])
        await settle(app, pilot)
        assert f"({before} members)" in str(title.render())


async def test_join_and_leave_notices_stay_in_the_log(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    from tests.tui.conftest import populated_engine

    engine, general, random = populated_engine()
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel == general.id
        users = [m.user for m in engine._members[general.id]]
        await engine._set_members(general.id, [*users, "dave"])
        await settle(app, pilot)
        await engine.deliver(general.id, "dave", "hi all")
        await settle(app, pilot)
        log = main.query_one(MessageLog)

        def texts() -> list[str]:
            return [i.text for i in (log._entries[n].item for n in range(len(log._entries))) if i]

        assert texts()[-2:] == ["dave joined", "hi all"]
        main.post_message(ChannelList.Opened(random.id))
        await settle(app, pilot)
        main.post_message(ChannelList.Opened(general.id))
        await settle(app, pilot)
        assert texts()[-2:] == ["dave joined", "hi all"]


async def test_a_long_channel_opened_from_a_short_one_shows_its_newest_message(
    app_factory: AppFactory,
) -> None:
    engine = FakeEngine()
    big = engine.add_channel("big", ("bob",))
    for i in range(2000):
        engine.add_message(big.id, ("bob", "alice")[i % 2], f"message {i}")
    engine.clear_unread(big.id)
    small = engine.add_channel("small", ("bob",), activity_ms=engine.now_ms + 10**6)
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel == small.id
        main.post_message(ChannelList.Opened(big.id))
        await settle(app, pilot)
        log = main.query_one(MessageLog)
        assert log.message_count == app.history_page  # the newest page
        assert _follows(log) and round(log.scroll_y) == log.max_scroll_y > 0
        assert "message 1999" in log.render_line(log.size.height - 1).text


async def test_restart_reopens_the_channel_left_off_in(
    engine: FakeEngine, app_factory: AppFactory, tmp_path: Path
) -> None:
    """A reconnect (restarted TUI, new ssh session) opens the last channel, not the newest."""
    factory = FakeFactory(engine)
    factory.profile_path = tmp_path
    app = app_factory(factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        ids = main.query_one(ChannelList).channel_ids
        await pilot.press("alt+down", "alt+down")
        await settle(app, pilot)
        assert main.active_channel == ids[2]  # "random", the oldest activity
    assert (tmp_path / LAST_CHANNEL_FILE).stat().st_mode & 0o777 == 0o600
    again_factory = FakeFactory(engine)
    again_factory.profile_path = tmp_path
    again = app_factory(again_factory)
    async with again.run_test(size=(80, 24)) as pilot:
        await settle(again, pilot)
        assert main_screen(again).active_channel == ids[2]


async def test_stored_notices_show_in_place_and_are_never_unread(
    app_factory: AppFactory,
) -> None:
    """Notices from the history (a restart) sit between the messages of their
    moment; a notice arriving in a background channel adds no unread count."""
    from tests.tui.conftest import populated_engine

    engine, general, random = populated_engine()
    await engine.add_notice(general.id, "alice added dave", by="alice", emit=False)
    engine.add_message(general.id, "dave", "hello, I'm new")
    await engine.add_notice(general.id, "alice removed carol", by="alice", emit=False)
    engine.clear_unread(general.id)
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(100, 24)) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        assert main.active_channel == general.id
        log = main.query_one(MessageLog)
        items = [log._entries[n].item for n in range(len(log._entries))]
        tail = [(i.text, i.system) for i in items if i][-3:]
        assert tail == [
            ("alice added dave", True),
            ("hello, I'm new", False),
            ("alice removed carol", True),
        ]
        await engine.add_notice(random.id, "bob set the topic: cats", by="bob")
        await settle(app, pilot)
        row = main._rows[random.id]
        assert row.unread == 0 and row.mentions == 0
        main.post_message(ChannelList.Opened(random.id))
        await settle(app, pilot)
        items = [log._entries[n].item for n in range(len(log._entries))]
        assert [(i.text, i.system) for i in items if i][-1] == ("bob set the topic: cats", True)
        assert all(i.key != "unread-marker" for i in items if i)
