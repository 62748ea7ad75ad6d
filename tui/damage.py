"""Damage tracking: write only the terminal cells that changed since the last frame.

Textual's compositor repaints whole widget lines: a keystroke in the
composer rewrites its three lines (~400 bytes at 80 columns), a new message
the log's visible lines. Over ssh those bytes are the link's traffic. This
layer sits between the compositor and the driver (:meth:`tui.app.QpcApp._display`
hands it each :class:`textual._compositor.LayoutUpdate` / ``ChopsUpdate``):
it keeps a shadow copy of the screen (character and style per cell), and
turns an update into cursor moves and styled text for the cells that differ,
so a keystroke costs the typed character and the moved cursor cell.

It assumes nothing else writes to the screen between frames: a size change
or :meth:`DamageTracker.reset` (after the terminal was cleared or resumed)
forgets the shadow, and the next frame is written in full. An update it
cannot model (control segments inside a strip) is written as Textual would
and forgets the shadow. A dirty span that starts inside a double-width
character writes a space for its half (``Strip.crop``), where Textual would
rewrite the whole character.

``python3 bench/ssh.py bytes`` measures it (``docs/perf/ssh.md``); the
``[tui] damage_tracking = false`` setting turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual.strip import Strip

__all__ = ["DamageTracker"]

Cell = tuple[str, Style | None]
_WIDE_TAIL: Cell = ("", None)
"""The second cell of a double-width character."""
_GAP = 3
"""Unchanged cells between two changes written anyway (cheaper than a cursor move)."""


def _runs(update: LayoutUpdate | ChopsUpdate) -> Iterator[tuple[int, int, Iterable[Segment]]]:
    """(x, y, segments) of every piece of ``update``, as Textual would write them."""
    if isinstance(update, LayoutUpdate):
        x0 = update.region.x
        for y, line in enumerate(update.strips, update.region.y):
            x = x0
            for strip in line:
                yield x, y, strip
                x += strip.cell_length
        return
    for y, x1, x2 in update.spans:
        chops = update.chops[y]
        ends = update.chop_ends[y]
        for end, (cx, chop) in zip(ends, chops.items(), strict=False):
            if chop is None or cx > x2 or end <= x1:
                continue
            yield max(cx, x1), y, _crop(chop, cx, x1, x2)


def _crop(strip: Strip, x: int, x1: int, x2: int) -> Iterable[Segment]:
    """The segments of ``strip`` (starting at column ``x``) within ``[x1, x2)``."""
    if x >= x1 and x + strip.cell_length <= x2:
        return strip
    return strip.crop(max(0, x1 - x), max(0, x2 - x))


class DamageTracker:
    """A shadow of the terminal screen; :meth:`render` writes only what changed."""

    def __init__(self) -> None:
        """Start with nothing known: the first frame is written in full."""
        self._rows: list[list[Cell | None]] = []
        self._width = 0
        self.cells_written = 0
        """Cells written so far (for tests and the benchmark)."""

    def reset(self, width: int = 0, height: int = 0) -> None:
        """Forget the screen (resized, cleared, or given back to the shell)."""
        self._width = width
        self._rows = [[None] * width for _ in range(height)]

    def render(
        self, update: LayoutUpdate | ChopsUpdate, console: Console, size: tuple[int, int]
    ) -> str:
        """Escape sequences that bring the terminal from the shadow to ``update``."""
        width, height = size
        if width != self._width or height != len(self._rows):
            self.reset(width, height)
        changed: dict[int, dict[int, Cell]] = {}
        for x, y, segments in _runs(update):
            if not 0 <= y < height:
                continue
            row = self._rows[y]
            for segment in segments:
                text, style, control = segment
                if control:
                    # Not a grid of cells: write it as Textual would and forget
                    # the screen (the next frame is written whole).
                    self.reset(width, height)
                    return update.render_segments(console)
                for char in text:
                    w = cell_len(char)
                    if w == 0:
                        continue
                    if 0 <= x < width:
                        cell: Cell = (char, style)
                        if row[x] != cell:
                            row[x] = cell
                            changed.setdefault(y, {})[x] = cell
                        if w == 2 and x + 1 < width:
                            row[x + 1] = _WIDE_TAIL
                    x += w
        return self._write(changed, console)

    def _write(self, changed: dict[int, dict[int, Cell]], console: Console) -> str:
        color_system = console._color_system or ColorSystem.TRUECOLOR
        out: list[str] = []
        for y in sorted(changed):
            xs = sorted(changed[y])
            row = self._rows[y]
            start = prev = xs[0]
            for x in [*xs[1:], None]:
                if x is not None and x - prev <= _GAP + 1 and self._plain(row, prev, x):
                    prev = x
                    continue
                out.append(f"\x1b[{y + 1};{start + 1}H")
                out.append(self._span(row, start, prev, color_system))
                if x is not None:
                    start = prev = x
        return "".join(out)

    @staticmethod
    def _plain(row: list[Cell | None], a: int, b: int) -> bool:
        """Whether the cells between ``a`` and ``b`` are known (so they can be rewritten)."""
        return all(row[i] is not None for i in range(a + 1, b))

    def _span(self, row: list[Cell | None], a: int, b: int, color_system: ColorSystem) -> str:
        """Cells ``a``..``b`` of ``row`` as styled text (one style change per run)."""
        parts: list[str] = []
        text: list[str] = []
        style: Style | None = None
        x = a
        while x <= b:
            cell = row[x]
            assert cell is not None
            char, cell_style = cell
            if cell == _WIDE_TAIL:
                x += 1
                continue
            if cell_style != style and text:
                parts.append(self._styled("".join(text), style, color_system))
                text = []
            style = cell_style
            text.append(char)
            self.cells_written += 1
            x += cell_len(char)
        if text:
            parts.append(self._styled("".join(text), style, color_system))
        return "".join(parts)

    @staticmethod
    def _styled(text: str, style: Style | None, color_system: ColorSystem) -> str:
        if style is None:
            return text
        return Strip.render_style(style, text, color_system=color_system)
