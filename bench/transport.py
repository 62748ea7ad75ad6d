"""Node CPU per call for each transport stack and event loop, side by side.

Run by hand from the repository root (takes about a minute)::

    python3 bench/transport.py [--seconds 5] [--inflight 64] [--rounds 2] [--profile]

Starts one ``qpc-node`` subprocess per variant (QUIC library chosen with
``QPC_QUIC_STACK``, event loop with ``--loop``, datagrams sent one ``sendto``
each or batched per ``sendmsg`` with UDP GSO by ``QPC_UDP_GSO``; see
proto/quic_stack.py, proto/event_loop.py and proto/udp_batch.py), SQLite store
with synchronous=FULL, and measures the node process's own CPU (utime + stime
from ``/proc/<pid>/stat``) per call while this process drives ``--inflight``
calls in flight on one connection: ``ping`` (no-op) and durable ``enqueue``
(answered once its group commit is durable). The load generator is the same
for every variant (aioquic + asyncio), so only the node differs. Variants run
interleaved for ``--rounds`` rounds; the table shows the median over rounds
and the ratio to the first variant run (``--only`` picks variants).

``--profile`` additionally runs the default node (aioquic + asyncio, GSO)
under cProfile for the durable phase alone and prints where its CPU goes,
grouped by part (QUIC, codec, dispatch, store, notify, event loop) and the
top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("bench_node", ROOT / "bench" / "node.py")
assert _spec is not None and _spec.loader is not None
bn: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bn)

TICKS = os.sysconf("SC_CLK_TCK")
VARIANTS = [
    ("aioquic + asyncio, sendto", "aioquic", "asyncio", "off"),
    ("aioquic + asyncio (default)", "aioquic", "asyncio", "on"),
    ("aioquic + uvloop", "aioquic", "uvloop", "on"),
    ("qh3 + asyncio", "qh3", "asyncio", "on"),
    ("qh3 + uvloop", "qh3", "uvloop", "on"),
]
"""(name, QUIC stack, event loop, UDP GSO batching of the node's sends:
``QPC_UDP_GSO``, proto/udp_batch.py). The first is the baseline of the ratios."""


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def per_call(
    pid: int, fn: Callable[[int], Awaitable[object]], inflight: int, seconds: float
) -> tuple[float, float]:
    """(node CPU µs per call, calls/s) for ``inflight`` concurrent callers."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await fn(k)
            done += 1

    c0, t0 = cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(inflight)))
    c1, t1 = cpu_s(pid), time.perf_counter()
    return (c1 - c0) / done * 1e6, done / (t1 - t0)


async def measure(
    stack: str,
    loop: str,
    args: argparse.Namespace,
    profile: Path | None = None,
    gso: str = "on",
) -> dict[str, float]:
    """Start one node variant and measure it."""
    env = {"QPC_QUIC_STACK": stack, "QPC_UDP_GSO": gso}
    prefix: tuple[str, ...] = ("-m", "node")
    if profile is not None:
        env["QPC_BENCH_PROFILE"] = str(profile)
        prefix = ("-c", PROFILED_NODE)
    with tempfile.TemporaryDirectory(prefix="qpc-bench-transport-") as tmp:
        log = (Path(tmp) / "stderr").open("w+")
        proc, port, fp = await bn.start_node(
            Path(tmp), "FULL", 4, extra=("--loop", loop), env=env, prefix=prefix, stderr=log
        )
        try:
            token, _ = await bn.account(port, fp, "sender")
            rcpt = [await bn.account(port, fp, f"rcpt{i}") for i in range(8)]
            c = bn.client(port, fp, token)
            await c.connect()
            for _ in range(200):
                await c.ping(payload=b"warm")
            i = 0

            def enqueue(k: int = 0) -> Awaitable[object]:
                nonlocal i
                i += 1
                return c.enqueue(
                    recipient=rcpt[i % len(rcpt)][1], channel_id=b"bench", payload=b"m" * 200
                )

            out: dict[str, float] = {}
            if profile is None:
                out["ping_us"], out["ping_cps"] = await per_call(
                    proc.pid, lambda k: c.ping(payload=b"x" * 16), args.inflight, args.seconds
                )
            await per_call(proc.pid, enqueue, args.inflight, 1.0)  # warm the store
            if profile is not None:
                os.kill(proc.pid, __import__("signal").SIGUSR1)  # start profiling
                await asyncio.sleep(0.2)
            out["enq_us"], out["enq_cps"] = await per_call(
                proc.pid, enqueue, args.inflight, args.seconds
            )
            await c.close()
            proc.terminate()
            await proc.wait()  # before reading its log
            log.seek(0)
            out["errors"] = sum("level=error" in line for line in log)
            return out
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            log.close()


PROFILED_NODE = """
import cProfile, os, signal, sys
sys.argv = ['node'] + sys.argv[1:]
prof = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
from node.__main__ import main
try:
    main()
finally:
    prof.disable()
    prof.dump_stats(os.environ['QPC_BENCH_PROFILE'])
"""

IDLE = ("poll' of 'select.epoll", "run_once' of 'uvloop")
"""Waiting for datagrams: wall time in the profile, not CPU."""

PARTS = [
    ("UDP send/receive syscalls", ("sendto", "recvfrom")),
    ("QUIC (aioquic packet/crypto/streams)", ("aioquic", "qh3")),
    ("codec (capnp encode/decode)", ("proto/codec", "capnp")),
    ("RPC layer (proto quic_server/rpc)", ("proto/quic_server", "proto/rpc")),
    ("dispatch + handlers (node)", ("node/dispatch", "node/handlers", "node/app", "node/service")),
    ("store (SQLite writer)", ("node/store", "sqlite3")),
    ("notify (fetchWait wake-ups)", ("node/notify", "node/wake")),
    ("event loop (asyncio)", ("asyncio/",)),
]


def report_profile(path: Path, calls: float) -> None:
    """Self time grouped by part, per durable call, and the top functions."""
    st = pstats.Stats(str(path))
    raw: Any = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    groups: dict[str, float] = {}
    idle = sum(v[2] for (_f, _l, fn), v in raw.items() if any(k in fn for k in IDLE))
    total -= idle
    for (file, _line, fn), v in raw.items():
        if any(k in fn for k in IDLE):
            continue
        where = f"{file} {fn}"
        part = next((n for n, keys in PARTS if any(k in where for k in keys)), "other")
        groups[part] = groups.get(part, 0.0) + v[2]
    print(f"\ncProfile of the aioquic + asyncio node, durable phase ({calls:,.0f} calls)")
    print("(main thread only, epoll wait excluded; the SQLite writer thread is not in it;")
    print(" cProfile inflates Python call overhead: read the shares, not the µs)\n")
    for part, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {part:<40} {t / total:6.1%}")
    print("\n  top functions by self time:")
    busy = [kv for kv in raw.items() if not any(k in kv[0][2] for k in IDLE)]
    top = sorted(busy, key=lambda kv: -kv[1][2])[:15]
    for (file, line, fn), v in top:
        short = "/".join(Path(file).parts[-2:])
        print(f"  {v[2] / total:6.1%}  {short}:{line} {fn}")


async def run(args: argparse.Namespace) -> None:
    variants = [v for v in VARIANTS if not args.only or any(o in v[0] for o in args.only)]
    results: dict[str, list[dict[str, float]]] = {v[0]: [] for v in variants}
    for _ in range(args.rounds):
        for name, stack, loop, gso in variants:
            results[name].append(await measure(stack, loop, args, gso=gso))

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    base = variants[0][0]
    print(
        f"\nnode CPU per call ({os.cpu_count()} cores, loopback, SQLite sync=FULL, "
        f"{args.inflight} in flight on 1 connection, median of {args.rounds} rounds)\n"
    )
    head = (
        f"{'variant':<29} {'ping µs':>8} {'ratio':>6} {'ping/s':>8}   "
        f"{'enqueue µs':>10} {'ratio':>6} {'enqueue/s':>9} {'node errors':>11}"
    )
    print(head)
    print("-" * len(head))
    for name, *_ in variants:
        p, e = med(name, "ping_us"), med(name, "enq_us")
        print(
            f"{name:<29} {p:8.0f} {med(base, 'ping_us') / p:5.2f}x {med(name, 'ping_cps'):8,.0f}   "
            f"{e:10.0f} {med(base, 'enq_us') / e:5.2f}x {med(name, 'enq_cps'):9,.0f} "
            f"{sum(r['errors'] for r in results[name]):11.0f}"
        )
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="qpc-bench-prof-") as tmp:
            path = Path(tmp) / "node.prof"
            out = await measure("aioquic", "asyncio", args, profile=path)
            report_profile(path, out["enq_cps"] * args.seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    ap.add_argument("--inflight", type=int, default=64, help="concurrent calls")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all variants")
    ap.add_argument("--profile", action="store_true", help="also profile the durable phase")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only variants whose name contains this (repeatable; the first kept is the base)",
    )
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
