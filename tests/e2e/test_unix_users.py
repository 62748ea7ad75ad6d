"""Two Unix users on one host share one node (README, "Two people on one machine").

Real processes: alice (the user running the tests) starts her local node with
``qpc local-node``; bob is a throwaway system user created for the test
(``useradd`` with a temporary HOME, removed afterwards, also on failure) who
runs ``qpc --server ADDRESS`` as himself to register and talk with alice. The
node's files stay 0600/0700 in alice's HOME and bob cannot read them.

Needs root (``useradd``/``userdel``; CI runs as root). The interpreter may live
where bob cannot read it (pyenv under ``/root``, mode 0700): then bob's ``qpc``
runs with the single capability CAP_DAC_READ_SEARCH (read any file), only so
that Python can load; the checks that bob cannot read alice's node run as bob
without any capability.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import PASSPHRASE, PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("useradd", "userdel", "runuser", "setpriv")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a throwaway Unix user (CI runs as root)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    return None


@pytest.fixture
def bob_user() -> Iterator[tuple[str, Path]]:
    """A throwaway system user with its own HOME under a fresh 0755 directory."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    top = Path(tempfile.mkdtemp(prefix="qpc-unix-"))
    top.chmod(0o755)  # like /home: others may pass through, each HOME guards itself
    name = f"qpct{os.getpid()}"
    home = top / "bob"
    subprocess.run(
        [
            *("useradd", "--create-home", "--home-dir", str(home)),
            *("--shell", "/usr/sbin/nologin", "--user-group", name),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield name, home
    finally:
        subprocess.run(["userdel", "--force", "--remove", name], check=False, capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def _bob_prefix(name: str) -> list[str]:
    """Run as ``name``; with CAP_DAC_READ_SEARCH only if Python is unreadable to him."""
    probe = subprocess.run(
        ["runuser", "-u", name, "--", sys.executable, "-c", "pass"],
        capture_output=True,
        check=False,
    )
    if probe.returncode == 0:
        return ["runuser", "-u", name, "--"]
    cap = "+dac_read_search"
    return [
        "setpriv",
        f"--reuid={name}",
        f"--regid={name}",
        "--init-groups",
        f"--inh-caps={cap}",
        f"--ambient-caps={cap}",
    ]


def _env(home: Path) -> dict[str, str]:
    """A clean environment: own HOME, the repo on the path, cheap KDF, secrets."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "QPC_KDF": "fast",
        "QPC_PASSPHRASE": PASSPHRASE,
        "QPC_PASSWORD": PASSWORD,
    }


def _run(prefix: list[str], home: Path, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "tui.cli", "--json", *args],
        capture_output=True,
        text=True,
        env=_env(home),
        cwd=str(home),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stderr)
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


def _texts(doc: dict[str, object]) -> list[str]:
    messages = doc["messages"]
    assert isinstance(messages, list)
    return [str(m["text"]) for m in messages]


def test_two_unix_users_share_one_node(bob_user: tuple[str, Path]) -> None:
    name, bob_home = bob_user
    alice_home = bob_home.parent / "alice"
    alice_home.mkdir(mode=0o755)  # a typical HOME others may enter: the node guards itself
    alice_home.chmod(0o755)
    bob = _bob_prefix(name)
    bob_uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout)

    def alice(*args: str) -> dict[str, object]:
        return _run([], alice_home, *args)

    def as_bob(*args: str) -> dict[str, object]:
        return _run(bob, bob_home, *args)

    try:
        alice("register", "alice")
        node = alice("local-node")
        address = str(node["address"])
        who = as_bob("--server", address, "register", "bob")
        assert who["server_fingerprint"] == node["fingerprint"]  # bob compares the key
        alice("dm", "bob", "hello from alice's account")
        assert _texts(as_bob("--server", address, "recv")) == ["hello from alice's account"]
        as_bob("--server", address, "dm", "alice", "hello back from bob's account")
        assert _texts(alice("recv")) == ["hello back from bob's account"]

        # Bob's profile is his: created by his process, private to him.
        bob_files = [p for p in bob_home.rglob("*") if p != bob_home]
        assert bob_files and all(p.stat().st_uid == bob_uid for p in bob_files)
        # One node, in alice's HOME; bob's HOME has none.
        node_dirs = [p.parent for p in bob_home.parent.rglob("local-node/node.json")]
        assert len(node_dirs) == 1 and alice_home in node_dirs[0].parents
        node_dir = node_dirs[0]
        entries = [node_dir, *node_dir.rglob("*")]
        for path in entries:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                continue
            expected = 0o700 if path.is_dir() else 0o600
            assert mode == expected, f"{path}: {oct(mode)}"
            assert path.stat().st_uid == os.geteuid()
        # Bob, without any capability, can neither list the node's directory
        # nor read its files.
        for path in entries:
            probe = ["runuser", "-u", name, "--", "test", "-r", str(path)]
            assert subprocess.run(probe, check=False).returncode != 0, f"bob can read {path}"
    finally:
        subprocess.run(
            [sys.executable, "-m", "tui.cli", "stop-local-node"],
            env=_env(alice_home),
            capture_output=True,
            timeout=60,
            check=False,
        )
