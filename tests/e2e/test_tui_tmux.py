"""Two real ``qpc`` TUIs in tmux against a real node: register, group, invite, chat.

Each TUI is a separate process in its own tmux session (one with
``TERM=screen``, one with ``TERM=xterm-256color``, as over SSH). The test
types like a person and reads the *other* side's screen to see each message
arrive. Slow (about 20 s): marked ``slow`` and ``network``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.tmux import Pane, have_tmux
from tui.client.localnode import LocalNode, ensure_local_node, stop_local_node
from tui.widgets.panes import group_hex

pytestmark = [
    pytest.mark.slow,
    pytest.mark.network,
    pytest.mark.skipif(not have_tmux(), reason="needs tmux"),
]

ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalNode]:
    """A real qpc-node subprocess on a free loopback port."""
    base = tmp_path / "node"
    handle = ensure_local_node(base)
    try:
        yield handle
    finally:
        stop_local_node(base)


@pytest.fixture
def panes() -> Iterator[list[Pane]]:
    """Sessions to kill afterwards."""
    opened: list[Pane] = []
    try:
        yield opened
    finally:
        for pane in opened:
            pane.kill()


def _tui(name: str, node: LocalNode, tmp_path: Path, term: str) -> Pane:
    env = {
        "TERM": term,
        "QPC_KDF": "fast",
        "QPC_DATA_DIR": str(tmp_path / "data"),
        "QPC_CONFIG": str(tmp_path / "none.toml"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": ROOT,
    }
    argv = [sys.executable, "-m", "tui.cli", "--server", node.address]
    argv += ["--profile", str(tmp_path / name)]
    return Pane(f"qpc-e2e-{os.getpid()}-{name}", argv, env=env, cwd=ROOT, size=(100, 30))


def _register(pane: Pane, user: str, node: LocalNode) -> None:
    pane.wait_for("Passphrase (encrypts")
    pane.wait_for(node.address)  # --server prefilled; the cursor is on the username
    pane.type(user)
    pane.wait_for(user)
    pane.keys("Tab")
    pane.type(f"{user} password")
    pane.wait_for("•" * len(f"{user} password"))
    pane.keys("Tab")
    pane.type(f"{user} passphrase")
    pane.wait_for("•" * len(f"{user} passphrase"))
    pane.keys("C-r")
    # First connection: the fingerprint is shown for trust on first use.
    screen = pane.wait_for("Trust this server?")
    assert group_hex(node.fingerprint)[:19] in screen
    pane.keys("Enter")
    pane.wait_for("● connected", timeout=60)


def test_two_tuis_register_group_invite_chat(
    node: LocalNode, tmp_path: Path, panes: list[Pane]
) -> None:
    alice = _tui("alice", node, tmp_path, "screen")
    panes.append(alice)
    bob = _tui("bob", node, tmp_path, "xterm-256color")
    panes.append(bob)

    _register(alice, "alice", node)
    _register(bob, "bob", node)
    alice.wait_for("No channel open")

    # alice creates a group and invites bob.
    alice.keys("C-n")
    alice.wait_for("Group name")
    alice.type("e2e-room")
    alice.keys("Enter")
    alice.wait_for("Created #e2e-room")
    alice.keys("C-t")
    alice.wait_for("Usernames")
    alice.type("bob")
    alice.keys("Enter")
    alice.wait_for("Invited bob to #e2e-room", timeout=60)

    # bob's channel list gets the group and it opens by itself.
    bob.wait_for("#e2e-room  (2 members)", timeout=60)

    # Chat both ways; each side reads the other's screen.
    alice.type("hello bob, from alice")
    alice.wait_for("hello bob, from alice")
    alice.keys("Enter")
    bob.wait_for("hello bob, from alice", timeout=60)
    # Typed and sent at once, as a fast typist or a paste would: Enter must not
    # overtake the characters still queued for the composer.
    bob.type("hi alice, bob here")
    bob.keys("Enter")
    alice.wait_for("hi alice, bob here", timeout=60)
    assert "✓" in alice.screen()  # alice's own message was accepted by the node

    # Both quit cleanly.
    for pane in (alice, bob):
        pane.keys("C-q")
    for pane in (alice, bob):
        pane.wait_exit()


def test_demo_peers_answer(tmp_path: Path, panes: list[Pane]) -> None:
    """``qpc demo``: a live group whose scripted peers answer; everything removed on exit."""
    env = {
        "TERM": "xterm-256color",
        "TMPDIR": str(tmp_path),
        "QPC_CONFIG": str(tmp_path / "none.toml"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": ROOT,
    }
    demo = Pane(
        f"qpc-e2e-{os.getpid()}-demo",
        [sys.executable, "-m", "tui.cli", "demo"],
        env=env,
        cwd=ROOT,
        size=(100, 30),
    )
    panes.append(demo)
    demo.wait_for("#demo  (3 members)", timeout=60)
    demo.wait_for("Try writing something")
    demo.type("does this work?")
    demo.keys("Enter")
    demo.wait_for("Got it. Delivered through the node", timeout=60)  # bob answers
    demo.keys("C-q")
    demo.wait_exit()
    assert not list(tmp_path.glob("qpc-demo-*"))  # node and profiles deleted


def _session_processes(marker: bytes) -> list[int]:
    """Live processes whose environment holds ``marker`` (every process a session started)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            found.append(int(proc.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


@pytest.mark.parametrize("hangup", ["kill-window", "kill-session"])
def test_hangup_under_demo_ends_every_process(
    tmp_path: Path, panes: list[Pane], hangup: str
) -> None:
    """Closing the tmux window (SIGHUP) under ``qpc demo``: no TUI, no node left, dir removed."""
    env = {
        "TERM": "xterm-256color",
        "TMPDIR": str(tmp_path),
        "QPC_CONFIG": str(tmp_path / "none.toml"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": ROOT,
    }
    name = f"qpc-e2e-{os.getpid()}-hup-{hangup}"
    demo = Pane(name, [sys.executable, "-m", "tui.cli", "demo"], env=env, cwd=ROOT, size=(80, 24))
    panes.append(demo)
    demo.wait_for("Try writing something", timeout=60)
    marker = f"TMPDIR={tmp_path}".encode()
    started = _session_processes(marker)
    assert len(started) >= 2  # the TUI and its node
    target = f"{name}:0" if hangup == "kill-window" else name
    subprocess.run(["tmux", hangup, "-t", target], check=True, timeout=10)
    deadline = time.monotonic() + 60
    while _session_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: _cmdline(pid) for pid in _session_processes(marker)}
    assert left == {}, "processes left after the hang-up"
    assert not list(tmp_path.glob("qpc-demo-*"))  # node and profiles deleted
