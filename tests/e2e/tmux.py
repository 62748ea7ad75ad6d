"""Drive a terminal program in a detached tmux session: keys in, screen text out."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["Pane", "Shown", "have_tmux", "visible_cells"]


def have_tmux() -> bool:
    """Whether the tmux binary is available."""
    return shutil.which("tmux") is not None


class Pane:
    """One tmux session running one command at a fixed size.

    Reading the screen is ``capture-pane``; waiting polls it until a text
    shows up or a deadline passes (no fixed sleeps), and a timeout fails with
    the whole screen in the message.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        size: tuple[int, int] = (100, 30),
    ) -> None:
        self.name = name
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        command = f"cd {shlex.quote(cwd)} && env {exports} {shlex.join(argv)}"
        self._tmux("new-session", "-d", "-s", name, "-x", str(size[0]), "-y", str(size[1]), command)
        self._tmux("set-option", "-t", name, "remain-on-exit", "on")

    @staticmethod
    def _tmux(*args: str) -> str:
        done = subprocess.run(
            ["tmux", *args], check=True, capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def screen(self) -> str:
        """The visible text of the pane."""
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        """Send tmux key names (``Enter``, ``Tab``, ``C-n``, ``F1``) one at a time."""
        for key in keys:
            self._tmux("send-keys", "-t", self.name, key)

    def type(self, text: str) -> None:
        """Type ``text`` literally."""
        self._tmux("send-keys", "-t", self.name, "-l", text)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Poll the screen until ``text`` is on it; return the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on {self.name}'s screen after {timeout}s:\n{screen}")

    def dead(self) -> bool:
        """Whether the program has exited."""
        out = self._tmux("list-panes", "-t", self.name, "-F", "#{pane_dead}")
        return out.strip() == "1"

    def wait_exit(self, timeout: float = 20.0) -> None:
        """Poll until the program has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dead():
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} still running after {timeout}s:\n{self.screen()}")

    def kill(self) -> None:
        """Remove the session."""
        subprocess.run(
            ["tmux", "kill-session", "-t", self.name], capture_output=True, check=False, timeout=10
        )


Shown = tuple[str, str | None, str, bool | None, bool | None, bool, bool, bool]
"""A cell as a person sees it: text, colours, bold, italics, underline, strike, reverse."""


def visible_cells(screen: Any) -> list[list[Shown]]:
    """What a person sees in every cell of a ``pyte.Screen``.

    A blank shows only its colour (the background, or reversed, the
    foreground) and its lines (underline, strike-through): its foreground,
    boldness and italics do not show, so they are not compared.
    """
    rows = []
    for y in range(screen.lines):
        row = screen.buffer[y]
        cells: list[Shown] = []
        for c in (row[x] for x in range(screen.columns)):
            shown: Shown
            if c.data == " ":
                colour = ("fg:" + c.fg if c.fg == "default" else c.fg) if c.reverse else c.bg
                shown = (c.data, None, colour, None, None, c.underscore, c.strikethrough, False)
            else:
                shown = (
                    c.data,
                    c.fg,
                    c.bg,
                    c.bold,
                    c.italics,
                    c.underscore,
                    c.strikethrough,
                    c.reverse,
                )
            cells.append(shown)
        rows.append(cells)
    return rows
