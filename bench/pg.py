"""Benchmark the PostgreSQL store against SQLite, and wake-ups across node processes.

Run by hand from the repository root, inside a throwaway cluster (fsync on)::

    scripts/with-postgres python3 bench/pg.py [--seconds 5] [--inflight 64] [--wakeups 500]

(or with ``--dsn postgresql://USER@HOST/DB`` for a server of your own; the
bench works in a schema of its own and drops it afterwards). Every node is a
real ``qpc-node`` subprocess on loopback; the load runs in this process.
Prints a table; figures and discussion live in docs/PERFORMANCE.md.

Phases:
1. durable ``enqueue`` calls/s with ``--inflight`` calls in flight on one
   connection, SQLite store (``synchronous=FULL``) then PostgreSQL store (one
   process, fsync on), each a fresh node; node CPU per call from
   ``/proc/<pid>/stat`` (the PostgreSQL server's own CPU is not included).
2. the same against ``--workers 2`` on PostgreSQL (one port, clients spread
   over the workers by the kernel; 4 connections).
3. fetchWait wake-up across processes: two PostgreSQL nodes on one database,
   the subscriber on node B, the sender on node A (LISTEN/NOTIFY carries the
   wake-up); time from starting ``enqueue`` to the push arriving. The same
   with both on node A as the in-process baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proto import tls  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_node", ROOT / "bench" / "node.py")
assert _spec is not None and _spec.loader is not None
bench_node = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_node)
account, client, pct, throughput = (
    bench_node.account,
    bench_node.client,
    bench_node.pct,
    bench_node.throughput,
)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def server_pids(dsn: str) -> list[int]:
    """The PostgreSQL server's processes when it is a scripts/with-postgres cluster
    (postmaster.pid in ``<socket dir>/data``), else none."""
    host = dsn.partition("host=")[2].split("&")[0]
    try:
        master = int((Path(host) / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def server_cpu_s(dsn: str) -> float:
    """CPU seconds of the PostgreSQL server's processes so far (0 if unknown)."""
    total = 0.0
    for pid in server_pids(dsn):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_s(pid)
    return total


@contextlib.asynccontextmanager
async def node(data_dir: Path, *extra: str) -> AsyncIterator[tuple[Any, int, str, list[int]]]:
    """A ``qpc-node`` subprocess; yields (process, port, fingerprint, worker pids)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--write-rate",
        "1000000",
        "--write-burst",
        "1000000",
        "--login-burst",
        "100000",
        "--login-rate",
        "100000",
        "--max-queue-depth",
        "100000000",
        "--max-streams-per-connection",
        "256",
        "--log-level",
        "WARNING",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    listen = (await proc.stdout.readline()).decode().strip()
    finger = (await proc.stdout.readline()).decode().strip()
    pids = [proc.pid]
    if "--workers" in extra:
        pids = [int(p) for p in (await proc.stdout.readline()).decode().split()[3:]]
    try:
        yield proc, int(listen.rsplit(":", 1)[1]), finger.split(": ", 1)[1], pids
    finally:
        proc.terminate()
        await proc.wait()


async def enqueue_rate(
    port: int,
    fp: str,
    pids: list[int],
    inflight: int,
    seconds: float,
    connections: int,
    dsn: str = "",
) -> tuple[float, float, float]:
    """(durable enqueue calls/s, node CPU µs per call, database server CPU µs
    per call) over ``connections`` connections."""
    sender, _ = await account(port, fp, "sender")
    receivers = [await account(port, fp, f"rcpt{i}") for i in range(8)]
    pool = [client(port, fp, sender) for _ in range(connections)]
    for c in pool:
        await c.connect()
    i = 0

    def enqueue(k: int = 0) -> Awaitable[object]:
        nonlocal i
        i += 1
        return pool[k % len(pool)].enqueue(
            recipient=receivers[i % len(receivers)][1], channel_id=b"bench", payload=b"m" * 200
        )

    await throughput(enqueue, inflight, 0.5)  # warm up
    cpu0, db0 = sum(cpu_s(p) for p in pids), server_cpu_s(dsn) if dsn else 0.0
    rate = await throughput(enqueue, inflight, seconds)
    cpu = sum(cpu_s(p) for p in pids) - cpu0
    db = (server_cpu_s(dsn) - db0) if dsn else 0.0
    for c in pool:
        await c.close()
    calls = rate * seconds
    return rate, cpu / calls * 1e6, db / calls * 1e6


async def wakeups(
    send_at: tuple[int, str],
    sub_at: tuple[int, str],
    sender: bytes,
    rcpt: tuple[bytes, bytes],
    n: int,
) -> list[float]:
    """Seconds from starting an enqueue (via ``send_at``) to the push on ``sub_at``."""
    token, device = rcpt
    sub_client = client(*sub_at, token)
    send_client = client(*send_at, sender)
    out: list[float] = []
    try:
        await sub_client.connect()
        await send_client.connect()
        last = (await sub_client.fetch(after_seq=0, limit=0)).envelopes
        cursor = last[-1].seq if last else 0
        async with sub_client.fetch_wait(after_seq=cursor) as sub:
            await anext(sub)
            for _ in range(n):
                t0 = time.perf_counter()
                push = asyncio.ensure_future(anext(sub))
                await send_client.enqueue(recipient=device, channel_id=b"bench", payload=b"w")
                got = await push
                assert got.envelopes
                out.append(time.perf_counter() - t0)
        await sub_client.ack(upto_seq=2**63)
    finally:
        await sub_client.close()
        await send_client.close()
    return out


@contextlib.asynccontextmanager
async def schema(dsn: str) -> AsyncIterator[str]:
    """A DSN whose tables live in a fresh schema (dropped afterwards)."""
    name = "qpc_bench_" + os.urandom(4).hex()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
        yield f"{dsn}{'&' if '?' in dsn else '?'}search_path={name}"
    finally:
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
        await conn.close()


async def wakeup_rows(base: Path, args: argparse.Namespace) -> list[tuple[str, str]]:
    """Phase 3: wake-ups in one process and across two (one database, one key)."""
    identity = tls.load_or_create_server_identity(base / "tls")
    key = ("--cert", str(identity.cert_file), "--key", str(identity.key_file))
    async with (
        schema(args.dsn) as dsn,
        node(base / "a", "--store", dsn, *key) as (_, port_a, fp, _pa),
        node(base / "b", "--store", dsn, *key) as (_, port_b, _fp, _pb),
    ):
        sender, _ = await account(port_a, fp, "sender")
        rcpt = await account(port_a, fp, "probe")
        same = await wakeups((port_a, fp), (port_a, fp), sender, rcpt, args.wakeups)
        cross = await wakeups((port_a, fp), (port_b, fp), sender, rcpt, args.wakeups)
    return [
        (
            f"fetchWait wake-up {label}, median / p99",
            f"{statistics.median(lat) * 1e3:.2f} / {pct(lat, 99) * 1e3:.2f} ms",
        )
        for label, lat in (("same process", same), ("across processes (NOTIFY)", cross))
    ]


async def run(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="qpc-bench-pg-") as tmp:
        base = Path(tmp)
        spread = f"{args.inflight} in flight"
        async with node(base / "sqlite") as (_, port, fp, pids):
            lite, lite_cpu, _ = await enqueue_rate(port, fp, pids, args.inflight, args.seconds, 1)
        rows.append((f"SQLite (FULL) durable enqueue calls/s ({spread}, 1 conn)", f"{lite:,.0f}"))
        rows.append(("  node CPU per enqueue", f"{lite_cpu:.0f} µs"))
        async with schema(args.dsn) as dsn:
            async with node(base / "pg", "--store", dsn, "--pg-pool-size", str(args.pool)) as (
                _,
                port,
                fp,
                pids,
            ):
                pg, pg_cpu, pg_db = await enqueue_rate(
                    port, fp, pids, args.inflight, args.seconds, 1, args.dsn
                )
            rows.append(
                (
                    f"PostgreSQL durable enqueue calls/s ({spread}, 1 conn)",
                    f"{pg:,.0f} ({pg / lite:.0%} of SQLite)",
                )
            )
            rows.append(("  node CPU per enqueue", f"{pg_cpu:.0f} µs"))
            if pg_db:
                rows.append(("  database server CPU per enqueue", f"{pg_db:.0f} µs"))
        async with schema(args.dsn) as dsn:
            async with node(base / "pgw", "--store", dsn, "--workers", "2") as (_, port, fp, pids):
                pgw, pgw_cpu, pgw_db = await enqueue_rate(
                    port, fp, pids, args.inflight, args.seconds, 4, args.dsn
                )
            rows.append(
                (
                    f"PostgreSQL --workers 2, calls/s ({spread}, 4 conns)",
                    f"{pgw:,.0f} ({pgw / lite:.0%} of SQLite)",
                )
            )
            rows.append(("  node CPU per enqueue (both workers)", f"{pgw_cpu:.0f} µs"))
            if pgw_db:
                rows.append(("  database server CPU per enqueue", f"{pgw_db:.0f} µs"))
        if args.wakeups:
            rows += await wakeup_rows(base, args)
    width = max(len(r[0]) for r in rows)
    print(f"bench/pg.py  seconds={args.seconds} inflight={args.inflight} wakeups={args.wakeups}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("QPC_TEST_POSTGRES_DSN", ""))
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--wakeups", type=int, default=500)
    p.add_argument("--pool", type=int, default=8, help="--pg-pool-size of the one-process node")
    args = p.parse_args()
    if not args.dsn:
        sys.exit("no PostgreSQL: run under scripts/with-postgres or pass --dsn")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
