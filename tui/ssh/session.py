"""One SSH session: the TUI in its own process behind a PTY, or one exec command.

Why a process per session (and not one Textual app per session in the
server's event loop): Textual keeps process-wide state (the driver owns
stdin/stdout, signal handlers, one running app per thread's loop), the
engine does CPU work (MLS, Argon2id) that would stall every other session,
and a crash or a memory blow-up in one session must not touch the others.
A PTY gives the child exactly what a login gives ``qpc``: a terminal with a
size, ``TERM``, ``SIGWINCH`` on resize and ``SIGHUP`` on hang-up. The cost
is one Python interpreter per session (RSS in ``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shlex
import signal
import struct
import sys
import termios
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh

if TYPE_CHECKING:
    from tui.ssh.server import Host

__all__ = ["AuthKey", "Session", "parse_exec"]

log = logging.getLogger(__name__)

_EXEC_COMMANDS = ("whoami", "health", "ping")
_HANGUP_GRACE_S = 5.0
"""After a hang-up, the TUI has this long to exit before it is killed."""
_READ_CHUNK = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthKey:
    """The public key that authenticated the connection (its signature was verified)."""

    blob: bytes
    """The SSH wire encoding of the public key."""
    algorithm: str
    """Key type, e.g. ``ssh-ed25519``."""

    @property
    def fingerprint(self) -> str:
        """OpenSSH's ``SHA256:...`` form (what ``ssh-keygen -lf`` prints)."""
        import base64
        import hashlib

        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def profile_name(self) -> str:
        """Directory name of this key's profile (hex SHA-256 of the key)."""
        import hashlib

        return hashlib.sha256(self.blob).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecCommand:
    """A parsed exec request."""

    name: str
    """``whoami``, ``health`` or ``ping``."""
    json: bool = False
    """``--json`` output."""
    count: int = 3
    """``ping -c N``."""


def parse_exec(command: str) -> ExecCommand | str:
    """Parse an exec request; a string is the usage error to show."""
    usage = "usage: whoami|health|ping [-c N] [--json]"
    try:
        words = shlex.split(command)
    except ValueError:
        return usage
    if not words or words[0] not in _EXEC_COMMANDS:
        return usage
    name, rest = words[0], words[1:]
    as_json, count = False, 3
    while rest:
        word = rest.pop(0)
        if word == "--json":
            as_json = True
        elif name == "ping" and word in ("-c", "--count") and rest and rest[0].isdigit():
            count = int(rest.pop(0))
            if not 1 <= count <= 100:
                return "ping: the count must be 1..100"
        else:
            return usage
    return ExecCommand(name=name, json=as_json, count=count)


def _set_winsize(fd: int, cols: int, rows: int) -> None:
    cols, rows = max(1, min(cols, 1000)), max(1, min(rows, 1000))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _make_ctty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Session(asyncssh.SSHServerSession[bytes]):
    """One channel: a PTY-backed TUI process (shell) or one exec command."""

    def __init__(self, host: Host, key: AuthKey) -> None:
        self._host = host
        self._key = key
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term: str | None = None
        self._size = (80, 24)
        self._command: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._master: int | None = None
        self._pending = bytearray()
        self._stdin_eof = False
        self._reading = False
        self._pty_done = asyncio.Event()
        self._slot = False
        self._kind = "tui"
        self._idle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------ asyncssh

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        """Keep the channel."""
        self._chan = chan

    def pty_requested(
        self,
        term_type: str,
        term_size: tuple[int, int, int, int],
        term_modes: Mapping[int, int],
    ) -> bool:
        """Remember TERM and the size for the TUI's PTY."""
        self._term = term_type or "vt100"
        if term_size[0] and term_size[1]:
            self._size = (term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        """An interactive session: the TUI."""
        return True

    def exec_requested(self, command: str) -> bool:
        """``whoami``, ``health`` or ``ping`` (checked when the session starts)."""
        self._command = command
        self._kind = "exec"
        return True

    def session_started(self) -> None:
        """Admit the session (limits) and start the TUI or the command."""
        assert self._chan is not None
        refused = self._host.slots.acquire(self._key.profile_name)
        if refused is not None:
            self._host.metrics.rejected.inc()
            self._fail(f"qpc: {refused}\r\n", 1)
            return
        self._slot = True
        self._host.metrics.sessions.labels(self._kind).inc()
        self._host.metrics.sessions_total.labels(self._kind).inc()
        self._touch()
        if self._command is not None:
            self._task = self._loop.create_task(self._run_exec(self._command))
        elif self._term is None:
            self._fail("qpc: the chat needs a terminal: connect with `ssh -t`\r\n", 1)
        else:
            self._task = self._loop.create_task(self._run_tui())

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Client input: to the PTY (or the command's stdin)."""
        self._touch()
        if self._master is not None:
            self._pending += data
            self._flush_input()
        elif self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.write(data)
        elif len(self._pending) < _READ_CHUNK:  # before the command started
            self._pending += data

    def eof_received(self) -> bool:
        """End of client input: close the command's stdin; keep the channel half-open."""
        self._stdin_eof = True
        if self._proc is not None and self._proc.stdin is not None and self._master is None:
            self._proc.stdin.close()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        """window-change: resize the PTY (the kernel sends the TUI SIGWINCH)."""
        self._size = (width, height)
        if self._master is not None and width and height:
            _set_winsize(self._master, width, height)

    def pause_writing(self) -> None:
        """The client is slow: stop reading the PTY, so the TUI blocks, not the server."""
        if self._master is not None and self._reading:
            self._loop.remove_reader(self._master)
            self._reading = False

    def resume_writing(self) -> None:
        """The client caught up."""
        if self._master is not None and not self._reading and not self._pty_done.is_set():
            self._loop.add_reader(self._master, self._read_pty)
            self._reading = True

    def connection_lost(self, exc: Exception | None) -> None:
        """Hang-up (or the session ended): end the process, free the slot."""
        if self._idle is not None:
            self._idle.cancel()
        self._close_master()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            task = self._loop.create_task(self._hang_up(proc))
            self._host.ending.add(task)
            task.add_done_callback(self._host.ending.discard)
        if self._slot:
            self._slot = False
            self._host.slots.release(self._key.profile_name)
            self._host.metrics.sessions.labels(self._kind).dec()

    # ------------------------------------------------------------ internals

    def _fail(self, text: str, status: int) -> None:
        assert self._chan is not None
        self._chan.write_stderr(text.encode())
        self._chan.exit(status)

    def _touch(self) -> None:
        timeout = self._host.config.idle_timeout_s
        if timeout <= 0 or not self._slot:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(timeout, self._idle_out)

    def _idle_out(self) -> None:
        self._host.metrics.idle_closed.inc()
        if self._chan is not None:
            self._chan.close()

    def _child_env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "QPC_DATA_DIR": str(self._host.config.state_dir),
            "QPC_CONFIG": str(self._host.config.state_dir / "tui.toml"),
            "QPC_HOSTED": "ssh",
        }
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.update(dict(self._host.config.child_env))
        assert self._chan is not None
        colorterm = self._chan.get_environment().get("COLORTERM")
        if colorterm in ("truecolor", "24bit"):
            env["COLORTERM"] = colorterm
        return env

    def _cli_argv(self, *rest: str) -> list[str]:
        argv = [sys.executable, "-m", "tui.cli", "--profile", str(self._profile_dir())]
        if self._host.config.server:
            argv += ["--server", self._host.config.server]
        return [*argv, *rest]

    def _profile_dir(self) -> Path:
        return self._host.config.profiles_dir / self._key.profile_name

    async def _run_tui(self) -> None:
        assert self._chan is not None and self._term is not None
        master, slave = os.openpty()
        try:
            _set_winsize(slave, *self._size)
            env = {**self._child_env(), "TERM": self._term}
            self._proc = await asyncio.create_subprocess_exec(
                *self._cli_argv(),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=str(self._host.config.state_dir),
                start_new_session=True,
                preexec_fn=_make_ctty,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._loop.add_reader(master, self._read_pty)
        self._reading = True
        self._flush_input()  # what was typed while the TUI started
        log.info("session %s: TUI pid %d", self._key.fingerprint[:20], self._proc.pid)
        status = await self._proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._pty_done.wait()
        self._close_master()
        if not self._chan.is_closing():
            self._chan.exit(status if status >= 0 else 1)

    def _read_pty(self) -> None:
        assert self._master is not None and self._chan is not None
        try:
            data = os.read(self._master, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: the TUI closed the terminal (it exited)
            data = b""
        if not data:
            self._loop.remove_reader(self._master)
            self._reading = False
            self._pty_done.set()
            return
        self._chan.write(data)

    def _flush_input(self) -> None:
        if self._master is None:
            return
        try:
            n = os.write(self._master, self._pending)
        except BlockingIOError:
            n = 0
        except OSError:
            self._pending.clear()
            return
        del self._pending[:n]
        if self._pending:
            self._loop.call_later(0.01, self._flush_input)

    def _close_master(self) -> None:
        master, self._master = self._master, None
        if master is None:
            return
        if self._reading:
            self._loop.remove_reader(master)
            self._reading = False
        os.close(master)  # the TUI's terminal hangs up: it gets SIGHUP

    async def _hang_up(self, proc: asyncio.subprocess.Process) -> None:
        """SIGHUP the session's process group; SIGKILL what is left after a grace period."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGHUP)
        try:
            async with asyncio.timeout(_HANGUP_GRACE_S):
                await proc.wait()
        except TimeoutError:
            log.warning("session process %d ignored the hang-up; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def _run_exec(self, command: str) -> None:
        from tui.ssh.exec import run_exec

        assert self._chan is not None
        parsed = parse_exec(command)
        if isinstance(parsed, str):
            self._fail(f"qpc: {parsed}\n", 2)
            return
        try:
            status = await run_exec(self, parsed)
        except Exception:
            log.exception("exec %s failed", parsed.name)
            self._chan.write_stderr(b"qpc: error: internal error\n")
            status = 1
        if not self._chan.is_closing():
            self._chan.exit(status)

    # ------------------------------------------------------- for tui.ssh.exec

    @property
    def channel(self) -> asyncssh.SSHServerChannel[bytes]:
        """The session's channel."""
        assert self._chan is not None
        return self._chan

    @property
    def key(self) -> AuthKey:
        """The key that authenticated this connection."""
        return self._key

    @property
    def host(self) -> Host:
        """The server this session belongs to."""
        return self._host

    async def run_cli(self, *args: str) -> int:
        """Run ``qpc ARGS`` on this key's profile, stdin from the client; its exit status."""
        assert self._chan is not None
        proc = await asyncio.create_subprocess_exec(
            *self._cli_argv(*args, "--passphrase-fd", "0"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._child_env(),
            start_new_session=True,
        )
        self._proc = proc
        assert proc.stdin is not None
        proc.stdin.write(bytes(self._pending))
        self._pending.clear()
        if self._stdin_eof:
            proc.stdin.close()
        chan = self._chan

        async def pump(stream: asyncio.StreamReader | None, err: bool) -> None:
            while stream is not None and (chunk := await stream.read(_READ_CHUNK)):
                (chan.write_stderr if err else chan.write)(chunk)

        await asyncio.gather(pump(proc.stdout, False), pump(proc.stderr, True))
        return await proc.wait()
