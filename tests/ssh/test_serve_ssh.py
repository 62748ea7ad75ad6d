"""``qpc serve-ssh`` with a real OpenSSH client: exec commands, identity by key, operation.

A real server process (which starts its own node), real ``ssh``. The TUI
itself over ssh is in ``test_ssh_tui.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ssh.helpers import (
    SshServer,
    fingerprint,
    have_ssh,
    keygen,
    server_env,
    start_server,
)
from tui.client.localnode import read_local_node

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not have_ssh(), reason="needs the OpenSSH client"),
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
def key(tmp_path: Path) -> Path:
    """A fresh client key."""
    return keygen(tmp_path / "id_a")


def test_health_and_ping_answer_like_the_cli(server: SshServer, key: Path) -> None:
    done = server.run(key, ["health"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok  version ")
    assert "store sqlite" in done.stdout

    done = server.run(key, ["health", "--json"])
    assert json.loads(done.stdout)["status"] == "ok"

    done = server.run(key, ["ping", "-c", "2", "--json"])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert len(doc["rtts_ms"]) == 2 and doc["median_ms"] > 0

    done = server.run(key, ["ping", "-c", "2"])
    assert done.stdout.count("rtt ") == 2 and "min/median/max" in done.stdout


def test_unknown_commands_are_refused_with_usage(server: SshServer, key: Path) -> None:
    for command in (["rm", "-rf", "/"], ["ping", "-c", "0"], ["health", "--evil"], ["sh"]):
        done = server.run(key, command)
        assert done.returncode == 2, command
        assert "usage" in done.stderr or "count" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout


def test_whoami_of_an_unknown_key_names_it(server: SshServer, key: Path) -> None:
    done = server.run(key, ["whoami"])
    assert done.returncode == 1
    assert fingerprint(key.with_suffix(".pub")) in done.stderr
    assert "register" in done.stderr
    doc = json.loads(server.run(key, ["whoami", "--json"]).stdout)
    assert doc == {"error": "no account", "key": fingerprint(key.with_suffix(".pub"))}


def test_a_shell_without_a_terminal_is_refused(server: SshServer, key: Path) -> None:
    done = subprocess.run(
        [*server.ssh_argv(key, "-T")], input="", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "ssh -t" in done.stderr


def _register_profile(server: SshServer, key: Path, user: str) -> None:
    """Create the account for ``key`` with the CLI, where the server keeps that key's profile."""
    # The profile directory of a key is the hex SHA-256 of its wire encoding.
    import base64
    import hashlib

    blob = base64.b64decode(key.with_suffix(".pub").read_text().split()[1])
    profile = server.state / "profiles" / hashlib.sha256(blob).hexdigest()
    env = server_env(
        QPC_DATA_DIR=str(server.state),
        QPC_PASSPHRASE=f"{user} passphrase",
        QPC_PASSWORD=f"{user} password",
    )
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--profile", str(profile), "register", user],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_whoami_of_a_known_key_runs_on_its_profile(server: SshServer, key: Path) -> None:
    _register_profile(server, key, "alice")
    done = server.run(key, ["whoami"], stdin="alice passphrase\n")
    assert done.returncode == 0, done.stderr
    assert "user:        alice" in done.stdout
    done = server.run(key, ["whoami", "--json"], stdin="alice passphrase\n")
    assert json.loads(done.stdout)["user"] == "alice"
    done = server.run(key, ["whoami"], stdin="wrong\n")
    assert done.returncode == 1
    assert "alice" not in done.stdout


def test_identity_is_the_key_that_signed_not_the_one_offered(
    server: SshServer, tmp_path: Path
) -> None:
    """CVE-2024-45337 class: the client offers key A (accepted), then signs with key B.

    Key A's private half is encrypted and BatchMode forbids asking for its
    passphrase, so OpenSSH offers A's public key (the server answers that A
    would do), cannot sign with it and goes on to sign with B.
    """
    a = keygen(tmp_path / "id_offered", passphrase="locked away")
    b = keygen(tmp_path / "id_signer")
    _register_profile(server, a, "alice")
    _register_profile(server, b, "bob")
    done = server.run(
        a,
        ["whoami"],
        stdin="bob passphrase\n",
        more=["-i", str(b), "-v"],
    )
    # The offer of A was accepted, and B was what authenticated.
    assert f"Server accepts key: {a}" in done.stderr
    assert f'Authenticated to 127.0.0.1 ([127.0.0.1]:{server.port}) using "publickey"' in (
        done.stderr
    )
    assert done.returncode == 0, done.stderr
    assert "user:        bob" in done.stdout
    assert "alice" not in done.stdout


def test_host_key_is_persistent_and_private(tmp_path: Path, key: Path) -> None:
    state = tmp_path / "state"
    first = start_server(state)
    try:
        path = state / "ssh_host_ed25519_key"
        assert path.stat().st_mode & 0o777 == 0o600
        assert state.stat().st_mode & 0o777 == 0o700
        assert first.host_key.startswith("SHA256:")
        node = read_local_node(state)
        assert node is not None
    finally:
        assert first.stop() == 0
    # The embedded node the server started is stopped with it.
    assert read_local_node(state) is None
    second = start_server(state)
    try:
        assert second.host_key == first.host_key
        scanned = subprocess.run(
            ["ssh-keyscan", "-p", str(second.port), "-t", "ed25519", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        keyfile = tmp_path / "scanned.pub"
        keyfile.write_text(scanned.split(" ", 1)[1])
        assert fingerprint(keyfile) == first.host_key
    finally:
        second.stop()


def test_a_host_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    srv = start_server(state)
    srv.stop()
    (state / "ssh_host_ed25519_key").chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "serve-ssh", "--state-dir", str(state)],
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "readable by others" in done.stderr


def test_auth_rate_limit_per_address(tmp_path: Path, key: Path) -> None:
    srv = start_server(tmp_path / "state", "--auth-burst", "2", "--auth-rate", "0.001")
    try:
        assert srv.run(key, ["health"]).returncode == 0
        assert srv.run(key, ["health"]).returncode == 0
        done = srv.run(key, ["health"])
        assert done.returncode == 255  # ssh: the server disconnected
        assert "ok" not in done.stdout
    finally:
        srv.stop()


def test_metrics_count_sessions(tmp_path: Path, key: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = start_server(tmp_path / "state", "--metrics", f"127.0.0.1:{port}")
    try:
        assert srv.run(key, ["health"]).returncode == 0
        assert srv.run(key, ["nope"]).returncode == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'qpc_ssh_sessions_opened_total{kind="exec"} 2.0' in text
        assert 'qpc_ssh_sessions{kind="exec"} 0.0' in text
        assert 'qpc_ssh_auth_total{result="ok"} 2.0' in text
    finally:
        srv.stop()


def test_a_node_given_with_server(tmp_path: Path, key: Path) -> None:
    from tui.client.localnode import ensure_local_node, stop_local_node

    node = ensure_local_node(tmp_path / "node")
    try:
        srv = start_server(tmp_path / "state", "--server", node.address)
        try:
            assert srv.node == f"{node.address} {node.fingerprint}"
            assert srv.run(key, ["health"]).returncode == 0
            assert read_local_node(tmp_path / "state") is None  # no embedded node
        finally:
            srv.stop()
        wrong = "00" * 32
        argv = [sys.executable, "-m", "tui.cli", "serve-ssh", "--listen", "127.0.0.1:0"]
        argv += ["--state-dir", str(tmp_path / "state"), "--server", node.address]
        done = subprocess.run(
            [*argv, "--server-fingerprint", wrong],
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert "not the key given" in done.stderr
    finally:
        stop_local_node(tmp_path / "node")
