"""A real ``qpc serve-ssh`` process and a real OpenSSH client against it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])

SSH_OPTS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "LogLevel=ERROR",
    "-F",
    "/dev/null",
]


def have_ssh() -> bool:
    """Whether the OpenSSH client and ssh-keygen are installed."""
    return shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


def keygen(path: Path, passphrase: str = "") -> Path:
    """A new Ed25519 key pair at ``path`` (and ``path.pub``)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path


def fingerprint(path: Path) -> str:
    """``SHA256:...`` of a public key file, as ssh-keygen prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(path)], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    return out.split()[1]


def server_env(**extra: str) -> dict[str, str]:
    """Environment for the server and everything it starts."""
    env = dict(os.environ)
    env.update(PYTHONPATH=ROOT, QPC_KDF="fast", LANG="C.UTF-8")
    env.update(extra)
    return env


@dataclass
class SshServer:
    """A running ``qpc serve-ssh``."""

    proc: subprocess.Popen[str]
    port: int
    host_key: str
    node: str
    state: Path

    def ssh_argv(self, key: Path, *more: str, user: str = "u") -> list[str]:
        """``ssh`` options to reach this server with ``key``."""
        return ["ssh", *SSH_OPTS, "-p", str(self.port), "-i", str(key), *more, f"{user}@127.0.0.1"]

    def run(
        self, key: Path, command: Sequence[str], *, stdin: str = "", more: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """One exec request over a real ssh client."""
        return subprocess.run(
            [*self.ssh_argv(key, *more), *command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_server(state: Path, *args: str) -> SshServer:
    """Start ``qpc serve-ssh`` on a free port and read its banner."""
    argv = [sys.executable, "-m", "tui.cli", "serve-ssh", "--listen", "127.0.0.1:0"]
    argv += ["--state-dir", str(state), *args]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=server_env(),
        cwd=ROOT,
    )
    banner: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        name, _, value = line.strip().partition(": ")
        banner[name] = value
        if name == "node":
            break
    if "node" not in banner:
        proc.kill()
        raise AssertionError(f"serve-ssh did not start: {banner}")
    port = int(banner["listening"].rpartition(":")[2])
    return SshServer(
        proc=proc, port=port, host_key=banner["host key"], node=banner["node"], state=state
    )
