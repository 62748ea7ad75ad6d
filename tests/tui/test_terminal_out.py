"""A hung-up terminal cannot wedge Textual's writer thread (tui.terminal_out)."""

from __future__ import annotations

import errno
import io
import threading

from textual.drivers._writer_thread import MAX_QUEUED_WRITES, WriterThread
from textual.drivers.linux_driver import LinuxDriver

from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp
from tui.settings import TuiSettings
from tui.terminal_out import HangupSafeOutput, TerminalDriver


class HungUp(io.StringIO):
    """A terminal whose writes fail as a hung-up tty's do (EIO)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise OSError(errno.EIO, "Input/output error")

    def fileno(self) -> int:
        return 2


def test_writes_after_a_hang_up_are_dropped_not_blocked() -> None:
    out = HangupSafeOutput(HungUp())
    thread = WriterThread(out)  # type: ignore[arg-type]
    thread.start()
    done = threading.Event()

    def shutdown_sequence() -> None:
        for _ in range(MAX_QUEUED_WRITES * 4):  # more than the queue holds
            thread.write("\x1b[?1049l")
        thread.stop()
        done.set()

    writer = threading.Thread(target=shutdown_sequence, daemon=True)
    writer.start()
    assert done.wait(10), "the writer thread wedged after the hang-up"
    assert out.gone
    assert not thread.is_alive()
    assert out.write("more") == 4  # still accepted, still dropped


def test_a_working_terminal_gets_everything() -> None:
    buf = io.StringIO()
    out = HangupSafeOutput(buf)
    out.write("a")
    out.write("b")
    out.flush()
    assert buf.getvalue() == "ab" and not out.gone


def test_the_app_uses_the_hang_up_safe_driver() -> None:
    app = QpcApp(FakeFactory(FakeEngine()), TuiSettings())
    assert issubclass(app.get_driver_class(), TerminalDriver)
    assert issubclass(TerminalDriver, LinuxDriver)
