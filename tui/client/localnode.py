"""The embedded local node: one ``qpc-node`` subprocess shared by every ``qpc`` run.

With no ``--server`` and no server recorded in the profile, the CLI and the
TUI talk to a node on a free loopback port. The first ``qpc`` that needs it
starts ``python -m node`` as a detached subprocess (its data in
``<data dir>/local-node``) and records ``{"pid", "address", "fingerprint"}``
in ``local-node/node.json``; later runs (and other processes) read that file
and reuse the node while its process is alive. A file lock serialises the
start, so two ``qpc`` processes started together share one node.

The node is reached only through its public command line, never imported
(``tui`` and ``node`` stay independent). The node's key fingerprint comes from
its own stdout, so the client pins it exactly (no trust on first use needed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from proto import files
from proto.errors import ConfigError

__all__ = [
    "DATA_DIR_ENV",
    "LocalNode",
    "data_dir",
    "ensure_local_node",
    "read_local_node",
    "stop_local_node",
]

DATA_DIR_ENV = "QPC_DATA_DIR"
"""Overrides the platform data dir (profiles and the local node live under it)."""

_START_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalNode:
    """A running local node."""

    pid: int
    """Process id."""
    host: str
    """Loopback address."""
    port: int
    """UDP port."""
    fingerprint: str
    """Hex SPKI SHA-256 of its TLS key."""

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


def data_dir() -> Path:
    """``$QPC_DATA_DIR`` or the platform user data dir for quicnprotochat."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else platformdirs.user_data_path("quicnprotochat")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _read(record: Path) -> LocalNode | None:
    try:
        doc = json.loads(record.read_text("utf-8"))
        node = LocalNode(
            pid=int(doc["pid"]),
            host=str(doc["host"]),
            port=int(doc["port"]),
            fingerprint=str(doc["fingerprint"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return node if _alive(node.pid) else None


def read_local_node(base: Path | None = None) -> LocalNode | None:
    """The running local node as recorded in ``base/local-node/node.json`` (never starts one)."""
    return _read((base or data_dir()) / "local-node" / "node.json")


def _parse_banner(log: Path) -> tuple[str, int, str] | None:
    try:
        text = log.read_text("utf-8", errors="replace")
    except OSError:
        return None
    listen = fp = None
    for line in text.splitlines():
        if line.startswith("listening: "):
            listen = line.split(" ", 1)[1].strip()
        elif line.startswith("fingerprint: "):
            fp = line.split(" ", 1)[1].strip()
    if listen is None or fp is None:
        return None
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port), fp


def ensure_local_node(base: Path | None = None, *, extra_args: tuple[str, ...] = ()) -> LocalNode:
    """Return the shared local node, starting it if none is running.

    Args:
        base: data dir (default :func:`data_dir`); the node lives in ``base/local-node``.
        extra_args: more ``qpc-node`` flags for a node started now.

    Raises:
        ConfigError: the node could not be started (its log is named).
    """
    home = (base or data_dir()) / "local-node"
    files.private_dir(home)
    record = home / "node.json"
    with files.open_private(home / "start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        node = _read(record)
        if node is not None:
            return node
        log = home / "node.log"
        args = [
            sys.executable,
            "-m",
            "node",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(home / "data"),
            # One user on one machine: generous limits for scripted use.
            "--login-rate",
            "100",
            "--login-burst",
            "1000",
            *extra_args,
        ]
        with files.open_private(log, "wb") as out:
            proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            banner = _parse_banner(log)
            if banner is not None:
                host, port, fp = banner
                node = LocalNode(pid=proc.pid, host=host, port=port, fingerprint=fp)
                files.write_private(
                    record,
                    json.dumps(
                        {"pid": proc.pid, "host": host, "port": port, "fingerprint": fp}
                    ).encode(),
                )
                return node
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise ConfigError(f"the local node did not start; see {log}")


def stop_local_node(base: Path | None = None) -> bool:
    """Stop the shared local node if one runs; returns whether one was stopped."""
    home = (base or data_dir()) / "local-node"
    node = _read(home / "node.json")
    if node is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.pid, 15)
    deadline = time.monotonic() + 10
    while _alive(node.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        (home / "node.json").unlink()
    return True
