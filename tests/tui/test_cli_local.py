"""``qpc`` without --server: the shared embedded node, started once for several processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import cli_env

pytestmark = [pytest.mark.slow, pytest.mark.network]


def qpc(base: Path, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "--profile", str(base / profile), "--json", *args],
        capture_output=True,
        text=True,
        env=cli_env(base),
        timeout=60,
        check=False,
    )


def test_processes_share_one_local_node(tmp_path: Path) -> None:
    try:
        a = qpc(tmp_path, "alice", "register", "alice")
        assert a.returncode == 0, a.stderr
        record = json.loads((tmp_path / "local-node" / "node.json").read_text())
        os.kill(record["pid"], 0)  # running, detached from the qpc that started it
        b = qpc(tmp_path, "bob", "register", "bob")
        assert b.returncode == 0, b.stderr
        assert json.loads(a.stdout)["server"] == json.loads(b.stdout)["server"]
        assert json.loads(b.stdout)["server_fingerprint"] == record["fingerprint"]
        dm = qpc(tmp_path, "alice", "dm", "bob", "via the local node")
        assert dm.returncode == 0, dm.stderr
        got = qpc(tmp_path, "bob", "recv")
        assert [m["text"] for m in json.loads(got.stdout)["messages"]] == ["via the local node"]
    finally:
        stop = qpc(tmp_path, "alice", "stop-local-node")
    assert json.loads(stop.stdout) == {"stopped": True}
    assert not (tmp_path / "local-node" / "node.json").exists()


def test_demo_group_shows_the_removed_member_cannot_read(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--json", "demo-group"],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path),
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    steps = json.loads(res.stdout)["steps"]
    last = next(s for s in steps if "carol_active" in s)
    assert last["carol_active"] is False and last["carol_received"] == []
    assert any("bob: received ['carol cannot read this']" in s["step"] for s in steps)
