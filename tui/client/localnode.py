"""The embedded local node: one ``qpc-node`` subprocess shared by every ``qpc`` run.

With no ``--server`` and no server recorded in the profile, the CLI and the
TUI talk to a node on a free loopback port. The first ``qpc`` that needs it
starts ``python -m node`` as a detached subprocess (its data in
``<data dir>/local-node``) and records ``{"pid", "address", "fingerprint"}``
in ``local-node/node.json``; later runs (and other processes) read that file
and reuse the node while its process is alive. A file lock serialises the
start, so two ``qpc`` processes started together share one node.

Liveness is a lock, not a pid: the starter takes an exclusive ``flock`` on
``local-node/alive.lock`` and hands that open file to the node process, so
the kernel holds the lock exactly as long as the node runs (a ``kill -9``
releases it; a pid can be reused and a dead child of a live ``qpc`` is a
zombie that ``kill(pid, 0)`` still finds). :func:`node_alive` tests it
without blocking; every client that notices the node died calls
:func:`ensure_local_node`, which restarts it under the start lock: whoever
gets the lock first starts it, the others find it running.

Leases: every process that uses the node holds a shared ``flock`` on
``local-node/users.lock`` (:class:`NodeLease`) for as long as it does. A
client that wants the node gone when it is the last one (the TUI) releases
its lease with ``stop_if_last=True``: under the start lock it tries the lock
exclusively and stops the node only if no other process holds a lease (a
``qpc listen``, another TUI, a running CLI command).

The node is reached only through its public command line, never imported
(``tui`` and ``node`` stay independent). The node's key fingerprint comes from
its own stdout, so the client pins it exactly (no trust on first use needed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import platformdirs

from proto import files
from proto.errors import ConfigError

__all__ = [
    "DATA_DIR_ENV",
    "LocalNode",
    "NodeLease",
    "data_dir",
    "ensure_local_node",
    "node_alive",
    "read_local_node",
    "stop_local_node",
]

ALIVE_LOCK = "alive.lock"
"""Held exclusively by the node process for its whole life."""
USERS_LOCK = "users.lock"
"""Held shared by every process using the node (see :class:`NodeLease`)."""
START_LOCK = "start.lock"
"""Serialises starting and stopping the node."""

log = logging.getLogger(__name__)

DATA_DIR_ENV = "QPC_DATA_DIR"
"""Overrides the platform data dir (profiles and the local node live under it)."""

_START_TIMEOUT_S = 20.0
_DETACHED: set[subprocess.Popen[bytes]] = set()
"""Nodes this process started: they outlive the call (and this process) by
design; holding the handles keeps ``Popen.__del__`` from warning that a child
still runs. :func:`_alive` reaps one that exits while we run."""


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


def _lock_free(path: Path) -> bool | None:
    """Whether nobody holds a lock on ``path`` (None: no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also drops the probe's own lock
    return True


def node_alive(home: Path, pid: int) -> bool:
    """Whether the node recorded in ``home`` (a ``local-node`` dir) still runs."""
    free = _lock_free(home / ALIVE_LOCK)
    if free is None:  # a record without the lock file: fall back to the pid
        return _alive(pid)
    return not free


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
    return node if node_alive(record.parent, node.pid) else None


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


def ensure_local_node(
    base: Path | None = None, *, extra_args: tuple[str, ...] = (), detach: bool = True
) -> LocalNode:
    """Return the shared local node, starting it if none is running.

    Args:
        base: data dir (default :func:`data_dir`); the node lives in ``base/local-node``.
        extra_args: more ``qpc-node`` flags for a node started now.
        detach: start it in a session of its own, so it outlives the terminal
            (the shared node); False keeps it in the caller's process group,
            so a hang-up of the terminal ends it with the caller (``qpc demo``).

    Raises:
        ConfigError: the node could not be started (its log is named).
    """
    home = (base or data_dir()) / "local-node"
    files.private_dir(home)
    record = home / "node.json"
    for proc in list(_DETACHED):  # reap nodes of ours that died
        if proc.poll() is not None:
            _DETACHED.discard(proc)
    with files.open_private(home / START_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        node = _read(record)
        if node is not None:
            return node
        return _start(home, extra_args, detach)


def _previous_port(record: Path) -> int:
    try:
        return int(json.loads(record.read_text("utf-8"))["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _start(home: Path, extra_args: tuple[str, ...], detach: bool) -> LocalNode:
    """Start the node (the caller holds the start lock).

    A restarted node listens on the port of the one before it when that port
    is free, so clients that were given its address (``--server``, another
    Unix user) find it again; otherwise on a new free port.
    """
    record = home / "node.json"
    port = _previous_port(record)
    try:
        return _spawn(home, port, extra_args, detach)
    except ConfigError:
        if port == 0:
            raise
        log.info("the local node's previous port %d is taken; using a new one", port)
        return _spawn(home, 0, extra_args, detach)


def _spawn(home: Path, port: int, extra_args: tuple[str, ...], detach: bool) -> LocalNode:
    record = home / "node.json"
    log_path = home / "node.log"
    with files.open_private(home / ALIVE_LOCK, "a") as alive:
        # The lock travels to the node with the open file (pass_fds): ours
        # closes on leaving this block, the node's copy holds it until it exits.
        fcntl.flock(alive, fcntl.LOCK_EX)
        args = [
            sys.executable,
            "-m",
            "node",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(home / "data"),
            # One user on one machine: generous limits for scripted use.
            "--login-rate",
            "100",
            "--login-burst",
            "1000",
            *extra_args,
        ]
        with files.open_private(log_path, "wb") as out:
            proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
                close_fds=True,
                pass_fds=(alive.fileno(),),
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            banner = _parse_banner(log_path)
            if banner is not None:
                host, bound, fp = banner
                node = LocalNode(pid=proc.pid, host=host, port=bound, fingerprint=fp)
                files.write_private(
                    record,
                    json.dumps(
                        {"pid": proc.pid, "host": host, "port": bound, "fingerprint": fp}
                    ).encode(),
                )
                _DETACHED.add(proc)
                log.info("started the local node (pid %d) on %s", proc.pid, node.address)
                return node
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        raise ConfigError(f"the local node did not start; see {log_path}")


def stop_local_node(base: Path | None = None) -> bool:
    """Stop the shared local node if one runs; returns whether one was stopped."""
    home = (base or data_dir()) / "local-node"
    if not home.is_dir():
        return False
    with files.open_private(home / START_LOCK, "a") as start:
        fcntl.flock(start, fcntl.LOCK_EX)
        return _stop(home)


def _stop(home: Path) -> bool:
    """Stop the node recorded in ``home`` (the caller holds the start lock)."""
    node = _read(home / "node.json")
    if node is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.pid, 15)
    deadline = time.monotonic() + 10
    while node_alive(home, node.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _alive(node.pid)  # reaps it if it is our child
    with contextlib.suppress(FileNotFoundError):
        (home / "node.json").unlink()
    return True


class NodeLease:
    """This process uses the local node: a shared lock on ``users.lock``.

    Taken with :meth:`acquire` (after the node is running); :meth:`release`
    drops it and, with ``stop_if_last``, stops the node when no other process
    holds a lease. Both steps of that check run under the start lock, so a
    client starting to use the node either holds its lease before the check
    (and the node stays) or starts a new node after it.
    """

    def __init__(self, base: Path | None = None) -> None:
        """The lease on the local node of data dir ``base`` (default :func:`data_dir`)."""
        self.home = (base or data_dir()) / "local-node"
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this lease is held."""
        return self._fh is not None

    def acquire(self) -> None:
        """Hold the lease (no-op if held)."""
        if self._fh is not None:
            return
        files.private_dir(self.home)
        fh = files.open_private(self.home / USERS_LOCK, "a")
        fcntl.flock(fh, fcntl.LOCK_SH)
        self._fh = fh

    def release(self, *, stop_if_last: bool = False) -> bool:
        """Drop the lease; returns whether the node was stopped (``stop_if_last``)."""
        fh, self._fh = self._fh, None
        if fh is None:
            return False
        fh.close()
        if not stop_if_last:
            return False
        with files.open_private(self.home / START_LOCK, "a") as start:
            fcntl.flock(start, fcntl.LOCK_EX)
            with files.open_private(self.home / USERS_LOCK, "a") as users:
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # another process still uses the node
                return _stop(self.home)
