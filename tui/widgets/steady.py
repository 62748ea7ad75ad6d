"""Inputs whose cursor does not blink.

A blinking cursor repaints its cell twice a second: idle CPU, and over ssh a
steady trickle of bytes while nobody types (``docs/perf/ssh.md``). Every
text field of the TUI is made with :func:`steady_input`; the composer turns
its own blink off the same way.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Input

__all__ = ["steady_input"]


def steady_input(*args: Any, **kwargs: Any) -> Input:
    """A :class:`textual.widgets.Input` (same arguments) with a steady cursor."""
    field = Input(*args, **kwargs)
    field.cursor_blink = False
    return field
