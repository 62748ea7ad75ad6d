"""The TUI over a real ``ssh -tt`` in tmux at 80x24, served by ``qpc serve-ssh``.

The short test (default suite) checks the PTY: TERM and size from the
request, a resize, and that a hang-up leaves no session process. The long
one (``slow``) is the whole story of issue 19: two ssh sessions and a plain
``qpc`` client chat, and a third session with the first key lands in the
same account.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tmux import Pane, Shown, have_tmux, visible_cells
from tests.ssh.helpers import ROOT, SSH_OPTS, SshServer, have_ssh, keygen, server_env, start_server

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not (have_ssh() and have_tmux()), reason="needs ssh and tmux"),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SshServer]:
    """A server with its own state dir and embedded node."""
    srv = start_server(tmp_path / "state")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def panes() -> Iterator[list[Pane]]:
    """tmux sessions to kill afterwards."""
    opened: list[Pane] = []
    try:
        yield opened
    finally:
        for pane in opened:
            pane.kill()


def _ssh_pane(server: SshServer, key: Path, name: str, term: str = "xterm-256color") -> Pane:
    argv = ["ssh", "-tt", *SSH_OPTS, "-p", str(server.port), "-i", str(key), "u@127.0.0.1"]
    return Pane(f"qpc-ssh-{os.getpid()}-{name}", argv, env={"TERM": term}, cwd=ROOT, size=(80, 24))


def _session_pids(state: Path) -> list[int]:
    """Session processes (``tui.cli --profile STATE/profiles/...``) alive now."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--profile" in argv and any(str(state).encode() in a for a in argv):
            pids.append(int(proc.name))
    return pids


def _wait(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_tui_over_ssh_gets_the_pty_and_a_hangup_leaves_nothing(
    server: SshServer, tmp_path: Path, panes: list[Pane]
) -> None:
    key = keygen(tmp_path / "id")
    pane = _ssh_pane(server, key, "pty", term="screen")
    panes.append(pane)
    screen = pane.wait_for("Passphrase (encrypts", timeout=60)
    assert len(screen.splitlines()[0]) <= 80
    assert "Register" in screen
    assert "hosted: this client runs on" in screen  # says plainly that it is hosted
    (pid,) = _session_pids(server.state)
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"TERM=screen" in env
    # window-change: the TUI lays itself out again at the new size.
    subprocess.run(["tmux", "resize-window", "-t", pane.name, "-x", "100", "-y", "30"], check=True)
    _wait(
        lambda: (
            pane.screen().splitlines()[-1].rstrip().endswith("Commands")
            and len(pane.screen().splitlines()[-1].rstrip()) > 80
        )
    )
    # Hang up: the ssh client dies; the session's process ends itself (it logs
    # that it closed, so it was not killed) and leaves nothing behind.
    pane.kill()
    _wait(lambda: not _session_pids(server.state))
    (log,) = (server.state / "profiles").glob("*/tui.log")
    text = log.read_text()
    assert "hang-up: closing the session" in text
    assert "session closed" in text


def _register(pane: Pane, user: str) -> None:
    pane.wait_for("Passphrase (encrypts", timeout=60)
    pane.type(user)
    pane.wait_for(user)
    pane.keys("Tab")
    pane.type(f"{user} password")
    pane.wait_for("•" * len(f"{user} password"))
    pane.keys("Tab")
    pane.type(f"{user} passphrase")
    pane.wait_for("•" * len(f"{user} passphrase"))
    pane.keys("C-r")
    pane.wait_for("● connected", timeout=60)


def _cli(server: SshServer, profile: Path, *args: str) -> str:
    env = server_env(QPC_PASSPHRASE="carol passphrase", QPC_PASSWORD="carol password")
    argv = [sys.executable, "-m", "tui.cli", "--server", server.node.split()[0]]
    done = subprocess.run(
        [*argv, "--profile", str(profile), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_two_ssh_sessions_and_a_plain_client_chat_and_a_key_comes_back(
    server: SshServer, tmp_path: Path, panes: list[Pane]
) -> None:
    key_a, key_b = keygen(tmp_path / "id_a"), keygen(tmp_path / "id_b")
    alice = _ssh_pane(server, key_a, "alice", term="screen")
    panes.append(alice)
    bob = _ssh_pane(server, key_b, "bob")
    panes.append(bob)
    _register(alice, "alice")
    _register(bob, "bob")
    carol = tmp_path / "carol"
    _cli(server, carol, "register", "carol")

    alice.wait_for("No channel open")
    alice.keys("C-n")
    alice.wait_for("Group name")
    alice.type("ssh-room")
    alice.keys("Enter")
    alice.wait_for("Created #ssh-room")
    alice.keys("C-t")
    alice.wait_for("Usernames")
    alice.type("bob carol")
    alice.keys("Enter")
    alice.wait_for("Invited", timeout=60)
    bob.wait_for("#ssh-room  (3 members)", timeout=60)

    alice.type("hello from alice over ssh")
    alice.wait_for("hello from alice over ssh")
    alice.keys("Enter")
    bob.wait_for("hello from alice over ssh", timeout=60)
    assert "hello from alice over ssh" in _cli(server, carol, "recv")
    _cli(server, carol, "send", "ssh-room", "hi from carol")
    alice.wait_for("hi from carol", timeout=60)
    bob.wait_for("hi from carol", timeout=60)
    bob.type("bob here, over ssh too")
    bob.keys("Enter")
    alice.wait_for("bob here, over ssh too", timeout=60)

    alice.keys("C-q")
    alice.wait_exit()

    # The same key again: its own profile, unlocked by the passphrase alone.
    again = _ssh_pane(server, key_a, "alice-again")
    panes.append(again)
    again.wait_for("This profile exists", timeout=60)
    again.type("alice")
    again.keys("Tab", "Tab")
    again.type("alice passphrase")
    again.wait_for("•" * len("alice passphrase"))
    again.keys("Enter")
    again.wait_for("● connected", timeout=60)
    screen = again.wait_for("ssh-room", timeout=60)
    assert "alice" in screen.splitlines()[0]


def test_stopping_the_server_ends_sessions_and_its_node(tmp_path: Path, panes: list[Pane]) -> None:
    from tui.client.localnode import read_local_node

    srv = start_server(tmp_path / "state")
    try:
        pane = _ssh_pane(srv, keygen(tmp_path / "id"), "stop")
        panes.append(pane)
        pane.wait_for("Passphrase (encrypts", timeout=60)
        assert _session_pids(srv.state)
    finally:
        assert srv.stop() == 0
    assert not _session_pids(srv.state)
    assert read_local_node(srv.state) is None
    pane.wait_exit()


def test_idle_timeout_and_per_key_limit(tmp_path: Path, panes: list[Pane]) -> None:
    srv = start_server(tmp_path / "state", "--idle-timeout", "3", "--max-sessions-per-key", "1")
    try:
        key = keygen(tmp_path / "id")
        pane = _ssh_pane(srv, key, "idle")
        panes.append(pane)
        pane.wait_for("Passphrase (encrypts", timeout=60)
        # The key's one slot is taken: a second session with it is refused...
        done = srv.run(key, ["health"])
        assert done.returncode == 1
        assert "already has 1 sessions" in done.stderr
        # ...another key is not.
        assert srv.run(keygen(tmp_path / "other"), ["health"]).returncode == 0
        # No input: the session is closed, its process ends, the slot is free.
        pane.wait_exit(timeout=30)
        _wait(lambda: not _session_pids(srv.state))
        assert srv.run(key, ["health"]).returncode == 0
    finally:
        srv.stop()


def _shown(pane: Pane) -> tuple[list[list[Shown]], tuple[int, int]]:
    """What tmux shows (cells as a person sees them, via pyte) and where its cursor is."""
    import pyte

    text = Pane._tmux("capture-pane", "-p", "-e", "-N", "-t", pane.name)
    where = Pane._tmux("display-message", "-p", "-t", pane.name, "#{cursor_x},#{cursor_y}")
    screen = pyte.Screen(80, 24)
    pyte.Stream(screen).feed(text.rstrip("\n").replace("\n", "\r\n"))
    rows = visible_cells(screen)
    cx, cy = where.strip().split(",")
    return rows, (int(cx), int(cy))


def _same_screen(full: Pane, tracked: Pane, after: str, timeout: float = 20.0) -> None:
    """Wait until both panes show the same cells and cursor."""
    deadline = time.monotonic() + timeout
    diff: list[tuple[int, int, Shown, Shown]] = []
    while time.monotonic() < deadline:
        (a, cursor_a), (b, cursor_b) = _shown(full), _shown(tracked)
        diff = [
            (x, y, a[y][x], b[y][x]) for y in range(24) for x in range(80) if a[y][x] != b[y][x]
        ]
        if not diff and cursor_a == cursor_b:
            return
        time.sleep(0.1)
    cursors = f"cursors {cursor_a} {cursor_b}"
    raise AssertionError(f"after {after}: (x, y, Textual's, tracked) {diff[:10]}, {cursors}")


@pytest.mark.parametrize("term", ["xterm-256color", "linux", "vt100"])
def test_damage_tracking_draws_what_textual_draws_in_tmux(
    tmp_path: Path, panes: list[Pane], term: str
) -> None:
    """The same session with and without damage tracking ends up with the same screen.

    tmux is the terminal: every keystroke's bytes (pen changes, relative
    moves, reordered runs) land where Textual's full output puts them, with
    the same colours; on VT100 too (attributes turned off by SGR 0 only).
    """
    servers: list[SshServer] = []
    try:
        for name in ("full", "tracked"):
            state = tmp_path / name
            state.mkdir(mode=0o700)
            if name == "full":
                (state / "tui.toml").write_text("[tui]\ndamage_tracking = false\n")
            servers.append(start_server(state))
        full, tracked = (
            _ssh_pane(srv, keygen(tmp_path / f"id-{i}"), f"dmg-{term}-{i}", term=term)
            for i, srv in enumerate(servers)
        )
        panes += [full, tracked]
        for pane in (full, tracked):
            pane.wait_for("Passphrase (encrypts", timeout=60)
        _same_screen(full, tracked, "start")
        for step in ("alice", "Tab", "pw", "BSpace", "Tab", "Tab", "BTab", "x", "Left", "y"):
            for pane in (full, tracked):
                if step[0].isupper():
                    pane.keys(step)
                else:
                    pane.type(step)
            _same_screen(full, tracked, step)
    finally:
        for srv in servers:
            srv.stop()
