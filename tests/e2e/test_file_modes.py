"""Every file the node and the client create (node, profiles, logs, notify levels,
the ssh host key, the local node's record/lock/log) is 0600, every directory 0700, under umask 022.

Runs in one process (embedded node, engines, loggers), so no program edge
sets a umask: the modes come from :mod:`proto.files` alone. The local node
started by :func:`ensure_local_node` is a real ``qpc-node`` subprocess whose
record, lock and log files the caller creates.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.embedded import start_embedded_node
from tests.e2e.helpers import new_user
from tests.node.helpers import node_config
from tui.app import setup_logging
from tui.client.localnode import ensure_local_node, stop_local_node
from tui.notifications import NotifyLevel, save_level
from tui.ssh.hostkey import load_or_create_host_key

pytestmark = pytest.mark.network


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        yield
    finally:
        os.umask(old)
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers


def _modes(root: Path) -> dict[str, str]:
    """Every path under ``root`` whose mode is not 0600 (file) / 0700 (directory)."""
    bad: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath, name)
            if stat.S_IMODE(p.lstat().st_mode) != 0o700:
                bad[str(p.relative_to(root))] = oct(stat.S_IMODE(p.lstat().st_mode))
        for name in filenames:
            p = Path(dirpath, name)
            if stat.S_IMODE(p.lstat().st_mode) != 0o600:
                bad[str(p.relative_to(root))] = oct(stat.S_IMODE(p.lstat().st_mode))
    return bad


async def test_node_and_client_files_are_private_under_umask_022(
    tmp_path: Path, umask_022: None
) -> None:
    root = tmp_path / "home"  # nothing in it exists yet: every level is ours
    node = await start_embedded_node(node_config(root / "node" / "data"))
    engines = []
    try:
        alice = await new_user(node, root / "profiles", "alice")
        engines.append(alice)
        bob = await new_user(node, root / "profiles", "bob")
        engines.append(bob)
        chan = await alice.create_group("team")
        await alice.invite(chan.id, ["bob"])
        await bob.sync()
        await alice.send(chan.id, "hello bob")
        await bob.sync()
        assert [m.text for m in await bob.history(chan.id) if m.text == "hello bob"]
        save_level(root / "profiles" / "alice", chan.id, NotifyLevel.MUTE)
        load_or_create_host_key(root / "ssh" / "state" / "host_key")
        setup_logging(root / "logs" / "tui.log")
        logging.getLogger("test").warning("a line in the log")
        # the files must exist while everything is open (WAL/SHM, locks)
        names = {p.name for p in root.rglob("*")}
        for expected in (
            *("node.db", "node.db-wal", "node.db-shm", "node-cert.pem", "node-key.pem"),
            *("client.db", "engine.lock", "pins.json", "tui.log", "notify.json", "host_key"),
        ):
            assert expected in names, expected
        assert any(n.startswith("mls") for n in names), names
        assert _modes(root) == {}
    finally:
        for e in engines:
            await e.close()
        await node.stop()
    assert _modes(root) == {}


def test_local_node_files_are_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    base = tmp_path / "data"
    ensure_local_node(base)
    try:
        names = {p.name for p in base.rglob("*")}
        for expected in ("node.json", "node.log", "start.lock", "node.db", "node-key.pem"):
            assert expected in names, expected
        assert _modes(base) == {}
    finally:
        assert stop_local_node(base)
    assert _modes(base) == {}
