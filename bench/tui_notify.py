"""Benchmark: terminal bytes and bells per 100 incoming messages in a background channel.

Run by hand from the repository root::

    python3 bench/tui_notify.py [--messages 100] [--code DIR ...]

The real TUI (Linux driver, 80x24 pseudo-terminal, TERM=xterm-256color, bell
and toasts on) runs in a child process around the in-memory test engine; once
the main screen is up, ``--messages`` messages arrive in a channel that is not
open, one every 20 ms. The parent reads everything the TUI writes to the
terminal and counts the bytes and BEL characters written from the first
message until 2.5 seconds after the last. ``--code`` runs the same scenario
against another checkout (e.g. a ``git worktree`` of an older commit) in the
same run, for a before/after table.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(messages: int, signal_fd: int) -> None:
    sys.path.insert(0, os.getcwd())
    from tests.tui.conftest import populated_engine
    from tests.tui.fake_engine import FakeFactory
    from tui.app import make_app
    from tui.screens.main import MainScreen
    from tui.settings import TuiSettings

    engine, _general, random = populated_engine()
    app = make_app(FakeFactory(engine), TuiSettings(ping_interval_s=0.0, bell=True))
    app.wall_clock_ms = lambda: engine.now_ms  # type: ignore[attr-defined]

    async def burst() -> None:
        while not isinstance(app.screen, MainScreen):  # noqa: ASYNC110 (polls the app)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        os.write(signal_fd, b"S")
        for i in range(messages):
            await engine.deliver(random.id, "bob", f"message number {i} in a busy channel")
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.5)  # the burst's toast and bell go out once it is quiet
        os.write(signal_fd, b"E")
        app.exit()

    async def start() -> None:
        app.run_worker(burst())

    app.call_later(start)
    app.run()


def run_once(code: Path, messages: int) -> tuple[int, int]:
    """(bytes, bells) written to the terminal during the burst, for ``code``."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    sig_r, sig_w = os.pipe()
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(code)}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(messages), str(sig_w)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=code,
        env=env,
        pass_fds=(sig_w,),
        start_new_session=True,
    )
    os.close(slave)
    os.close(sig_w)
    counting = threading.Event()
    counts = [0, 0]

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            if counting.is_set():
                counts[0] += len(data)
                counts[1] += data.count(b"\x07")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert os.read(sig_r, 1) == b"S"
    counting.set()
    assert os.read(sig_r, 1) == b"E"
    counting.clear()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    os.close(master)
    reader.join(timeout=5)
    return counts[0], counts[1]


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(int(sys.argv[2]), int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--code", type=Path, action="append", default=[])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    trees = [ROOT, *args.code]
    print(f"{args.messages} messages, one every 20 ms, in a channel that is not open (80x24)")
    print()
    print("| code | terminal bytes per 100 messages | bells per 100 messages |")
    print("|---|---:|---:|")
    for tree in trees:
        results = [run_once(tree, args.messages) for _ in range(args.runs)]
        scale = 100 / args.messages
        b = sorted(r[0] for r in results)[len(results) // 2] * scale
        bells = sorted(r[1] for r in results)[len(results) // 2] * scale
        print(f"| {tree} | {b:,.0f} | {bells:.0f} |", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
