"""``qpc-node``: run a quicnprotochat node until SIGTERM/SIGINT.

With ``--workers N`` (PostgreSQL store only) this process is a supervisor:
it makes sure the TLS identity exists, starts worker 0, learns the port it
bound (``--listen`` may say port 0), starts workers 1..N-1 on the same port
(SO_REUSEPORT: the kernel spreads clients over them by address hash), restarts
a worker that dies, and on SIGTERM/SIGINT stops them all. Each worker is
``qpc-node`` with the same arguments plus ``--worker-id``; with
``--metrics-port P`` worker i serves metrics on P + i.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from node.app import Node
from node.config import NodeConfig, format_hostport, load_config
from proto import event_loop, files, memory, tls
from proto.errors import ConfigError, QpcError

RESTART_DELAY_S = 1.0
"""Wait before restarting a worker that died."""
SUPERVISOR_CHECK_S = 1.0
"""How often a worker checks that its supervisor still runs."""
SUPERVISOR_PID_ENV = "QPC_SUPERVISOR_PID"
"""Environment variable through which the supervisor tells a worker its pid."""


class _KeyValueFormatter(logging.Formatter):
    """One line per record: ``ts=… level=… logger=… msg="…"`` (no payloads, ever)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        text = record.getMessage().replace('"', "'")
        line = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
        line += f'logger={record.name} msg="{text}"'
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("quic").setLevel(logging.WARNING)  # aioquic's per-packet chatter


async def _serve(config: NodeConfig) -> None:
    node = await Node.start(config)
    print(f"listening: {node.address}", flush=True)
    print(f"fingerprint: {node.fingerprint}", flush=True)
    if node.metrics_port is not None:
        print(f"metrics: http://{config.metrics_host}:{node.metrics_port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch = None
    if config.worker_id >= 0:
        watch = loop.create_task(_watch_supervisor(stop, _supervisor_pid()))
    try:
        await stop.wait()
    finally:
        if watch is not None:
            watch.cancel()
        await node.stop()


def _supervisor_pid() -> int:
    """The pid of the supervisor that started this worker.

    The supervisor passes its pid in the environment: a worker cannot take its
    parent's pid when it starts watching, because by then the supervisor may
    already be gone and the worker reparented.
    """
    try:
        return int(os.environ[SUPERVISOR_PID_ENV])
    except (KeyError, ValueError):
        return os.getppid()


async def _watch_supervisor(stop: asyncio.Event, supervisor: int) -> None:
    """A worker stops by itself when its supervisor is gone (even if SIGKILLed).

    A pidfd of the supervisor becomes readable when it exits; where pidfds are
    not available the worker polls its parent pid instead.
    """
    if os.getppid() == supervisor:
        try:
            fd = os.pidfd_open(supervisor)
        except ProcessLookupError:
            pass
        except (AttributeError, OSError):
            while os.getppid() == supervisor:  # noqa: ASYNC110 - nothing to wait on
                await asyncio.sleep(SUPERVISOR_CHECK_S)
        else:
            gone = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, gone.set)
            try:
                await gone.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)
    logging.getLogger(__name__).warning("supervisor gone; worker stopping")
    stop.set()


@dataclasses.dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None


class _Supervisor:
    """Starts, watches and stops the worker processes of ``--workers N``."""

    def __init__(self, config: NodeConfig, argv: Sequence[str]) -> None:
        self.config = config
        self.argv = list(argv)
        self.port = config.port
        self.stopping = False
        self.workers = [_Worker(i) for i in range(config.workers)]

    def _args(self, index: int) -> list[str]:
        args = [*self.argv, "--worker-id", str(index)]
        args += ["--listen", format_hostport(self.config.host, self.port)]
        if self.config.metrics_port:
            args += ["--metrics-port", str(self.config.metrics_port + index)]
        return args

    async def _spawn(self, w: _Worker) -> tuple[str, str]:
        """Start worker ``w``; return its ``listening:`` and ``fingerprint:`` lines."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "node",
            *self._args(w.index),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())},
        )
        w.proc = proc
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                listening = (await proc.stdout.readline()).decode().strip()
                fingerprint = (await proc.stdout.readline()).decode().strip()
        except TimeoutError:
            listening = fingerprint = ""
        if not listening.startswith("listening: "):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise QpcError(f"worker {w.index} did not start")
        w.pump = asyncio.get_running_loop().create_task(self._pump(w, proc))
        return listening, fingerprint

    @staticmethod
    async def _pump(w: _Worker, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            print(f"worker {w.index}: {line.decode().rstrip()}", flush=True)

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        c = self.config
        # one TLS identity for every worker, created before any of them starts
        tls.load_or_create_server_identity(c.data_dir / "tls", cert_file=c.cert, key_file=c.key)
        try:
            listening, fingerprint = await self._spawn(self.workers[0])
            self.port = int(listening.rsplit(":", 1)[1])
            for w in self.workers[1:]:
                await self._spawn(w)
            print(listening, flush=True)
            print(fingerprint, flush=True)
            pids = " ".join(str(w.proc.pid) for w in self.workers if w.proc is not None)
            print(f"workers: {len(self.workers)} pids {pids}", flush=True)
            while not stop.is_set():
                waits = {
                    loop.create_task(w.proc.wait()): w for w in self.workers if w.proc is not None
                }
                stopper = loop.create_task(stop.wait())
                done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in [*waits, stopper]:
                    t.cancel()
                for t in done:
                    dead = waits.get(t)
                    if dead is None or stop.is_set():
                        continue
                    code = dead.proc.returncode if dead.proc is not None else None
                    logging.getLogger(__name__).warning(
                        "worker %d exited (%s); restarting", dead.index, code
                    )
                    await asyncio.sleep(RESTART_DELAY_S)
                    with contextlib.suppress(QpcError):
                        await self._spawn(dead)
                        pid = dead.proc.pid if dead.proc is not None else 0
                        print(f"worker {dead.index}: restarted pid {pid}", flush=True)
        finally:
            await self._stop_all()
        return 0 if all(w.proc is None or w.proc.returncode == 0 for w in self.workers) else 1

    async def _stop_all(self) -> None:
        procs = [w.proc for w in self.workers if w.proc is not None]
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        for w in self.workers:
            if w.pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.pump, 5)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qpc-node`` console script; returns the exit status."""
    files.set_program_umask()  # second line behind proto.files (docs/THREAT_MODEL.md)
    memory.cap_mmap_threshold()  # freed KDF and tree buffers go back (proto/memory.py)
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"qpc-node: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    if config.workers > 1 and config.worker_id < 0:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            return asyncio.run(_Supervisor(config, args).run())
        except (QpcError, OSError) as exc:
            print(f"qpc-node: {exc}", file=sys.stderr)
            return 1
    try:
        event_loop.run(_serve(config), config.loop)
    except (QpcError, OSError) as exc:
        print(f"qpc-node: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
