"""Damage tracking (``tui.damage``) draws exactly what Textual's full output draws.

Random frames (styles, double-width characters, partial regions) go to two
emulated terminals (pyte): one gets Textual's own bytes for each update, the
other the tracker's. After every frame both screens must hold the same
characters with the same colours and attributes, and the tracker must have
written fewer bytes; a repeated frame writes nothing.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Iterable
from typing import Literal

import pyte
import pytest
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import LayoutUpdate
from textual.geometry import Region
from textual.strip import Strip

from tests.e2e.tmux import Shown, visible_cells
from tui.damage import DamageTracker, Pen, _pen_change, move

_OFF_CODES = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:2[2-9]|5[45])(?:;[0-9;]*)?m")

W, H = 40, 12
STYLES = [
    Style(color="red", bgcolor="black"),
    Style(color="color(253)", bgcolor="color(235)", bold=True),
    Style(color="#00ff00", underline=True),
    Style(reverse=True),
    Style(bold=True, italic=True, strike=True, color="blue"),
    Style(dim=True, bgcolor="color(235)"),
    Style(underline=True, reverse=True, color="#ff8700"),
    None,
]
TEXT = "abcdefgh xyz 中文ü "
NARROW = "abcdefgh xyz ü "


def _line(rng: random.Random, width: int, text: str = TEXT) -> Strip:
    segments = []
    used = 0
    while used < width:
        char = rng.choice(text)
        w = 2 if char in "中文" else 1
        if used + w > width:
            char, w = " ", 1
        segments.append(Segment(char * 1, rng.choice(STYLES)))
        used += w
    return Strip(segments, width)


def _screen(screen: pyte.Screen) -> list[list[Shown]]:
    return visible_cells(screen)


@pytest.mark.parametrize(
    ("color_system", "attribute_off"),
    [("256", True), ("truecolor", True), ("standard", True), ("standard", False)],
)
def test_tracked_output_draws_the_same_screen_with_fewer_bytes(
    color_system: Literal["256", "truecolor", "standard"], attribute_off: bool
) -> None:
    """Pen carried across runs and frames, relative moves, reordered runs: same screen."""
    for style in STYLES:  # Textual caches a style's SGR for the first colour system
        if style is not None:
            style._ansi = None
    rng = random.Random(7)
    console = Console(color_system=color_system, width=W, height=H, force_terminal=True)
    full_screen, tracked_screen = pyte.Screen(W, H), pyte.Screen(W, H)
    full, tracked = pyte.Stream(full_screen), pyte.Stream(tracked_screen)
    tracker = DamageTracker(attribute_off=attribute_off)
    full_bytes = tracked_bytes = 0
    for frame in range(200):
        if frame == 0:
            region = Region(0, 0, W, H)
        else:
            x, y = rng.randrange(W - 1), rng.randrange(H)
            region = Region(x, y, rng.randint(1, W - x), rng.randint(1, H - y))
        strips: list[Iterable[Strip]] = [[_line(rng, region.width)] for _ in range(region.height)]
        if frame % 3:  # mostly unchanged content, as a keystroke or a new line would be
            strips = [
                [Strip([Segment(" " * region.width, STYLES[0])], region.width)]
            ] * region.height
        update = LayoutUpdate(strips, region)
        cursor = (rng.randrange(W), rng.randrange(H))
        a = update.render_segments(console)
        b = tracker.render(update, console, (W, H), cursor=cursor)
        full.feed(a)
        tracked.feed(b)
        full_bytes += len(a.encode())
        tracked_bytes += len(b.encode())
        assert _screen(tracked_screen) == _screen(full_screen), f"frame {frame}"
        assert (tracked_screen.cursor.x, tracked_screen.cursor.y) == cursor, f"frame {frame}"
        if not attribute_off:  # VT100: attributes go by a reset only
            assert not _OFF_CODES.search(b), f"frame {frame}"
    assert tracked_bytes < full_bytes
    # Whatever the pen was, a released terminal draws unstyled text unstyled.
    tracked.feed(tracker.release() + "\x1b[1;1Hq")
    q = tracked_screen.buffer[0][0]
    assert (q.data, q.fg, q.bg, q.bold, q.reverse) == ("q", "default", "default", False, False)


def test_a_resize_redraws_everything() -> None:
    console = Console(color_system="256", width=W, height=H, force_terminal=True)
    tracker = DamageTracker()
    blank: list[Iterable[Strip]] = [[Strip([Segment(" " * W, STYLES[0])], W)] for _ in range(H)]
    update = LayoutUpdate(blank, Region(0, 0, W, H))
    assert tracker.render(update, console, (W, H))
    assert tracker.render(update, console, (W, H)) == ""  # nothing changed
    assert tracker.render(update, console, (W, H + 1))  # new size: written again
    tracker.reset()
    assert tracker.render(update, console, (W, H + 1))


def test_partial_chops_land_where_textual_puts_them() -> None:
    """A ChopsUpdate whose dirty span starts inside a chop (a keystroke in a wide line)."""
    from textual._compositor import ChopsUpdate

    console = Console(color_system="256", width=W, height=H, force_terminal=True)
    full_screen, tracked_screen = pyte.Screen(W, H), pyte.Screen(W, H)
    full, tracked = pyte.Stream(full_screen), pyte.Stream(tracked_screen)
    tracker = DamageTracker()
    rng = random.Random(3)
    for frame in range(100):
        chops: list[dict[int, Strip | None]] = []
        ends: list[list[int]] = []
        spans: list[tuple[int, int, int]] = []
        for y in range(H):
            left = rng.randint(1, W - 1)
            # Narrow text: a span starting inside a double-width character is
            # cropped to a space by the tracker (Strip.crop), Textual writes it whole.
            chops.append({0: _line(rng, left, NARROW), left: _line(rng, W - left, NARROW)})
            ends.append([left, W])
            if frame == 0:
                spans.append((y, 0, W))
            elif rng.random() < 0.5:
                x1 = rng.randrange(W)
                spans.append((y, x1, rng.randint(x1 + 1, W)))
        if not spans:
            continue
        update = ChopsUpdate(chops, spans, ends)
        full.feed(update.render_segments(console))
        tracked.feed(tracker.render(update, console, (W, H)))
        # Textual also writes the rest of the segments around a span; inside it, both agree.
        for y, x1, x2 in spans:
            a, b = _screen(full_screen)[y][x1:x2], _screen(tracked_screen)[y][x1:x2]
            assert a == b, f"frame {frame} row {y}"


def _row(width: int, *parts: tuple[str, Style]) -> Strip:
    segments = [Segment(text, style) for text, style in parts]
    used = sum(len(text) for text, _ in parts)
    segments.append(Segment(" " * (width - used), parts[-1][1]))
    return Strip(segments, width)


def test_a_keystroke_in_the_composer_is_a_few_bytes() -> None:
    """Typed character + the composer's drawn cursor: ~10 B (WeeChat writes 7).

    Textual repaints the composer's line; reset + full colour pair per run and
    absolute moves made it 66 B over ssh.
    """
    text_style = Style(color="color(253)", bgcolor="color(235)")
    cursor_style = Style(color="color(233)", bgcolor="color(253)")
    log_style = Style(color="color(253)", bgcolor="color(234)")
    console = Console(color_system="256", width=80, height=24, force_terminal=True)
    full_screen, tracked_screen = pyte.Screen(80, 24), pyte.Screen(80, 24)
    full, tracked = pyte.Stream(full_screen), pyte.Stream(tracked_screen)
    tracker = DamageTracker()
    typed = "hello there, how are you"
    sizes = []
    for k in range(len(typed) + 1):
        line = _row(55, (typed[:k], text_style), (" ", cursor_style), ("", text_style))
        update = LayoutUpdate([[line]], Region(25, 20, 55, 1))
        if k == 0:  # the first frame: the whole screen
            rows: list[Iterable[Strip]] = [[_row(80, ("", log_style))] for _ in range(24)]
            update = LayoutUpdate(rows, Region(0, 0, 80, 24))
            full.feed(update.render_segments(console))
            tracked.feed(tracker.render(update, console, (80, 24)))
            update = LayoutUpdate([[line]], Region(25, 20, 55, 1))
        a = update.render_segments(console)
        b = tracker.render(update, console, (80, 24), cursor=(25 + k, 20))
        full.feed(a)
        tracked.feed(b)
        assert _screen(tracked_screen) == _screen(full_screen), f"keystroke {k}"
        sizes.append(len(b.encode()))
    # The first one also sets the text's foreground; then 7 and 12 B in turn
    # (the cursor cell is the text's colour reversed: SGR 7 / 27).
    assert max(sizes[2:]) <= 12 and statistics.median(sizes[1:]) <= 12, sizes
    # An incoming message: time, nick and text on a log row, cursor back in the composer.
    line = _row(
        56,
        ("03:01", Style(color="color(247)", bgcolor="color(234)")),
        ("   ", log_style),
        ("       bob", Style(bold=True, color="color(112)", bgcolor="color(234)")),
        (" incoming message number 000", log_style),
    )
    update = LayoutUpdate([[line]], Region(24, 6, 56, 1))
    a = update.render_segments(console)
    b = tracker.render(update, console, (80, 24), cursor=(25 + len(typed), 20))
    full.feed(a)
    tracked.feed(b)
    assert _screen(tracked_screen) == _screen(full_screen)
    assert len(b.encode()) <= 110, repr(b)  # the text and the name are 38 of them


@pytest.mark.parametrize(
    ("current", "target", "blank", "off", "expected"),
    [
        (Pen(attrs=frozenset({"1"}), fg="31"), Pen(fg="31"), False, True, "\x1b[22m"),
        (Pen(attrs=frozenset({"1"}), fg="31"), Pen(fg="31"), False, False, "\x1b[0;31m"),
        # 22 turns off bold and dim: dim is set again.
        (
            Pen(attrs=frozenset({"1", "2"}), fg="31"),
            Pen(attrs=frozenset({"2"}), fg="31"),
            False,
            True,
            "\x1b[22;2m",
        ),
        (Pen(attrs=frozenset({"1", "2"})), Pen(attrs=frozenset({"2"})), False, True, "\x1b[0;2m"),
        (Pen(fg="31", bg="42"), Pen(fg="33", bg="42"), False, True, "\x1b[33m"),
        (Pen(fg="31", bg="42"), Pen(fg="33", bg="42"), True, True, ""),  # a blank's fg
        (Pen(attrs=frozenset({"7"}), bg="42"), Pen(bg="42"), True, True, "\x1b[27m"),
        # A blank in the pen's foreground colour: reversed.
        (Pen(fg="38;5;253", bg="48;5;235"), Pen(bg="48;5;253"), True, True, "\x1b[7m"),
        (Pen(attrs=frozenset({"1"}), fg="31", bg="42"), Pen(bg="41"), True, True, "\x1b[41m"),
        (Pen(fg="38;5;253", bg="48;5;235"), Pen(), False, True, "\x1b[0m"),
        (None, Pen(fg="31"), False, True, "\x1b[0;31m"),
        (Pen(fg="31"), Pen(fg="31"), False, True, ""),
    ],
)
def test_pen_changes_only_what_differs(
    current: Pen | None, target: Pen, blank: bool, off: bool, expected: str
) -> None:
    sgr, after = _pen_change(current, target, blank=blank, off=off)
    assert sgr == expected
    if blank and "7" in after.attrs - target.attrs:  # reversed: the colour is the foreground
        assert after.fg == (target.bg or "").replace("48;", "38;")
        assert not after.attrs & {"1", "2"}
    else:
        assert after.bg == target.bg
    assert blank or (after.fg, after.attrs) == (target.fg, target.attrs)


@pytest.mark.parametrize(
    ("cursor", "to", "expected"),
    [
        (None, (4, 2), "\x1b[3;5H"),
        ((4, 2), (4, 2), ""),
        ((6, 2), (4, 2), "\b\b"),
        ((60, 2), (4, 2), "\x1b[56D"),
        ((60, 2), (0, 2), "\r"),
        ((3, 2), (4, 2), "\x1b[C"),
        ((4, 2), (4, 3), "\x1b[B"),
        ((4, 20), (4, 3), "\x1b[17A"),
        ((70, 20), (4, 3), "\x1b[4;5H"),
        ((70, 20), (0, 3), "\x1b[4H"),
    ],
)
def test_cursor_moves_are_the_shortest(
    cursor: tuple[int, int] | None, to: tuple[int, int], expected: str
) -> None:
    assert move(cursor, *to) == expected
    if cursor is not None:  # and they land where asked
        screen = pyte.Screen(80, 24)
        pyte.Stream(screen).feed(move(None, *cursor) + move(cursor, *to))
        assert (screen.cursor.x, screen.cursor.y) == to
