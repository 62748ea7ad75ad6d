"""The embedded node's life with real processes: killed under a TUI and under
``qpc listen`` it is restarted once and clients resume; it stays up while any
client uses it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto.crypto.atrest import FAST_TEST_PARAMS
from tests.e2e.helpers import PASSPHRASE, cli_env
from tui.app import make_app
from tui.client.api import ConnectionStatus, MessageReceived
from tui.client.core import EngineConfig
from tui.client.localnode import read_local_node, stop_local_node
from tui.factory import EngineFactoryImpl
from tui.messages import EngineEventPosted
from tui.screens.main import MainScreen
from tui.widgets.status_bar import StatusBar

pytestmark = [pytest.mark.slow, pytest.mark.network]


def qpc(base: Path, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--profile", str(base / profile), "--json", *args],
        capture_output=True,
        text=True,
        env=cli_env(base),
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def node_processes(base: Path) -> list[int]:
    """Pids of live node processes whose data dir is under ``base``."""
    marker = str(base / "local-node" / "data").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in argv and state != "Z":
            pids.append(int(proc.name))
    return pids


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"not true after {timeout} s: {check}")


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    stop_local_node(tmp_path)


class Listener:
    """``qpc listen`` as a real process; lines of its stdout."""

    def __init__(self, base: Path, profile: str) -> None:
        cmd = [sys.executable, "-m", "tui.cli", "--profile", str(base / profile)]
        self.proc = subprocess.Popen(
            [*cmd, "listen"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=cli_env(base),
        )
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                self.lines.append(line)
                if text in line:
                    return
            else:
                time.sleep(0.05)
        raise AssertionError(f"{text!r} not printed; got {self.lines}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_killed_under_listen_restarts_once_and_last_tui_leaves_it(base: Path) -> None:
    qpc(base, "alice", "register", "alice")
    qpc(base, "bob", "register", "bob")
    qpc(base, "bob", "dm", "alice", "first")
    listener = Listener(base, "alice")
    try:
        listener.wait_for("connected")
        listener.wait_for("first")
        # A TUI on the same node quits: the node stays for `listen`.
        tui = EngineFactoryImpl(EngineConfig(profile_dir=base / "tui", data_dir=base))

        async def tui_session() -> None:
            await tui.probe("")
            await tui.close()

        asyncio.run(tui_session())
        node = read_local_node(base)
        assert node is not None, "the last TUI stopped the node under qpc listen"
        qpc(base, "bob", "dm", "alice", "while the tui quit")
        listener.wait_for("while the tui quit")
        # kill -9: the listener notices, restarts the node (once), keeps receiving.
        os.kill(node.pid, signal.SIGKILL)
        wait_until(lambda: (n := read_local_node(base)) is not None and n.pid != node.pid)
        again = read_local_node(base)
        assert again is not None and again.port == node.port  # same port: --server users too
        listener.wait_for("connected")
        assert node_processes(base) == [again.pid]
        qpc(base, "bob", "dm", "alice", "after the restart")
        listener.wait_for("after the restart")
    finally:
        listener.stop()


def test_two_clients_notice_and_one_node_starts(base: Path) -> None:
    """Two `qpc listen` on one node: after kill -9 exactly one node runs."""
    qpc(base, "alice", "register", "alice")
    qpc(base, "bob", "register", "bob")
    qpc(base, "bob", "dm", "alice", "hello")
    a, b = Listener(base, "alice"), Listener(base, "bob")
    try:
        a.wait_for("connected")
        b.wait_for("connected")
        node = read_local_node(base)
        assert node is not None
        os.kill(node.pid, signal.SIGKILL)
        wait_until(lambda: (n := read_local_node(base)) is not None and n.pid != node.pid)
        a.wait_for("connected")
        b.wait_for("connected")
        again = read_local_node(base)
        assert again is not None
        assert node_processes(base) == [again.pid]
    finally:
        a.stop()
        b.stop()


async def test_tui_notices_a_killed_node_and_resumes(base: Path) -> None:
    """Pilot over a real node: kill -9, "reconnecting" at once, reconnected, chat goes on."""
    await asyncio.to_thread(qpc, base, "alice", "register", "alice")
    await asyncio.to_thread(qpc, base, "bob", "register", "bob")
    await asyncio.to_thread(qpc, base, "bob", "dm", "alice", "before")
    config = EngineConfig(profile_dir=base / "alice", data_dir=base, kdf=FAST_TEST_PARAMS)
    factory = EngineFactoryImpl(config, passphrase=PASSPHRASE)
    app = make_app(factory)

    async def until(check: object, timeout: float = 30.0) -> float:
        start = time.monotonic()
        while not check():  # type: ignore[operator]
            assert time.monotonic() - start < timeout, f"not true after {timeout} s"
            await pilot.pause(0.05)
        return time.monotonic() - start

    def status() -> ConnectionStatus | None:
        screen = app.screen
        if not isinstance(screen, MainScreen):
            return None
        state = screen.query_one(StatusBar).state
        return None if state is None else state.status

    received: list[str] = []

    def hook(message: object) -> None:
        if isinstance(message, EngineEventPosted) and isinstance(message.event, MessageReceived):
            received.append(message.event.message.text)

    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await until(lambda: status() is ConnectionStatus.CONNECTED, 60)
        node = read_local_node(base)
        assert node is not None
        os.kill(node.pid, signal.SIGKILL)
        noticed = await until(lambda: status() is not ConnectionStatus.CONNECTED)
        # Noticed by the node lock (checked every 0.5 s), not by the QUIC
        # silence, which alone takes 6 s; the margin is for a loaded box.
        assert noticed < 5.0
        await until(lambda: status() is ConnectionStatus.CONNECTED, 60)
        again = read_local_node(base)
        assert again is not None and again.pid != node.pid
        assert node_processes(base) == [again.pid]
        sent = await asyncio.to_thread(qpc, base, "bob", "dm", "alice", "after the restart")
        assert json.loads(sent.stdout)["message"]["state"] == "sent"  # not left in the outbox
        await until(lambda: "after the restart" in received, 60)
        await app.action_quit()
    # The TUI was the node's last client: it stopped the node on its way out.
    assert read_local_node(base) is None


def test_two_homes_share_one_node(tmp_path: Path) -> None:
    """Two people with their own HOMEs: bob points --server at alice's local node."""

    def env(home: Path) -> dict[str, str]:
        e = cli_env(tmp_path, HOME=str(home))
        for key in ("QPC_DATA_DIR", "XDG_DATA_HOME", "QPC_PROFILE"):
            e.pop(key, None)
        return e

    def run(home: Path, *args: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "tui.cli", "--json", *args],
            capture_output=True,
            text=True,
            env=env(home),
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        doc: dict[str, object] = json.loads(done.stdout)
        return doc

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir()
    bob.mkdir()
    try:
        run(alice, "register", "alice")
        node = run(alice, "local-node")
        address = str(node["address"])
        who = run(bob, "--server", address, "register", "bob")
        assert who["server_fingerprint"] == node["fingerprint"]
        run(alice, "dm", "bob", "hello from another HOME")
        got = run(bob, "--server", address, "recv")
        assert [m["text"] for m in got["messages"]] == ["hello from another HOME"]  # type: ignore[attr-defined]
        # One node, in alice's HOME, private to her; bob's HOME has none.
        homes = [p.parent for p in tmp_path.rglob("local-node/node.json")]
        assert len(homes) == 1 and alice in homes[0].parents
        assert homes[0].stat().st_mode & 0o777 == 0o700
    finally:
        run(alice, "stop-local-node")
