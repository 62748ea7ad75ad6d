"""What the terminal can draw, from ``TERM``, ``COLORTERM`` and the locale.

Read once at the CLI edge (:func:`tui.launch.launch`) and applied by the app:
a 16-colour terminal gets the ``ansi-dark`` theme (the terminal's own
palette, so text stays readable on ``linux``, ``vt100`` and ``screen``)
unless the config names a theme; a terminal without the eighth-block glyphs
(``▔ ▁ ▏ ▕``: the Linux console font, VT100-class terminals, a non-UTF-8
locale) gets the ``-basic-glyphs`` class, which draws separators and buttons
with ASCII and plain box lines instead. A VT100-class terminal knows only
SGR 0 to turn attributes off, so the damage tracker (:mod:`tui.damage`)
resets its pen there instead of using SGR 22-29.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TerminalCaps", "terminal_caps"]

_NO_ATTRIBUTE_OFF = ("vt100", "vt102", "ansi", "dumb")
_NO_BLOCKS = ("linux", "vt100", "vt102", "vt220", "vt320", "ansi", "cons25", "dumb")


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalCaps:
    """Drawing capabilities of the terminal the TUI runs in."""

    colors: int = 16_777_216
    """16, 256 or 16,777,216."""
    unicode_blocks: bool = True
    """Whether eighth-block glyphs (``▔ ▁ ▏ ▕``) render."""
    sgr_attribute_off: bool = True
    """Whether SGR 22-29 (turn one attribute off) are understood (not on VT100-class)."""


def terminal_caps(environ: Mapping[str, str]) -> TerminalCaps:
    """Capabilities implied by an environment (``TERM``, ``COLORTERM``, ``LANG``/``LC_*``)."""
    term = environ.get("TERM", "").lower()
    colorterm = environ.get("COLORTERM", "").lower()
    if colorterm in ("truecolor", "24bit"):
        colors = 16_777_216
    elif "256color" in term:
        colors = 256
    else:
        colors = 16
    locale = environ.get("LC_ALL") or environ.get("LC_CTYPE") or environ.get("LANG") or ""
    utf8 = "utf-8" in locale.lower() or "utf8" in locale.lower()
    base = term.split("-", 1)[0]
    blocks = utf8 and base not in _NO_BLOCKS
    return TerminalCaps(
        colors=colors, unicode_blocks=blocks, sgr_attribute_off=base not in _NO_ATTRIBUTE_OFF
    )
