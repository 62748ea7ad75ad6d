"""End-to-end benchmark: client engine -> node -> client engine, and Synapse for comparison.

Usage::

    python3 bench/e2e.py [--quick] [--write docs/perf/e2e.md]
                         [--synapse-venv DIR | --no-synapse]

What it measures (all on loopback, one machine):

* **raw enqueue RTT**: the node's ``enqueue`` round trip for a payload the size
  of a sealed chat message (no MLS, no envelope) — the baseline — measured
  twice: back to back, and paced like the latency workload (one call every
  50 ms, so every call meets idle processes, as each message of the latency
  run does);
* for groups of **2 and 10** members (sender and one listening receiver, the
  first device the sender seals for; the other members exist but are
  offline, so the sender still encrypts and seals for every device; for 10,
  the latency run is repeated with the device sealed for last as the
  listener): **end-to-end latency** from the ``send`` call to the
  decrypted plaintext event at the receiver, one message every 50 ms
  (median/p90/p99), and **messages/s** for one sender with 1 and 16 sends in
  flight (send rate, plus the rate at which the receiver had decrypted them all);
* the same workload through a local **Matrix Synapse** (from PyPI in its own
  venv, SQLite, plain HTTP on loopback, rate limits lifted, one sender and one
  ``/sync`` long-poller), as the server a user would otherwise pick.

The node runs as a ``qpc-node`` subprocess; the sender's engines run in this
process and the listening receiver in a child process (times compare through
the system-wide monotonic clock). Synapse runs as a subprocess too.
"""

# A benchmark driver: blocking setup calls inside async code are fine here.
# ruff: noqa: ASYNC109, ASYNC240

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# The script's own directory (bench/, which has a tui.py) must not shadow the packages.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
_spec = importlib.util.spec_from_file_location("e2e_synapse", _ROOT / "bench" / "e2e_synapse.py")
assert _spec is not None and _spec.loader is not None
_synapse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synapse)
SynapseBench = _synapse.SynapseBench
start_synapse = _synapse.start_synapse

from proto.crypto.atrest import FAST_TEST_PARAMS  # noqa: E402
from tui.client import api  # noqa: E402
from tui.client.core import EngineConfig  # noqa: E402
from tui.client.engine import Engine  # noqa: E402

INTERVAL_S = 0.05


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def summary(values: list[float]) -> str:
    """median / p90 / p99 in ms."""
    return f"{statistics.median(values):.2f} / {pct(values, 90):.2f} / {pct(values, 99):.2f}"


def start_node(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``qpc-node`` subprocess with lifted limits; returns it and host:port."""
    log = open(data / "node.log", "wb")  # noqa: SIM115 (lives as long as the node)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data),
            "--login-rate",
            "10000",
            "--login-burst",
            "10000",
            "--write-rate",
            "1000000",
            "--write-burst",
            "1000000",
            "--max-queue-depth",
            "1000000",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening: "):
        raise SystemExit(f"node did not start: {line!r}")
    return proc, line.split(" ", 1)[1].strip()


class Receiver:
    """The receiving profile in its own process, as on another machine.

    The child (this script with ``--child-receiver``) opens the profile, holds
    the subscription and prints ``<perf_counter> <text>`` per decrypted
    message; ``time.perf_counter`` is CLOCK_MONOTONIC, shared by processes on
    Linux, so arrival and send times compare directly.
    """

    def __init__(self, profile: Path, server: str) -> None:
        self.profile = profile
        self.server = server
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child-receiver",
            str(self.profile),
            self.server,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise SystemExit(f"receiver did not start: {line!r}")
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            stamp, _, text = line.decode().rstrip("\n").partition(" ")
            self.arrived[text] = float(stamp)
            self.changed.set()

    async def wait_for(self, texts: list[str], timeout: float = 120) -> float:
        """Wait until every text arrived; return the last arrival time."""
        deadline = time.perf_counter() + timeout
        while not all(t in self.arrived for t in texts):
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                missing = sum(t not in self.arrived for t in texts)
                raise SystemExit(f"receiver missed {missing} messages")
            await asyncio.wait_for(self.changed.wait(), left)
        return max(self.arrived[t] for t in texts)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await self.proc.wait()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


async def child_receiver(profile: Path, server: str) -> None:
    """``--child-receiver``: listen on ``profile`` and stamp every message."""
    cfg = EngineConfig(profile_dir=profile, server=server, kdf=FAST_TEST_PARAMS)
    engine = await Engine.open(cfg, "pp")
    out = sys.stdout
    try:
        async for ev in engine.events():
            if isinstance(ev, api.MessageReceived) and not ev.message.outgoing:
                out.write(f"{time.perf_counter()!r} {ev.message.text}\n")
                out.flush()
            elif isinstance(ev, api.ConnectionChanged) and ev.state.status.value == "connected":
                out.write("ready\n")
                out.flush()
    finally:
        await engine.close()


async def latency_run(
    send: Callable[[str], Awaitable[object]],
    recv_wait: Callable[[list[str]], Awaitable[float]],
    arrived: dict[str, float],
    tag: str,
    n: int,
) -> list[float]:
    """One message every 50 ms; returns send-call-to-plaintext latencies (ms)."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(n):
        text = f"{tag}-lat-{i}"
        sent[text] = time.perf_counter()
        await send(text)
        await asyncio.sleep(max(0.0, start + (i + 1) * INTERVAL_S - time.perf_counter()))
    await recv_wait(list(sent))
    return [(arrived[t] - sent[t]) * 1000 for t in sent]


async def rate_run(
    send: Callable[[str], Awaitable[object]],
    recv_wait: Callable[[list[str]], Awaitable[float]],
    tag: str,
    n: int,
    in_flight: int,
) -> tuple[float, float]:
    """``n`` sends with ``in_flight`` concurrent; returns (sent/s, delivered/s)."""
    texts = [f"{tag}-rate{in_flight}-{i}" for i in range(n)]
    queue = list(reversed(texts))
    t0 = time.perf_counter()

    async def worker() -> None:
        while queue:
            await send(queue.pop())

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    t_sent = time.perf_counter()
    t_last = await recv_wait(texts)
    return n / (t_sent - t0), n / (max(t_last, t_sent) - t0)


async def bench_qpc(
    base: Path, server: str, sizes: list[int], n_lat: int, n_rate: int
) -> dict[str, object]:
    """The qpc measurements (see module docstring)."""
    results: dict[str, object] = {}

    def cfg(name: str) -> EngineConfig:
        return EngineConfig(profile_dir=base / name, server=server, kdf=FAST_TEST_PARAMS)

    sink = await Engine.open(cfg("sink"), "pp", create=True)
    await sink.register("sink", "pw")
    probe = await Engine.open(cfg("probe"), "pp", create=True)
    await probe.register("probe", "pw")
    rpc = await probe.rpc()
    payload = os.urandom(1664)  # a sealed short chat message is about this size
    for _ in range(50):
        await rpc.enqueue(recipient=sink.device_id, channel_id=b"bench", payload=payload)
    rtts = []
    for _ in range(max(300, n_lat)):
        t0 = time.perf_counter()
        await rpc.enqueue(recipient=sink.device_id, channel_id=b"bench", payload=payload)
        rtts.append((time.perf_counter() - t0) * 1000)
    results["raw_enqueue_ms"] = rtts
    paced = []
    for _ in range(n_lat):
        t0 = time.perf_counter()
        await rpc.enqueue(recipient=sink.device_id, channel_id=b"bench", payload=payload)
        paced.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(max(0.0, t0 + INTERVAL_S - time.perf_counter()))
    results["raw_enqueue_paced_ms"] = paced
    for e in (sink, probe):
        await e.close()

    for size in sizes:
        engines = []
        for i in range(size):
            e = await Engine.open(cfg(f"g{size}-u{i}"), "pp", create=True)
            await e.register(f"g{size}u{i}", "pw")
            engines.append(e)
        sender, receiver = engines[0], engines[1]
        chan = await sender.create_group(f"bench{size}")
        await sender.invite(chan.id, [e.user for e in engines[1:]])
        for e in engines[1:]:
            await e.sync()
        await sender.sync()  # access keys from the hellos: sealed sender from here on
        await receiver.close()  # its profile now belongs to the receiver process
        recv = Receiver(base / f"g{size}-u1", server)
        await recv.start()

        async def send(text: str, _s: Engine = sender, _c: str = chan.id) -> object:
            return await _s.send(_c, text)

        for i in range(20):  # warm-up
            await send(f"g{size}-warm-{i}")
        await recv.wait_for([f"g{size}-warm-{i}" for i in range(20)])
        lat = await latency_run(send, recv.wait_for, recv.arrived, f"g{size}", n_lat)
        r1 = await rate_run(send, recv.wait_for, f"g{size}", n_rate, 1)
        r16 = await rate_run(send, recv.wait_for, f"g{size}", n_rate, 16)
        results[f"group{size}"] = {"latency_ms": lat, "rate1": r1, "rate16": r16}
        await recv.stop()
        if size > 2:
            # The receiver above is the first device the sender seals for; the
            # member invited last is sealed for last (members in leaf order).
            last = engines[-1]
            await last.close()  # its profile now belongs to a receiver process
            recv = Receiver(base / f"g{size}-u{size - 1}", server)
            await recv.start()
            for i in range(5):  # after its backlog: the messages of the runs above
                await send(f"g{size}-warm-last-{i}")
            await recv.wait_for([f"g{size}-warm-last-{i}" for i in range(5)])
            results[f"group{size}-last"] = {
                "latency_ms": await latency_run(
                    send, recv.wait_for, recv.arrived, f"g{size}-last", n_lat
                )
            }
            await recv.stop()
        for e in engines:
            if e is not receiver and not (size > 2 and e is engines[-1]):
                await e.close()
    return results


async def bench_synapse(venv: Path, work: Path, n_lat: int, n_rate: int) -> dict[str, object]:
    """The same workload through Synapse."""
    proc, url = await start_synapse(venv, work)
    try:
        sb = SynapseBench(url)
        await sb.setup()
        await sb.start_sync()

        async def send(text: str) -> object:
            return await sb.send(text)

        for i in range(20):
            await send(f"warm-{i}")
        await sb.wait_for([f"warm-{i}" for i in range(20)])
        lat = await latency_run(send, sb.wait_for, sb.arrived, "syn", n_lat)
        r1 = await rate_run(send, sb.wait_for, "syn", n_rate, 1)
        r16 = await rate_run(send, sb.wait_for, "syn", n_rate, 16)
        await sb.close()
        return {"latency_ms": lat, "rate1": r1, "rate16": r16}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def render(res: dict[str, object], syn: dict[str, object] | str, n_lat: int, n_rate: int) -> str:
    """Markdown tables."""
    raw = res["raw_enqueue_ms"]
    paced = res["raw_enqueue_paced_ms"]
    assert isinstance(raw, list) and isinstance(paced, list)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}. Latency: {n_lat} messages at one per 50 ms; "
        f"rates: {n_rate} messages per run. All on loopback.",
        "",
        "| workload | median / p90 / p99 latency (ms) | msg/s sent, 1 in flight (delivered) "
        "| msg/s sent, 16 in flight (delivered) |",
        "|---|---|---|---|",
        f"| raw node `enqueue` round trip, back to back (baseline) | {summary(raw)} | "
        f"{1000 / statistics.median(raw):.0f} | - |",
        f"| raw node `enqueue` round trip, one per 50 ms (baseline) | {summary(paced)} | - | - |",
    ]
    rows: list[tuple[str, dict[str, object]]] = []
    for k, v in res.items():
        if k.startswith("group"):
            size, _, last = k[5:].partition("-")
            where = ", the device sealed for last" if last else ""
            assert isinstance(v, dict)
            rows.append(
                (f"qpc, {size}-member group{where} (MLS + X-Wing envelope, sealed sender)", v)
            )
    if isinstance(syn, dict):
        rows.append(("Synapse 1.163.2, 2-member room (no E2EE, SQLite)", syn))

    def rate(d: dict[str, object], key: str) -> str:
        r = d.get(key)
        return f"{r[0]:.0f} ({r[1]:.0f})" if isinstance(r, tuple) else "-"

    for name, d in rows:
        lat = d["latency_ms"]
        assert isinstance(lat, list)
        lines.append(f"| {name} | {summary(lat)} | {rate(d, 'rate1')} | {rate(d, 'rate16')} |")
    if isinstance(syn, str):
        lines += ["", f"Synapse: not measured — {syn}"]
    lines += [
        "",
        "| median end-to-end | vs raw enqueue back to back | vs raw enqueue one per 50 ms "
        "| vs Synapse median | send rate vs Synapse, 1 / 16 in flight |",
        "|---|---|---|---|---|",
    ]
    raw_med, paced_med = statistics.median(raw), statistics.median(paced)
    for name, d in rows[: len(rows) - isinstance(syn, dict)]:
        lat, r1, r16 = d["latency_ms"], d.get("rate1"), d.get("rate16")
        assert isinstance(lat, list)
        med = statistics.median(lat)
        vs_syn, rate_syn = "-", "-"
        if isinstance(syn, dict):
            s_lat, s1, s16 = syn["latency_ms"], syn["rate1"], syn["rate16"]
            assert isinstance(s_lat, list) and isinstance(s1, tuple) and isinstance(s16, tuple)
            vs_syn = f"{med / statistics.median(s_lat):.2f}x"
            if isinstance(r1, tuple) and isinstance(r16, tuple):
                rate_syn = f"{r1[0] / s1[0]:.1f}x / {r16[0] / s16[0]:.1f}x"
        lines.append(
            f"| {name.split(' (')[0]}: {med:.2f} ms | {med / raw_med:.1f}x "
            f"| {med / paced_med:.1f}x | {vs_syn} | {rate_syn} |"
        )
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> None:
    n_lat = 60 if args.quick else 200
    n_rate = 100 if args.quick else 400
    work = Path(tempfile.mkdtemp(prefix="qpc-bench-"))
    try:
        node_proc, server = start_node(work)
        try:
            res = await bench_qpc(work, server, [2, 10], n_lat, n_rate)
        finally:
            node_proc.terminate()
            node_proc.wait(20)
        syn: dict[str, object] | str = "skipped (--no-synapse)"
        if not args.no_synapse:
            venv = Path(args.synapse_venv)
            if not (venv / "bin" / "python").exists():
                syn = f"no Synapse venv at {venv} (pip install matrix-synapse into a venv there)"
            else:
                syn = await bench_synapse(venv, work / "synapse", n_lat, n_rate)
        table = render(res, syn, n_lat, n_rate)
        print(table)
        if args.write:
            Path(args.write).write_text(table + "\n", "utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer messages")
    p.add_argument("--write", metavar="FILE", help="also write the table (Markdown) to FILE")
    p.add_argument(
        "--synapse-venv",
        default=os.environ.get("QPC_SYNAPSE_VENV", "bench/out/synapse-venv"),
        help="venv with matrix-synapse installed (default bench/out/synapse-venv)",
    )
    p.add_argument("--no-synapse", action="store_true", help="skip the Synapse comparison")
    p.add_argument(
        "--child-receiver", nargs=2, metavar=("PROFILE", "SERVER"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.child_receiver:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(child_receiver(Path(args.child_receiver[0]), args.child_receiver[1]))
        return
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
