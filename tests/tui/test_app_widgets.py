"""Widgets on their own: wrapping, the virtualised log, status text, formatting."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from textual.app import App, ComposeResult

from tui.client.api import ConnectionState
from tui.widgets.channel_list import format_activity
from tui.widgets.message_log import DeliveryMark, LogItem, MessageLog, wrap_cells
from tui.widgets.panes import format_uptime, group_hex
from tui.widgets.status_bar import describe_connection


def test_wrap_cells() -> None:
    assert wrap_cells("hello world", 20) == ["hello world"]
    assert wrap_cells("hello world", 7) == ["hello", "world"]
    assert wrap_cells("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert wrap_cells("a\n\nb", 10) == ["a", "", "b"]
    assert wrap_cells("日本語のテキスト", 6) == ["日本語", "のテキ", "スト"]  # 2 cells each
    assert wrap_cells("", 5) == [""]


def test_formatting() -> None:
    now = datetime(2026, 11, 25, 18, 0).timestamp()
    assert format_activity(0, now) == ""
    assert format_activity(int((now - 60) * 1000), now) == "17:59"
    assert format_activity(int((now - 2 * 86400) * 1000), now) == "Mon"
    assert format_activity(int((now - 30 * 86400) * 1000), now) == "26 Oct"
    assert format_uptime(3_723_000) == "1h 2m"
    assert format_uptime(90 * 86_400_000) == "90d 0h"
    assert group_hex("abcdef12") == "abcd ef12"
    assert describe_connection(ConnectionState.connected()) == "● connected"
    assert describe_connection(ConnectionState.connected(outbox_count=2)) == (
        "● connected · 2 queued"
    )
    assert describe_connection(ConnectionState.reconnecting(2.2)) == "◌ reconnecting in 3s"
    assert describe_connection(ConnectionState.reconnecting(0)) == "◌ reconnecting…"
    assert describe_connection(ConnectionState.offline(4)) == "○ offline · 4 queued"


class LogApp(App[None]):
    def compose(self) -> ComposeResult:
        yield MessageLog()


def _items(n: int, start: datetime) -> list[LogItem]:
    return [
        LogItem(
            key=str(i),
            sender=f"user{i % 7}",
            text=f"message {i} " + "lorem ipsum " * (i % 9),
            time=start + timedelta(minutes=i),
            own=i % 7 == 0,
            mark=DeliveryMark.SENT if i % 7 == 0 else DeliveryMark.NONE,
        )
        for i in range(n)
    ]


async def test_log_holds_10000_messages_and_renders_only_visible_rows() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(MessageLog)
        start = datetime(2026, 1, 1, 9, 0)
        log.set_items(_items(10_000, start))
        await pilot.pause()
        assert log.message_count == 10_000
        days = (10_000 // (24 * 60)) + 1
        assert log.row_count >= 10_000 + days
        assert log.virtual_size.height == log.row_count
        assert log.max_scroll_y == log.row_count - log.scrollable_content_region.height
        assert round(log.scroll_y) == log.max_scroll_y  # newest in view
        last = log.render_line(log.scrollable_content_region.height - 1).text
        assert "message 9999" in last or "lorem" in last or last.strip() == ""
        log.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        assert not log.follow
        assert "Thursday 1 January 2026" in log.render_line(0).text
        assert "message 0" in log.render_line(1).text
        # Not following: a new message does not yank the view.
        log.add_item(
            _items(1, start + timedelta(days=30))[0].__class__(
                key="new", sender="z", text="late", time=start + timedelta(days=30)
            )
        )
        await pilot.pause()
        assert round(log.scroll_y) == 0


async def test_log_updates_delivery_mark_in_place() -> None:
    app = LogApp()
    async with app.run_test(size=(60, 10)) as pilot:
        log = app.query_one(MessageLog)
        now = datetime(2026, 1, 1, 9, 0)
        log.add_item(
            LogItem(key="1", sender="me", text="hi", time=now, mark=DeliveryMark.PENDING, own=True)
        )
        await pilot.pause()
        assert "…" in log.render_line(1).text
        log.set_mark("1", DeliveryMark.FAILED)
        await pilot.pause()
        assert "✗" in log.render_line(1).text
        # Re-adding the same key updates instead of duplicating.
        log.add_item(LogItem(key="1", sender="me", text="hi again", time=now, own=True))
        assert log.message_count == 1


async def test_log_rewraps_on_resize() -> None:
    app = LogApp()
    async with app.run_test(size=(100, 10)) as pilot:
        log = app.query_one(MessageLog)
        log.add_item(LogItem(key="1", sender="a", text="word " * 30, time=datetime(2026, 1, 1)))
        await pilot.pause()
        wide = log.row_count
        await pilot.resize_terminal(50, 10)
        await pilot.pause()
        assert log.row_count > wide


async def test_log_prepends_older_pages_like_one_load() -> None:
    """Pages put above (across day boundaries) lay out exactly as loading all at once."""
    start = datetime(2026, 1, 1, 9, 0)
    items = _items(4000, start)  # about three days
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        whole = app.query_one(MessageLog)
        whole.set_items(items)
        await pilot.pause()
        whole.scroll_home(animate=False, immediate=True)
        await pilot.pause()
        rows = whole.row_count

        paged = MessageLog()
        await app.mount(paged)
        await app.query_one(MessageLog).remove()
        await pilot.pause()
        paged.set_items(items[3000:], has_older=True)
        paged.prepend_items(items[1440:3000], has_older=True)  # ends on a day boundary
        paged.prepend_items(items[1000:1440], has_older=True)
        paged.prepend_items(items[:1000], has_older=False)
        await pilot.pause()
        assert paged.message_count == 4000 and paged.row_count == rows
        assert [e.day for e in paged._entries if e.item is None] == [
            e.day for e in whole._entries if e.item is None
        ]
        # Same rows (the paged log's row space starts below zero).
        assert [r - paged._starts[0] for r in paged._starts] == whole._starts


async def test_wrapped_lines_keep_their_last_character_when_the_scrollbar_appears() -> None:
    """At 80 columns, the log wraps to the width left beside its scrollbar."""
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(MessageLog)
        start = datetime(2025, 1, 1, 9, 0)
        log.set_items(_items(2, start))  # no scrollbar yet
        await pilot.pause()
        text = "word " * 30 + "END"
        for i in range(40):  # now it scrolls
            log.add_item(
                LogItem(
                    key=f"long{i}",
                    sender="bob",
                    text=text,
                    time=start + timedelta(hours=1, minutes=i),
                    own=False,
                    mark=DeliveryMark.NONE,
                )
            )
        await pilot.pause()
        width = log.scrollable_content_region.width
        assert log._wrap_width == width
        rows = [log.render_line(y).text for y in range(log.size.height)]
        assert any(r.rstrip().endswith("END") for r in rows), rows
        assert all(len(r) <= width for r in rows)


async def test_prepending_a_page_leaves_the_shown_entries_alone() -> None:
    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(MessageLog)
        start = datetime(2026, 1, 1, 9, 0)
        items = _items(3_000, start)
        log.set_items(items[2_000:], has_older=True)
        await pilot.pause()
        shown_starts = list(log._starts)
        shown_entries = list(log._entries)
        wrapped: list[object] = []
        real_wrap = log._wrap

        def counting_wrap(entry: Any) -> tuple[str, ...]:
            wrapped.append(entry)
            return real_wrap(entry)

        log._wrap = counting_wrap  # type: ignore[method-assign]
        log.prepend_items(items[1_000:2_000], has_older=True)
        await pilot.pause()
        # Only the page was wrapped and laid out; the rows of what was shown
        # did not move (no pass over the whole log per page).
        assert len(wrapped) <= 1_000 + 2
        tail = len(shown_entries)
        assert log._entries[-tail + 1 :] == shown_entries[1:]
        assert log._starts[-tail + 1 :] == shown_starts[1:]
        assert log.message_count == 2_000
        assert log.item(items[1_000].key) is not None
        assert log.item(items[2_999].key) is not None


async def test_loaded_lines_are_not_walked_by_the_garbage_collector() -> None:
    # A full collection walks every tracked object; the wrapped lines of a
    # loaded message are a tuple of str, which the collector stops tracking.
    import gc

    app = LogApp()
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.query_one(MessageLog)
        items = _items(1_000, datetime(2026, 1, 1, 9, 0))
        log.set_items(items[500:], has_older=True)
        await pilot.pause()
        log.prepend_items(items[:500], has_older=False)
        await pilot.pause()
        gc.collect()
        assert log.message_count == 1_000
        assert not any(gc.is_tracked(e.lines) for e in log._entries)
