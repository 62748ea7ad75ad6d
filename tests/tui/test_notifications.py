"""Toasts and bells: the coalescing policy (sans-I/O) and its use in the app."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from tests.tui.conftest import Recorder, main_screen, settle, wait_for_alerts
from tests.tui.fake_engine import FakeFactory
from tui.app import QpcApp
from tui.notifications import NOTIFY_FILE, Notifier, NotifyLevel, load_levels, mentions, save_level

START = 1_000_000


def _msg(n: Notifier, channel: str = "c1", text: str = "hi", **kw: object) -> None:
    args: dict[str, object] = {
        "channel": channel,
        "title": f"#{channel}",
        "sender": "bob",
        "text": text,
        "time_ms": START + 10,
        "outgoing": False,
        "channel_in_view": False,
        "now_ms": 0,
    }
    args.update(kw)
    n.message(**args)  # type: ignore[arg-type]


def test_a_burst_is_one_toast_per_channel_and_one_bell() -> None:
    n = Notifier(user="alice", session_start_ms=START)
    for i in range(100):
        _msg(n, text=f"message {i}")
    _msg(n, channel="c2")
    assert n.flush(500) == ([], False)  # the burst is still going: held
    alerts, ring = n.flush(1000)
    assert ring
    assert [(a.channel, a.count) for a in alerts] == [("c1", 100), ("c2", 1)]
    assert alerts[0].text == "bob: message 0 (+99 more)"
    assert n.flush(5000) == ([], False)


def test_a_long_burst_is_shown_after_the_longest_delay() -> None:
    n = Notifier(user="alice", session_start_ms=START)
    for t in range(0, 6000, 100):
        _msg(n, now_ms=t)
        alerts, _ = n.flush(t)
        if alerts:
            assert t == 5000 and alerts[0].count == 51
            break
    else:
        raise AssertionError("never shown")


def test_nothing_for_own_open_or_backlog_messages() -> None:
    n = Notifier(user="alice", session_start_ms=START)
    _msg(n, outgoing=True)
    _msg(n, channel_in_view=True)
    _msg(n, time_ms=START - 60_000)  # fetched at start-up: the badges show it
    assert n.flush(10_000) == ([], False)


def test_levels_mute_and_mentions() -> None:
    n = Notifier(
        user="alice",
        session_start_ms=START,
        levels={"m": NotifyLevel.MUTE, "x": NotifyLevel.MENTIONS},
    )
    _msg(n, channel="m", text="@alice look")
    _msg(n, channel="x", text="no names here")
    assert n.flush(10_000) == ([], False)
    _msg(n, channel="x", text="hey @Alice, look")
    alerts, ring = n.flush(10_000)
    assert ring and len(alerts) == 1 and alerts[0].mention


def test_mentions_match_whole_names_only() -> None:
    assert mentions("alice", "@alice hi")
    assert mentions("alice", "hi alice.")
    assert not mentions("alice", "alicea and malice")
    assert not mentions("alice", "mail me at x@alice")


def test_levels_file_is_private_and_survives(tmp_path: Path) -> None:
    save_level(tmp_path, "c1", NotifyLevel.MUTE)
    save_level(tmp_path, "c2", NotifyLevel.MENTIONS)
    save_level(tmp_path, "c2", NotifyLevel.ALL)
    assert load_levels(tmp_path) == {"c1": NotifyLevel.MUTE}
    assert stat.S_IMODE((tmp_path / NOTIFY_FILE).stat().st_mode) == 0o600
    (tmp_path / NOTIFY_FILE).write_text("{not json")
    assert load_levels(tmp_path) == {}


async def test_muted_channel_in_the_app(
    app_factory: Callable[..., QpcApp], recorder: Recorder, tmp_path: Path
) -> None:
    from tests.tui.conftest import populated_engine

    engine, general, random = populated_engine()
    factory = FakeFactory(engine)
    factory.profile_path = tmp_path
    app = app_factory(factory, bell=True)
    rings: list[None] = []
    app.bell = lambda: rings.append(None)  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await settle(app, pilot)
        main = main_screen(app)
        main.active_channel = random.id
        app.action_notify_level("mute")
        main.active_channel = general.id
        await settle(app, pilot)
        before = len(recorder.notifications())
        await engine.deliver(random.id, "bob", "muted one")
        await settle(app, pilot)
        await wait_for_alerts(app, pilot)
        assert len(recorder.notifications()) == before and not rings
        assert main.rows[random.id].unread == 1  # the badge still counts it
        # In the open, focused channel: no toast either.
        await engine.deliver(general.id, "bob", "right here")
        await settle(app, pilot)
        await wait_for_alerts(app, pilot)
        assert not rings
    assert load_levels(tmp_path) == {random.id: NotifyLevel.MUTE}
