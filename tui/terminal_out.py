"""The terminal output a hang-up cannot wedge.

Textual writes every frame through a writer thread with a queue of 30
writes. When the terminal hangs up (an ssh drop, a closed tmux window) the
thread's next ``write`` fails with ``EIO``, the thread dies, and once 30
more writes are queued every later one -- Textual's own shutdown sequence
included -- blocks the app for good: the process never exits and a
``qpc demo`` node is never stopped. :class:`HangupSafeOutput` stands
between the writer thread and the terminal: after the first failed write
or flush it drops all output, so the thread keeps draining its queue and
the app shuts down as on Ctrl+Q. :class:`TerminalDriver` is Textual's
Linux driver with that output; :meth:`tui.app.QpcApp.get_driver_class`
picks it.
"""

from __future__ import annotations

import logging
from typing import IO, Any

from textual.drivers.linux_driver import LinuxDriver

__all__ = ["HangupSafeOutput", "TerminalDriver"]

log = logging.getLogger("tui.terminal")


class HangupSafeOutput:
    """A text stream that drops its output once the terminal is gone."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.gone = False
        """True after a write or flush failed: nothing more is written."""

    def write(self, text: str) -> int:
        """Write ``text``; after a failure, pretend to (the terminal is gone)."""
        if not self.gone:
            try:
                self._file.write(text)
            except (OSError, ValueError) as exc:
                self._lost(exc)
        return len(text)

    def flush(self) -> None:
        """Flush; a failure marks the terminal gone."""
        if not self.gone:
            try:
                self._file.flush()
            except (OSError, ValueError) as exc:
                self._lost(exc)

    def fileno(self) -> int:
        """The terminal's file descriptor (Textual reads its size through it)."""
        return self._file.fileno()

    def isatty(self) -> bool:
        """Whether the underlying file is a terminal."""
        return self._file.isatty()

    def _lost(self, exc: BaseException) -> None:
        self.gone = True
        log.info("terminal output failed (%s); dropping further output", type(exc).__name__)


class TerminalDriver(LinuxDriver):
    """Textual's Linux driver writing through :class:`HangupSafeOutput`."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        """See :class:`textual.drivers.linux_driver.LinuxDriver`."""
        super().__init__(app, **kwargs)
        if self._file is not None:
            self._file = HangupSafeOutput(self._file)  # type: ignore[assignment]
