"""Benchmark the TUI: cold start, a 10,000-message channel, idle CPU; long histories.

Run by hand from the repository root (needs tmux)::

    python3 bench/tui.py [--runs 5] [--idle-seconds 10] [--out docs/perf/tui.md]
    python3 bench/tui.py --long 100000 [--code DIR ...]

``--long N`` runs only the long-history scenario (no tmux): a headless app
(120x40) around the in-memory engine with one channel of N messages, opened
from another channel. It prints, for this checkout and each ``--code`` checkout
(e.g. ``git archive main`` unpacked with the native module copied in) in the
same run, each in its own process:

* **open**: from choosing the channel to the newest message in the log and
  a frame drawn;
* **paging**: 300 PgUp from the newest message, older pages loading as the
  view nears the top: median and longest step;
* **top**: Home repeatedly until 30,000 messages are loaded: longest step;
* **drag**: the scrollbar dragged from the newest message to the top of what
  is loaded in 200 frames (``scroll_to``), pages loading meanwhile.

A step is the action plus ``pilot.pause()`` (which waits for 20 ms of idle,
so it includes every frame of an animation); each scenario also reports its
longest loop stall: the longest time the event loop ran no 5 ms ticker
(no key handled, no frame drawn).

The engine is the in-memory one with its history indexed like the profile's
(a page costs its length) and yielding once per call as the real one does
while SQLite reads in its thread; its 100,000 messages are frozen out of the
garbage collector, as rows on disk would be.

* **cold start**: spawn ``qpc`` in a fresh 80x24 tmux session (fresh data
  dir, so the welcome screen) and poll ``capture-pane`` every 5 ms until the
  form is drawn; also ``qpc`` resuming a logged-in profile until the main
  screen shows ``connected`` (engine open, QUIC handshake, channel list).
* **10,000 messages**: headless app with an in-memory engine holding one
  channel of 10,000 messages; time to open it (newest page -> log laid out
  -> first frame), then paging from the newest to the oldest message.
* **idle CPU**: the real ``qpc`` logged in on the main screen, connected to
  a local node (fetchWait held, keepalives, ping pane every 5 s): CPU time of
  the TUI process over ``--idle-seconds`` from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --long-child runs on another checkout (QPC_BENCH_CODE) for a before/after table.
sys.path.insert(0, os.environ.get("QPC_BENCH_CODE", str(ROOT)))

from tests.tui.fake_engine import FakeEngine, FakeFactory  # noqa: E402
from tui.app import make_app  # noqa: E402
from tui.client.api import Message  # noqa: E402
from tui.client.localnode import ensure_local_node, stop_local_node  # noqa: E402
from tui.settings import TuiSettings  # noqa: E402
from tui.widgets.message_log import MessageLog  # noqa: E402


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


def _spawn(name: str, env: dict[str, str], argv: list[str]) -> float:
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    cmd = f"cd {shlex.quote(str(ROOT))} && exec env {exports} {shlex.join(argv)}"
    start = time.perf_counter()
    _tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", cmd)
    return start


def _wait_screen(name: str, text: str, start: float, timeout: float = 60) -> float:
    while time.perf_counter() - start < timeout:
        if text in _tmux("capture-pane", "-p", "-t", name):
            return time.perf_counter() - start
        time.sleep(0.005)
    raise RuntimeError(f"{text!r} never appeared in {name}")


def _kill(name: str) -> None:
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def _qpc() -> list[str]:
    return [sys.executable, "-m", "tui.cli"]


def cold_start(runs: int, base: Path) -> list[float]:
    """Seconds from spawn to the welcome form, ``runs`` times."""
    times = []
    for i in range(runs):
        name = f"qpc-bench-cold-{os.getpid()}-{i}"
        env = {"QPC_DATA_DIR": str(base / f"cold{i}"), "TERM": "xterm-256color"}
        start = _spawn(name, env, _qpc())
        try:
            times.append(_wait_screen(name, "Passphrase (encrypts", start))
        finally:
            _kill(name)
    return times


def _register(base: Path, node_addr: str) -> dict[str, str]:
    env = {
        **os.environ,
        "QPC_DATA_DIR": str(base),
        "QPC_KDF": "fast",
        "QPC_PASSPHRASE": "bench passphrase",
        "QPC_PASSWORD": "bench password",
    }
    profile = str(base / "profiles" / "bench")
    for args in (["register", "bench"], ["create-group", "bench"]):
        subprocess.run(
            [*_qpc(), "--server", node_addr, "--trust-new-key", "--profile", profile, *args],
            env=env,
            check=True,
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        )
    keep = ("QPC_DATA_DIR", "QPC_KDF", "QPC_PASSPHRASE")
    return {k: env[k] for k in keep} | {"TERM": "xterm-256color", "QPC_PROFILE": profile}


def resume_start(runs: int, env: dict[str, str]) -> list[float]:
    """Seconds from spawn to the main screen of a logged-in profile."""
    times = []
    for i in range(runs):
        name = f"qpc-bench-warm-{os.getpid()}-{i}"
        start = _spawn(name, env, _qpc())
        try:
            times.append(_wait_screen(name, "● connected", start))
            _wait_screen(name, "#bench", start)
        finally:
            _kill(name)
            time.sleep(0.2)  # the profile lock is released on exit
    return times


def demo_start(runs: int) -> list[float]:
    """Seconds from spawn of ``qpc demo`` to the peers' greetings on screen."""
    times = []
    for i in range(runs):
        name = f"qpc-bench-demo-{os.getpid()}-{i}"
        start = _spawn(name, {"TERM": "xterm-256color"}, [*_qpc(), "demo"])
        try:
            times.append(_wait_screen(name, "Try writing", start))
        finally:
            _tmux("send-keys", "-t", name, "C-q")  # lets the demo delete its node
            time.sleep(1.5)
            _kill(name)
    return times


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def idle_cpu(env: dict[str, str], seconds: float) -> float:
    """Percent of one core the TUI uses while idle on the main screen."""
    name = f"qpc-bench-idle-{os.getpid()}"
    start = _spawn(name, env, _qpc())
    try:
        _wait_screen(name, "#bench", start)
        time.sleep(2.0)  # let start-up work (KeyPackage top-up, first ping) finish
        pid = int(_tmux("list-panes", "-t", name, "-F", "#{pane_pid}").strip())
        c0, t0 = _cpu_seconds(pid), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = _cpu_seconds(pid), time.perf_counter()
        return 100 * (c1 - c0) / (t1 - t0)
    finally:
        _kill(name)


async def big_channel(n: int) -> tuple[float, float, int]:
    """(open seconds, ms per page, pages) for a channel of ``n`` messages."""
    engine = FakeEngine()
    chan = engine.add_channel("big", ("bob", "carol"))
    for i in range(n):
        sender = ("bob", "carol", "alice")[i % 3]
        engine.add_message(chan.id, sender, f"message {i} " + "lorem ipsum dolor " * (i % 6))
    engine.clear_unread(chan.id)  # no "N new" marker: opens with one page
    app = make_app(FakeFactory(engine), TuiSettings(ping_interval_s=0))
    last_key = str(engine._messages[chan.id][-1].id)
    async with app.run_test(size=(120, 40)) as pilot:
        t0 = time.perf_counter()
        deadline = t0 + 60
        while time.perf_counter() < deadline:  # resume -> channels -> open: newest shown
            await pilot.pause()
            logs = list(app.screen.query(MessageLog))
            if logs and logs[0].item(last_key) is not None:
                break
        else:
            raise RuntimeError("the channel never opened")
        await pilot.pause()
        opened = time.perf_counter() - t0
        log = logs[0]
        pages = 0
        t1 = time.perf_counter()
        while (log.scroll_y > 0 or log.has_older) and time.perf_counter() - t1 < 600:
            log.action_page_up()
            await pilot.pause()
            pages += 1
        per_page = (time.perf_counter() - t1) / max(1, pages) * 1000
        return opened, per_page, pages


class _DiskLikeEngine(FakeEngine):
    """The in-memory engine, but a history call yields to the event loop once,
    as the real one does while SQLite reads in its thread."""

    async def history(
        self, channel: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[Message]:
        await asyncio.sleep(0)
        return await super().history(channel, limit=limit, before_id=before_id)


class _StallWatch:
    """The longest time the event loop went without running a 5 ms ticker.

    A step's wall time through the Pilot includes its waits for the process
    to go idle (and a scroll animation's frames); the loop stall is what the
    user feels: no key handled and no frame drawn for that long.
    """

    TICK = 0.005

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.TICK)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - self.TICK)
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def take(self) -> float:
        """The longest stall (ms) since the last call."""
        longest, self.longest = self.longest, 0.0
        return longest * 1000

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def long_history(n: int) -> dict[str, float]:
    """The long-history figures (ms) for a channel of ``n`` messages."""
    from tui.widgets.channel_list import ChannelList

    engine = _DiskLikeEngine()
    chan = engine.add_channel("big", ("bob", "carol"))
    for i in range(n):
        sender = ("bob", "carol", "alice")[i % 3]
        engine.add_message(chan.id, sender, f"message {i} " + "lorem ipsum dolor " * (i % 6))
    engine.clear_unread(chan.id)
    other = engine.add_channel("small", ("bob",), activity_ms=engine.now_ms + 10**6)
    engine.add_message(other.id, "bob", "hello")
    engine.clear_unread(other.id)
    # The fake engine's messages stand in for the profile's database on disk:
    # out of the collector's way, as they would be (a full collection walking
    # 100,000 of them would be charged to whichever frame it lands in).
    gc.collect()
    gc.freeze()
    app = make_app(FakeFactory(engine), TuiSettings(ping_interval_s=0))
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(2000):
            await pilot.pause()
            if app.main is not None and app.main.active_channel == other.id:
                break
        main = app.main
        assert main is not None
        log = main.query_one(MessageLog)
        await pilot.pause()
        watch = _StallWatch()
        watch.start()
        t0 = time.perf_counter()
        main.post_message(ChannelList.Opened(chan.id))
        last_key = str(engine._messages[chan.id][-1].id)
        while True:
            await pilot.pause()
            if main.active_channel == chan.id and log.item(last_key) is not None:
                await pilot.pause()  # and a frame with it
                break
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("the channel never opened")
        out["open"] = (time.perf_counter() - t0) * 1000
        # Background loading of older pages up to the history limit.
        gaps = []
        t_load = last = time.perf_counter()
        while any(w.group == "older" and not w.is_finished for w in app.workers):
            await pilot.pause()
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            if now - t_load > 300:
                break
        out["loaded"] = log.message_count
        out["load_total"] = (time.perf_counter() - t_load) * 1000
        out["load_gap_max"] = max(gaps, default=0.0) * 1000
        out["open_stall"] = watch.take()
        frames = []
        for _ in range(300):
            t = time.perf_counter()
            main.action_log_page(-1)  # what PgUp does (pilot.press adds its own waits)
            await pilot.pause()
            frames.append(time.perf_counter() - t)
        out["page_median"] = statistics.median(frames) * 1000
        out["page_max"] = max(frames) * 1000
        out["page_stall"] = watch.take()
        top = []
        t_top = time.perf_counter()
        while log.message_count < min(n, 30_000) and time.perf_counter() - t_top < 300:
            t = time.perf_counter()
            log.scroll_home(animate=False, immediate=True)
            await pilot.pause()
            top.append(time.perf_counter() - t)
        out["top_max"] = max(top, default=0.0) * 1000
        out["top_loaded"] = log.message_count
        out["top_stall"] = watch.take()
        # The scrollbar dragged from the newest message to the top of what is
        # loaded, 200 frames; older pages arrive meanwhile.
        log.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        drag = []
        span = log.max_scroll_y
        for step in range(200, -1, -1):
            t = time.perf_counter()
            log.scroll_to(y=span * step // 200, animate=False, immediate=True)
            await pilot.pause()
            drag.append(time.perf_counter() - t)
        out["drag_median"] = statistics.median(drag) * 1000
        out["drag_max"] = max(drag) * 1000
        out["drag_stall"] = watch.take()
        watch.stop()
    return out


def _long_in(code: Path, n: int) -> dict[str, float]:
    """Run :func:`long_history` in a child process on the checkout ``code``."""
    import json

    env = {**os.environ, "PYTHONPATH": str(code), "QPC_BENCH_CODE": str(code)}
    res = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--long-child", str(n)],
        env=env,
        cwd=code,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=1800,
    )
    doc: dict[str, float] = json.loads(res.stdout.strip().splitlines()[-1])
    return doc


def long_table(n: int, codes: list[Path]) -> str:
    """The long-history table: this checkout first, then each of ``codes``."""
    rows = [
        "| checkout | open (loop stall) | PgUp: median / longest step, loop stall "
        "| Home to 30,000 loaded: longest step, loop stall "
        "| scrollbar drag: median / longest step, loop stall |",
        "|---|---|---|---|---|",
    ]
    for code in [ROOT, *codes]:
        r = _long_in(code, n)
        name = "this" if code == ROOT else code.name
        rows.append(
            f"| {name} | {r['open']:.0f} ms ({r['open_stall']:.0f} ms) | "
            f"{r['page_median']:.1f} / {r['page_max']:.1f} ms, {r['page_stall']:.0f} ms | "
            f"{r['top_max']:.0f} ms, {r['top_stall']:.0f} ms | "
            f"{r['drag_median']:.1f} / {r['drag_max']:.1f} ms, {r['drag_stall']:.0f} ms |"
        )
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--long-child":
        import json

        print(json.dumps(asyncio.run(long_history(int(sys.argv[2])))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--long", type=int, default=0, metavar="N")
    parser.add_argument("--code", type=Path, action="append", default=[])
    args = parser.parse_args()
    if args.long:
        print(f"{args.long:,} messages, 120x40, in-memory engine")
        print(long_table(args.long, args.code))
        return
    with tempfile.TemporaryDirectory(prefix="qpc-bench-tui-") as tmp:
        base = Path(tmp)
        cold = cold_start(args.runs, base)
        node = ensure_local_node(base / "node")
        try:
            env = _register(base / "warm", node.address)
            warm = resume_start(args.runs, env)
            cpu = idle_cpu(env, args.idle_seconds)
        finally:
            stop_local_node(base / "node")
    demo = demo_start(max(1, args.runs // 2))
    opened, per_page, pages = asyncio.run(big_channel(args.messages))
    rows = [
        (
            "cold start to welcome form (80x24)",
            f"{statistics.median(cold):.2f} s",
            f"min {min(cold):.2f}, max {max(cold):.2f} s",
            "<= 1.0 s",
        ),
        (
            "start to main screen, logged in + connected",
            f"{statistics.median(warm):.2f} s",
            f"min {min(warm):.2f}, max {max(warm):.2f} s",
            "-",
        ),
        (
            "qpc demo to a live group (node + 3 accounts)",
            f"{statistics.median(demo):.2f} s",
            f"min {min(demo):.2f}, max {max(demo):.2f} s",
            "-",
        ),
        (
            f"open a {args.messages:,}-message channel (120x40)",
            f"{opened * 1000:.0f} ms",
            "newest page -> wrapped -> first frame",
            "-",
        ),
        (
            "page up through it (older pages loading)",
            f"{per_page:.1f} ms/page",
            f"{pages} pages",
            "-",
        ),
        ("idle CPU on the main screen", f"{cpu:.2f} %", f"over {args.idle_seconds:.0f} s", "< 2 %"),
    ]
    lines = ["| measure | result | detail | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
