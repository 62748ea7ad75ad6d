"""Damage tracking: write only the terminal cells that changed since the last frame.

Textual's compositor repaints whole widget lines: a keystroke in the
composer rewrites its three lines (~400 bytes at 80 columns), a new message
the log's visible lines. Over ssh those bytes are the link's traffic. This
layer sits between the compositor and the driver (:meth:`tui.app.QpcApp._display`
hands it each :class:`textual._compositor.LayoutUpdate` / ``ChopsUpdate``):
it keeps a shadow copy of the screen (character and style per cell), and
turns an update into cursor moves and styled text for the cells that differ.

How those cells are written is the other half of the bytes (a keystroke is
two changed cells: the typed character and the composer's drawn cursor,
each in its own colours). The tracker also knows the terminal's state:

* **the pen**: the SGR attributes in effect. A run of cells changes only
  what differs from the pen (Textual writes a reset and the full colour pair
  per run), with a reset instead when that is shorter or when the terminal
  cannot turn one attribute off (``attribute_off=False``: VT100-class
  terminals know only SGR 0). A run of blanks needs only what a blank shows
  (background, underline, strike-through, overline), so its foreground and
  bold/italic/dim/blink are left as the pen has them;
* **the cursor**: where the last write left it. A move is the shortest of
  an absolute, a relative and a carriage-return move, and none when the
  cursor is already there; the frame ends with the hardware cursor where
  Textual puts it (``cursor``), by the same rule;
* **the order**: the runs of a small frame are written cheapest-first
  (move + pen change from where the last one left off), so a run in the
  colours the pen already has goes before one that needs new colours.

It assumes nothing else draws on the screen between frames: a size change
or :meth:`DamageTracker.reset` (after the terminal was cleared or resumed)
forgets the shadow, the pen and the cursor, and the next frame is written in
full; :meth:`DamageTracker.release` gives the terminal back with the pen
reset (before Textual's own output, a suspend or the exit). An update it
cannot model (control segments inside a strip) is written as Textual would
and forgets the shadow. A dirty span that starts inside a double-width
character writes a space for its half (``Strip.crop``), where Textual would
rewrite the whole character.

``python3 bench/ssh.py bytes`` measures it (``docs/perf/ssh.md``); the
``[tui] damage_tracking = false`` setting turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual.strip import Strip

__all__ = ["DamageTracker", "Pen"]

Cell = tuple[str, Style | None]
_WIDE_TAIL: Cell = ("", None)
"""The second cell of a double-width character."""
_GAP = 3
"""Unchanged cells between two changes written anyway (cheaper than a cursor move)."""
_REORDER_LIMIT = 48
"""Runs in a frame up to which they are written cheapest-first (quadratic)."""
_CACHE_LIMIT = 4096

_OFF = {
    "1": "22",
    "2": "22",
    "3": "23",
    "4": "24",
    "21": "24",
    "5": "25",
    "6": "25",
    "7": "27",
    "8": "28",
    "9": "29",
    "51": "54",
    "52": "54",
    "53": "55",
}
"""SGR code that turns an attribute off (22 turns off both bold and dim)."""
_SEEN_ON_BLANK = frozenset({"4", "21", "7", "9", "53", "51", "52"})
"""Attributes that show on a blank cell (besides its background; reversed, its foreground)."""
_SEEN_REVERSED = _SEEN_ON_BLANK | {"1", "2"}
"""... and on a reversed one, whose colour bold or dim may change."""


class Pen(NamedTuple):
    """The SGR state of the terminal: set attributes and colours as SGR codes."""

    attrs: frozenset[str] = frozenset()
    fg: str | None = None
    """e.g. ``38;5;253``; None is the default colour."""
    bg: str | None = None


_DEFAULT = Pen()


class _Run(NamedTuple):
    """Cells of one row in one style, to be written together."""

    x: int
    y: int
    text: str
    width: int
    style: Style | None
    blank: bool


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


def _horizontal(cx: int, x: int) -> str:
    """Move the cursor along its row from column ``cx`` to ``x``."""
    if x == cx:
        return ""
    if x == 0:
        return "\r"
    if x < cx:
        n = cx - x
        return "\b" * n if n <= 4 else f"\x1b[{n}D"
    n = x - cx
    return "\x1b[C" if n == 1 else f"\x1b[{n}C"


def move(cursor: tuple[int, int] | None, x: int, y: int) -> str:
    """The shortest sequence that moves the cursor from ``cursor`` (None: unknown) to (x, y)."""
    cup = f"\x1b[{y + 1};{x + 1}H" if x else f"\x1b[{y + 1}H"
    if cursor is None:
        return cup
    cx, cy = cursor
    if cy == y:
        h = _horizontal(cx, x)
        return h if len(h) <= len(cup) else cup
    dy = y - cy
    n = abs(dy)
    v = ("\x1b[" if n == 1 else f"\x1b[{n}") + ("B" if dy > 0 else "A")
    rel = v + _horizontal(cx, x)
    return rel if len(rel) < len(cup) else cup


class DamageTracker:
    """A shadow of the terminal screen; :meth:`render` writes only what changed."""

    def __init__(self, *, attribute_off: bool = True) -> None:
        """Start with nothing known: the first frame is written in full.

        Args:
            attribute_off: whether the terminal understands SGR 22-29/54/55
                (turn one attribute off); without them a pen loses
                attributes by a reset (SGR 0).
        """
        self.attribute_off = attribute_off
        self._rows: list[list[Cell | None]] = []
        self._width = 0
        self._pen: Pen | None = None
        self._cursor: tuple[int, int] | None = None
        self._pens: dict[tuple[Style | None, ColorSystem], Pen] = {}
        self._changes: dict[tuple[Pen | None, Pen, bool], tuple[str, Pen]] = {}
        self.cells_written = 0
        """Cells written so far (for tests and the benchmark)."""

    def reset(self, width: int = 0, height: int = 0) -> None:
        """Forget the screen, the pen and the cursor (resized, cleared, given back to the shell)."""
        self._width = width
        self._rows = [[None] * width for _ in range(height)]
        self._pen = None
        self._cursor = None

    def release(self) -> str:
        """What leaves the terminal with the default pen before others write to it.

        The cursor is forgotten too (whoever writes next moves it).
        """
        self._cursor = None
        if self._pen == _DEFAULT:
            return ""
        self._pen = _DEFAULT
        return "\x1b[0m"

    def render(
        self,
        update: LayoutUpdate | ChopsUpdate,
        console: Console,
        size: tuple[int, int],
        cursor: tuple[int, int] | None = None,
    ) -> str:
        """Escape sequences that bring the terminal from the shadow to ``update``.

        ``cursor`` is where the hardware cursor is left afterwards (Textual's
        ``cursor_position``); None leaves it after the last cell written.
        """
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
                    released = self.release()
                    self.reset(width, height)
                    return released + update.render_segments(console)
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
        color_system = console._color_system or ColorSystem.TRUECOLOR
        out = self._write(self._style_runs(changed), color_system)
        if cursor is not None:
            out += move(self._cursor, *cursor)
            self._cursor = cursor
        return out

    def _style_runs(self, changed: dict[int, dict[int, Cell]]) -> list[_Run]:
        """The changed cells as runs of one style, gaps of a few known cells filled."""
        runs: list[_Run] = []
        for y in sorted(changed):
            xs = sorted(changed[y])
            row = self._rows[y]
            start = prev = xs[0]
            for x in [*xs[1:], None]:
                if x is not None and x - prev <= _GAP + 1 and self._plain(row, prev, x):
                    prev = x
                    continue
                self._split(row, y, start, prev, runs)
                if x is not None:
                    start = prev = x
        return runs

    @staticmethod
    def _plain(row: list[Cell | None], a: int, b: int) -> bool:
        """Whether the cells between ``a`` and ``b`` are known (so they can be rewritten)."""
        return all(row[i] is not None for i in range(a + 1, b))

    def _split(self, row: list[Cell | None], y: int, a: int, b: int, runs: list[_Run]) -> None:
        """Cells ``a``..``b`` of ``row`` appended to ``runs``, one run per style."""
        text: list[str] = []
        style: Style | None = None
        x0 = x = a
        while x <= b:
            cell = row[x]
            assert cell is not None
            if cell == _WIDE_TAIL:
                x += 1
                continue
            char, cell_style = cell
            if cell_style != style and text:
                runs.append(self._run(x0, y, "".join(text), x - x0, style))
                text = []
            if not text:
                x0 = x
            style = cell_style
            text.append(char)
            self.cells_written += 1
            x += cell_len(char)
        if text:
            runs.append(self._run(x0, y, "".join(text), x - x0, style))

    @staticmethod
    def _run(x: int, y: int, text: str, width: int, style: Style | None) -> _Run:
        blank = not text.strip(" ") and not (style is not None and (style.reverse or style.link))
        return _Run(x=x, y=y, text=text, width=width, style=style, blank=blank)

    def _write(self, runs: list[_Run], color_system: ColorSystem) -> str:
        """The runs as moves, pen changes and text, cheapest next run first."""
        out: list[str] = []
        if len(runs) > _REORDER_LIMIT:
            for run in runs:
                self._emit(run, color_system, out)
            return "".join(out)
        pending = runs
        while pending:
            best_i, best_cost = 0, -1
            for i, run in enumerate(pending):
                cost = len(move(self._cursor, run.x, run.y))
                cost += len(self._change(run, color_system)[0])
                if best_cost < 0 or cost < best_cost:
                    best_i, best_cost = i, cost
                    if cost == 0:
                        break
            self._emit(pending.pop(best_i), color_system, out)
        return "".join(out)

    def _emit(self, run: _Run, color_system: ColorSystem, out: list[str]) -> None:
        """Move to ``run``, change the pen for it and write it."""
        out.append(move(self._cursor, run.x, run.y))
        if run.style is not None and run.style.link:
            # A hyperlink: Textual's own form (OSC 8 around a full SGR and a reset).
            out.append(self.release())
            out.append(Strip.render_style(run.style, run.text, color_system=color_system))
        else:
            sgr, self._pen = self._change(run, color_system)
            out.append(sgr)
            out.append(run.text)
        end = run.x + run.width
        # At the last column the cursor waits to wrap: where it is is not portable.
        self._cursor = (end, run.y) if end < self._width else None

    def _pen_of(self, style: Style | None, color_system: ColorSystem) -> Pen:
        key = (style, color_system)
        pen = self._pens.get(key)
        if pen is None:
            if len(self._pens) > _CACHE_LIMIT:
                self._pens.clear()
            pen = _DEFAULT
            if style is not None:
                attrs = frozenset(_attributes(style))
                fg = style.color.downgrade(color_system) if style.color is not None else None
                bg = style.bgcolor.downgrade(color_system) if style.bgcolor is not None else None
                fg_codes = ";".join(fg.get_ansi_codes()) if fg is not None else ""
                bg_codes = ";".join(bg.get_ansi_codes(False)) if bg is not None else ""
                pen = Pen(
                    attrs=attrs,
                    fg=None if fg_codes in ("", "39") else fg_codes,
                    bg=None if bg_codes in ("", "49") else bg_codes,
                )
            self._pens[key] = pen
        return pen

    def _change(self, run: _Run, color_system: ColorSystem) -> tuple[str, Pen]:
        """The SGR sequence that makes the pen fit ``run``, and the pen after it."""
        target = self._pen_of(run.style, color_system)
        key = (self._pen, target, run.blank)
        found = self._changes.get(key)
        if found is None:
            if len(self._changes) > _CACHE_LIMIT:
                self._changes.clear()
            found = _pen_change(self._pen, target, blank=run.blank, off=self.attribute_off)
            self._changes[key] = found
        return found


def _attributes(style: Style) -> list[str]:
    """SGR codes of the attributes ``style`` sets (Rich's order)."""
    attributes = style._attributes & style._set_attributes
    return [
        Style._style_map[bit] for bit in range(attributes.bit_length()) if attributes & (1 << bit)
    ]


def _sgr(params: list[str]) -> str:
    return f"\x1b[{';'.join(params)}m" if params else ""


def _pen_change(current: Pen | None, target: Pen, *, blank: bool, off: bool) -> tuple[str, Pen]:
    """The shortest SGR sequence from ``current`` (None: unknown) to a pen that draws ``target``.

    For a blank run (spaces, not reversed) only the colour of the cell and
    the attributes seen on a blank must match: its background, or reversed,
    the same colour as foreground (a block cursor drawn in the text's colour
    is then SGR 7 away from the text's pen).
    """
    if not blank:
        return _change_to(current, target, fg_free=False, bg_free=False, off=off)
    wanted = target.attrs & _SEEN_ON_BLANK
    best = _change_to(
        current, Pen(attrs=wanted, bg=target.bg), fg_free=True, bg_free=False, off=off
    )
    if target.bg is not None and "7" not in wanted:
        fg = _as_foreground(target.bg)
        if fg is not None:
            reversed_pen = Pen(attrs=wanted | {"7"}, fg=fg)
            # Bold or dim would change that colour on some terminals: off too.
            other = _change_to(
                current, reversed_pen, fg_free=False, bg_free=True, off=off, seen=_SEEN_REVERSED
            )
            if len(other[0]) < len(best[0]):
                best = other
    return best


def _as_foreground(bg: str) -> str | None:
    """The foreground SGR code of background colour ``bg`` (``48;5;235`` -> ``38;5;235``)."""
    if bg.startswith("48;"):
        return "38;" + bg[3:]
    if len(bg) == 2 and bg.startswith("4"):
        return "3" + bg[1]
    if len(bg) == 3 and bg.startswith("10"):
        return "9" + bg[2]
    return None


def _change_to(
    current: Pen | None,
    target: Pen,
    *,
    fg_free: bool,
    bg_free: bool,
    off: bool,
    seen: frozenset[str] = _SEEN_ON_BLANK,
) -> tuple[str, Pen]:
    """SGR from ``current`` to ``target``'s attributes and its colours that are not free.

    With a free colour (a blank), only the attributes in ``seen`` count.
    """
    # From a reset: everything wanted.
    reset_params = ["0", *sorted(target.attrs, key=int)]
    if target.fg is not None and not fg_free:
        reset_params.append(target.fg)
    if target.bg is not None and not bg_free:
        reset_params.append(target.bg)
    after_reset = Pen(
        attrs=target.attrs,
        fg=None if fg_free else target.fg,
        bg=None if bg_free else target.bg,
    )
    best = (_sgr(reset_params), after_reset)
    if current is None:
        return best
    # The difference from the current pen.
    relevant = current.attrs & seen if fg_free or bg_free else current.attrs
    remove = relevant - target.attrs
    if remove and (not off or any(a not in _OFF for a in remove)):
        return best
    offs = {_OFF[a] for a in remove}
    cleared = {a for a in current.attrs if _OFF.get(a) in offs}
    add = (target.attrs - current.attrs) | (target.attrs & cleared)
    params = sorted(offs, key=int) + sorted(add, key=int)
    fg, bg = current.fg, current.bg
    if not fg_free and current.fg != target.fg:
        fg = target.fg
        params.append(target.fg or "39")
    if not bg_free and current.bg != target.bg:
        bg = target.bg
        params.append(target.bg or "49")
    diff = (_sgr(params), Pen(attrs=(current.attrs - cleared) | add, fg=fg, bg=bg))
    return diff if len(diff[0]) <= len(best[0]) else best
