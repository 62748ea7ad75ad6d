"""Benchmark ``qpc serve-ssh``: many idle sessions, and terminal bytes beside WeeChat.

Run by hand from the repository root (needs the OpenSSH client, pyte from
the dev extras; WeeChat for the comparison: ``apt-get install weechat``)::

    python3 bench/ssh.py sessions [--n 50] [--hold 20]
    python3 bench/ssh.py bytes [--keys 30] [--messages 20] [--before DIR]
    python3 bench/ssh.py render [--before DIR]

* **sessions**: one ``qpc serve-ssh`` (embedded node), ``--n`` real ``ssh
  -tt`` clients, each with its own key, each on its own PTY at 80x24; waits
  until every one shows the welcome form, holds them idle for ``--hold``
  seconds, checks they are all still alive and the server still answers
  ``health``, and reads RSS and PSS (shared pages split among sharers) of
  every session process from ``/proc``.
* **bytes**: terminal bytes a client sends over the ssh link per keystroke
  (typing into the composer / input bar) and per incoming message shown in
  the open channel / buffer. Measured on the PTY of the ``ssh`` client (what
  it writes to the terminal, i.e. the decrypted payload of the link) for
  qpc, and on WeeChat's own PTY for WeeChat (incoming lines come through its
  FIFO with ``/print`` into the open core buffer, drawn as an IRC message
  line would be); SSH
  adds the same framing per packet to both. Both at 80x24,
  ``TERM=xterm-256color``.
* **render**: CPU the damage tracker (``tui/damage.py``) spends per frame:
  a worst-case full frame (a style change at every cell) and a one-row
  frame (a keystroke), beside another checkout's with ``--before``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pyte

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ssh import helpers  # noqa: E402
from tests.ssh.helpers import SSH_OPTS, keygen, server_env, start_server  # noqa: E402


class Term:
    """A program on a PTY of its own: bytes in, every byte it writes counted."""

    def __init__(self, argv: list[str], env: dict[str, str], size: tuple[int, int] = (80, 24)):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.fd = master
        self.out = bytearray()
        # What the terminal shows (an emulated one): with damage tracking a
        # new line is only the cells that differ, not its whole text.
        self.screen = pyte.Screen(*size)
        self._stream = pyte.ByteStream(self.screen)

    def pump(self, timeout: float) -> int:
        """Read what is there within ``timeout``; the number of bytes read."""
        got = 0
        ready, _, _ = select.select([self.fd], [], [], timeout)
        while ready:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return got
            if not data:
                return got
            self.out += data
            self._stream.feed(data)
            got += len(data)
            ready, _, _ = select.select([self.fd], [], [], 0)
        return got

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Read until ``text`` is on the (emulated) screen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.screen.display):
                return
            self.pump(0.1)
        shown = "\n".join(self.screen.display)
        raise TimeoutError(f"{text!r} not on the screen:\n{shown}")

    def quiet(self, for_s: float = 0.4, limit: float = 10.0) -> None:
        """Read until nothing came for ``for_s``."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.pump(for_s):
            pass

    def send(self, data: bytes) -> None:
        """Type ``data``."""
        os.write(self.fd, data)

    def close(self) -> None:
        """Hang up and reap."""
        os.close(self.fd)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _session_processes(state: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--profile" in argv and any(str(state).encode() in a for a in argv):
            pids.append(int(proc.name))
    return pids


def _mem_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def _ssh(port: int, key: Path) -> list[str]:
    return ["ssh", "-tt", *SSH_OPTS, "-p", str(port), "-i", str(key), "u@127.0.0.1"]


def bench_sessions(n: int, hold: float) -> None:
    """``--n`` idle TUI sessions over real ssh: they hold; memory per session."""
    with tempfile.TemporaryDirectory(prefix="qpc-bench-ssh-") as tmp:
        base = Path(tmp)
        srv = start_server(
            base / "state", "--max-sessions-per-key", "2", "--auth-burst", str(n + 10)
        )
        env = {**server_env(), "TERM": "xterm-256color"}
        terms: list[Term] = []
        try:
            t0 = time.monotonic()
            for i in range(n):
                terms.append(Term(_ssh(srv.port, keygen(base / f"id{i}")), env))
            for t in terms:
                t.wait_for("Passphrase (encrypts", timeout=300)
            ready_s = time.monotonic() - t0
            end = time.monotonic() + hold
            while time.monotonic() < end:
                for t in terms:
                    t.pump(0)
                time.sleep(0.5)
            idle_bytes = 0
            for t in terms:
                before = len(t.out)
                t.pump(0.05)
                idle_bytes += len(t.out) - before
            alive = sum(t.proc.poll() is None for t in terms)
            pids = _session_processes(srv.state)
            mems = [_mem_kib(p) for p in pids]
            health = srv.run(keygen(base / "idh"), ["health"])
            server_rss, server_pss = _mem_kib(srv.proc.pid)
        finally:
            for t in terms:
                t.close()
            srv.stop()
    rss = [m[0] / 1024 for m in mems]
    pss = [m[1] / 1024 for m in mems]
    print(f"| sessions (ssh -tt, 80x24, welcome screen) | {n} |")
    print("|---|---|")
    print(f"| all drawn after | {ready_s:.1f} s |")
    procs = f"{alive}/{n} ssh clients, {len(pids)} session processes"
    print(f"| alive after {hold:.0f} s idle | {procs} |")
    print(f"| health while they hold | {health.stdout.strip() or health.stderr.strip()} |")
    spread = f"{min(rss):.1f}-{max(rss):.1f}"
    print(f"| RSS per session, median (min-max) | {statistics.median(rss):.1f} MiB ({spread}) |")
    print(f"| PSS per session, median | {statistics.median(pss):.1f} MiB |")
    print(f"| PSS of all sessions | {sum(pss):.0f} MiB |")
    print(f"| server process RSS / PSS | {server_rss / 1024:.1f} / {server_pss / 1024:.1f} MiB |")


def _per_keystroke(term: Term, keys: int) -> list[int]:
    sizes = []
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789"[:keys]:
        before = len(term.out)
        term.send(ch.encode())
        term.quiet(0.3)
        sizes.append(len(term.out) - before)
    return sizes


def bench_qpc_bytes(
    keys: int, messages: int, *, damage: bool = True, root: Path | None = None
) -> tuple[list[int], list[int]]:
    """qpc over ssh: alice in a channel with bob; bob (CLI) sends.

    ``damage=False`` turns the TUI's damage tracking off (``tui/damage.py``):
    Textual's own output, the baseline. ``root`` runs the server and the
    CLI from another checkout (``--before``).
    """
    saved = helpers.ROOT
    if root is not None:
        helpers.ROOT = str(root)
    try:
        return _qpc_bytes(keys, messages, damage=damage)
    finally:
        helpers.ROOT = saved


def _qpc_bytes(keys: int, messages: int, *, damage: bool) -> tuple[list[int], list[int]]:
    with tempfile.TemporaryDirectory(prefix="qpc-bench-ssh-") as tmp:
        base = Path(tmp)
        state = base / "state"
        state.mkdir(mode=0o700)
        if not damage:
            (state / "tui.toml").write_text("[tui]\ndamage_tracking = false\n")
        srv = start_server(state)
        env = {**server_env(), "TERM": "xterm-256color"}
        term = Term(_ssh(srv.port, keygen(base / "id")), env)
        cli_env = server_env(QPC_PASSPHRASE="bob pp", QPC_PASSWORD="bob pw")
        cli = [sys.executable, "-m", "tui.cli", "--server", srv.node.split()[0]]
        cli += ["--profile", str(base / "bob")]
        try:
            term.wait_for("Passphrase (encrypts")
            term.send(b"alice\tpw-alice\tpp-alice")
            term.quiet()
            term.send(b"\x12")  # Ctrl+R: register
            term.wait_for("connected")
            subprocess.run([*cli, "register", "bob"], env=cli_env, check=True, capture_output=True)
            term.send(b"\x0e")  # Ctrl+N
            term.wait_for("Group name")
            term.send(b"bench\r")
            term.wait_for("Created #bench")
            term.send(b"\x14")  # Ctrl+T
            term.wait_for("Usernames")
            term.send(b"bob\r")
            term.wait_for("Invited bob")
            subprocess.run([*cli, "join"], env=cli_env, check=True, capture_output=True)
            term.quiet(1.0)
            typed = _per_keystroke(term, keys)
            term.send(b"\r")  # send what was typed
            term.quiet(1.0)
            incoming = []
            for i in range(messages):
                text = f"incoming message number {i:03d}"
                subprocess.run(
                    [*cli, "send", "bench", text], env=cli_env, check=True, capture_output=True
                )
                before = len(term.out)
                term.wait_for(text)
                term.quiet(0.5)
                incoming.append(len(term.out) - before)
        finally:
            term.close()
            srv.stop()
    return typed, incoming


def bench_weechat_bytes(keys: int, messages: int) -> tuple[list[int], list[int]]:
    """WeeChat 80x24 on a PTY; incoming lines through its FIFO (``/print``)."""
    with tempfile.TemporaryDirectory(prefix="qpc-bench-weechat-") as tmp:
        home = Path(tmp)
        env = {
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "PATH": os.environ["PATH"],
        }
        term = Term(["weechat", "--dir", str(home / "wc")], env)
        try:
            term.wait_for("Plugins loaded", timeout=30)
            term.quiet(1.0)
            fifo = next((home / "wc").rglob("weechat_fifo*"))
            typed = _per_keystroke(term, keys)
            term.send(b"\x15")  # Ctrl+U: clear the input line
            term.quiet(0.5)
            incoming = []
            for i in range(messages):
                text = f"incoming message number {i:03d}"
                with open(fifo, "w") as fh:
                    fh.write(f"core.weechat */print bob\t{text}\n")
                before = len(term.out)
                term.wait_for(text)
                term.quiet(0.5)
                incoming.append(len(term.out) - before)
        finally:
            term.send(b"/quit\r")
            term.close()
    return typed, incoming


def bench_bytes(keys: int, messages: int, before: Path | None) -> None:
    """The comparison table; ``before``: another checkout's damage tracking beside this one's."""
    columns = [("qpc, Textual's full output", bench_qpc_bytes(keys, messages, damage=False))]
    if before is not None:
        label = f"qpc, damage tracking at {before.name}"
        columns.append((label, bench_qpc_bytes(keys, messages, root=before)))
    columns.append(("qpc, damage tracking", bench_qpc_bytes(keys, messages)))
    w_keys, w_msgs = bench_weechat_bytes(keys, messages)
    med = statistics.median
    heads = " | ".join(label for label, _ in columns)
    print(f"| bytes to the terminal (80x24, xterm-256color) | {heads} | WeeChat | qpc / WeeChat |")
    print("|---" * (len(columns) + 3) + "|")
    for i, (label, w) in enumerate((("per keystroke", w_keys), ("per incoming message", w_msgs))):
        cells = " | ".join(f"{med(c[i]):.0f} ({max(c[i])})" for _, c in columns)
        ratio = med(columns[-1][1][i]) / med(w)
        print(f"| {label}, median (max) | {cells} | {med(w):.0f} ({max(w)}) | {ratio:.1f}x |")
    print(f"({keys} keystrokes, {messages} messages each)")


def bench_render(before: Path | None, frames: int = 20) -> None:
    """CPU of the damage tracker per frame: a worst-case full frame and a one-row frame."""
    import importlib.util
    import random

    from rich.console import Console
    from rich.segment import Segment
    from rich.style import Style
    from textual._compositor import LayoutUpdate
    from textual.geometry import Region
    from textual.strip import Strip

    trees = [("this checkout", ROOT)] + ([(before.name, before)] if before else [])
    styles = [
        Style(color=f"color({n})", bgcolor=f"color({n + 8})", bold=n % 2 == 0) for n in range(8)
    ]
    rng = random.Random(1)
    # Worst case: a different style at every cell of an 80x24 screen.
    full = [
        LayoutUpdate(
            [
                [Strip([Segment(rng.choice("abc "), rng.choice(styles)) for _ in range(80)], 80)]
                for _ in range(24)
            ],
            Region(0, 0, 80, 24),
        )
        for _ in range(frames)
    ]
    print("| damage tracker CPU per frame (80x24) | worst-case full frame | one-row frame |")
    print("|---|---|---|")
    for label, tree in trees:
        spec = importlib.util.spec_from_file_location(f"damage_{label}", tree / "tui/damage.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        console = Console(color_system="256", width=80, height=24, force_terminal=True)
        tracker = module.DamageTracker()
        t0 = time.perf_counter()
        for update in full:
            tracker.render(update, console, (80, 24))
        full_ms = (time.perf_counter() - t0) / frames * 1000
        t0 = time.perf_counter()
        for k in range(200):
            row = Strip(
                [
                    Segment("x" * (k % 50), styles[0]),
                    Segment(" ", styles[1]),
                    Segment(" " * (79 - k % 50), styles[0]),
                ],
                80,
            )
            tracker.render(LayoutUpdate([[row]], Region(0, 20, 80, 1)), console, (80, 24))
        row_ms = (time.perf_counter() - t0) / 200 * 1000
        print(f"| {label} | {full_ms:.1f} ms | {row_ms:.3f} ms |")


def main() -> None:
    """Parse and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sessions")
    s.add_argument("--n", type=int, default=50)
    s.add_argument("--hold", type=float, default=20.0)
    b = sub.add_parser("bytes")
    b.add_argument("--keys", type=int, default=30)
    b.add_argument("--messages", type=int, default=20)
    b.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. `git archive main | tar -x -C DIR`) measured beside this one",
    )
    r = sub.add_parser("render")
    r.add_argument("--before", type=Path, help="another checkout measured beside this one")
    opts = parser.parse_args()
    if opts.what == "sessions":
        bench_sessions(opts.n, opts.hold)
    elif opts.what == "render":
        bench_render(opts.before)
    else:
        bench_bytes(opts.keys, opts.messages, opts.before)


if __name__ == "__main__":
    main()
