"""Damage tracking (``tui.damage``) draws exactly what Textual's full output draws.

Random frames (styles, double-width characters, partial regions) go to two
emulated terminals (pyte): one gets Textual's own bytes for each update, the
other the tracker's. After every frame both screens must hold the same
characters with the same colours and attributes, and the tracker must have
written fewer bytes; a repeated frame writes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pyte
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import LayoutUpdate
from textual.geometry import Region
from textual.strip import Strip

from tui.damage import DamageTracker

W, H = 40, 12
STYLES = [
    Style(color="red", bgcolor="black"),
    Style(color="color(253)", bgcolor="color(235)", bold=True),
    Style(color="#00ff00", underline=True),
    Style(reverse=True),
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


Shown = tuple[str, str | None, str, bool | None, bool, bool]


def _screen(screen: pyte.Screen) -> list[list[Shown]]:
    """What a person sees in every cell: a blank's foreground and boldness do not show."""
    rows = []
    for y in range(screen.lines):
        row = screen.buffer[y]
        cells: list[Shown] = []
        for c in (row[x] for x in range(screen.columns)):
            if c.data == " " and not c.reverse:
                cells.append((c.data, None, c.bg, None, c.underscore, c.reverse))
            else:
                cells.append((c.data, c.fg, c.bg, c.bold, c.underscore, c.reverse))
        rows.append(cells)
    return rows


def test_tracked_output_draws_the_same_screen_with_fewer_bytes() -> None:
    rng = random.Random(7)
    console = Console(color_system="256", width=W, height=H, force_terminal=True)
    full_screen, tracked_screen = pyte.Screen(W, H), pyte.Screen(W, H)
    full, tracked = pyte.Stream(full_screen), pyte.Stream(tracked_screen)
    tracker = DamageTracker()
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
        a = update.render_segments(console)
        b = tracker.render(update, console, (W, H))
        full.feed(a)
        tracked.feed(b)
        full_bytes += len(a.encode())
        tracked_bytes += len(b.encode())
        assert _screen(tracked_screen) == _screen(full_screen), f"frame {frame}"
    assert tracked_bytes < full_bytes


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
