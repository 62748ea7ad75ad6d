"""Benchmark the node: no-op vs durable calls, fetchWait wake-ups, 1,000 subscribers.

Run by hand from the repository root (takes about a minute)::

    python3 bench/node.py [--seconds 5] [--inflight 64] [--clients 1000] [--sync FULL]

The node runs as a real ``qpc-node`` subprocess (``python -m node``) on loopback
with a fresh data dir; the load generators run in this process and, for the
1,000-client phase, in ``--workers`` child processes. Prints a table; the
numbers and their discussion live in docs/perf/node.md.

Phases:
1. no-op RPC (``ping``): sequential round trip (median, p99) and calls/s with
   ``--inflight`` calls in flight on one connection.
2. durable ``enqueue`` calls/s with the same concurrency (each returns only after
   its group-commit transaction is durable).
3. fetchWait wake-up: a subscriber on one connection, a sender on another; time
   from starting ``enqueue`` to the push arriving, and from the ``enqueue``
   answer to the push arriving.
4. ``--clients`` connections, each holding a fetchWait subscription (sharing a
   few device identities); node RSS, then the wake-up latency of phase 3 again.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proto import tls  # noqa: E402
from proto.crypto import opaque  # noqa: E402
from proto.crypto.identity import IdentityKey  # noqa: E402
from proto.rpc_client import ClientConfig, RpcClient  # noqa: E402

PASSWORD = "bench password"


# --------------------------------------------------------------------- helpers


def client(port: int, fp: str, token: bytes = b"", **overrides: Any) -> RpcClient:
    """A pinned client for the bench node."""
    cfg = ClientConfig(
        host="127.0.0.1",
        port=port,
        trust=tls.TrustConfig(fingerprint=fp),
        reconnect=False,
        **overrides,
    )
    return RpcClient(cfg, token=token)


async def start_node(
    data_dir: Path,
    sync: str,
    subs_per_device: int,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = ("-m", "node"),
    stderr: Any = None,
) -> tuple[Any, int, str]:
    """Start ``python -m node`` (``prefix`` replaces ``-m node``, e.g. to profile it)
    with ``extra`` flags and ``env``; return (process, port, fingerprint)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *prefix,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--sqlite-synchronous",
        sync,
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
        "--max-subscriptions-per-device",
        str(subs_per_device),
        "--max-streams-per-connection",
        "256",
        "--log-level",
        "WARNING",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )
    assert proc.stdout is not None
    listen = (await proc.stdout.readline()).decode().strip()
    finger = (await proc.stdout.readline()).decode().strip()
    return proc, int(listen.rsplit(":", 1)[1]), finger.split(": ", 1)[1]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def account(port: int, fp: str, name: str) -> tuple[bytes, bytes]:
    """Register + log in + register a device; return (token, device_id)."""
    c = client(port, fp)
    try:
        start = opaque.client_registration_start(PASSWORD)
        resp = await c.register_start(username=name, request=start.request)
        fin = opaque.client_registration_finish(PASSWORD, start.state, resp.response)
        await c.register_finish(username=name, upload=fin.upload)
        ident = IdentityKey.generate()
        ls = opaque.client_login_start(PASSWORD)
        lr = await c.login_start(username=name, request=ls.request)
        lf = opaque.client_login_finish(PASSWORD, ls.state, lr.response)
        tok = await c.login_finish(
            login_id=lr.login_id, finalization=lf.finalization, device_id=ident.public_key
        )
        c.token = tok.token
        hybrid = os.urandom(1216)
        await c.register_device(hybrid_key=hybrid, signature=ident.sign_device_registration(hybrid))
        return tok.token, ident.public_key
    finally:
        await c.close()


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


async def sequential(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    """Latencies (s) of ``n`` calls made one after another."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def throughput(
    fn: Callable[[int], Awaitable[object]], inflight: int, seconds: float
) -> float:
    """Calls/s with ``inflight`` concurrent callers (``fn(worker_index)``) for ``seconds``."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await fn(k)
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(inflight)))
    return done / (time.perf_counter() - t)


async def wakeups(
    port: int, fp: str, sender: bytes, rcpt: tuple[bytes, bytes], n: int
) -> tuple[list[float], list[float]]:
    """fetchWait wake-up latency: (from enqueue start, from enqueue answer), seconds."""
    token, device = rcpt
    sub_client = client(port, fp, token)
    send_client = client(port, fp, sender)
    from_start: list[float] = []
    from_answer: list[float] = []
    try:
        await sub_client.connect()
        await send_client.connect()
        last = (await sub_client.fetch(after_seq=0, limit=0)).envelopes
        cursor = last[-1].seq if last else 0
        async with sub_client.fetch_wait(after_seq=cursor) as sub:
            await anext(sub)  # the immediate answer: subscription is live
            for _ in range(n):
                t0 = time.perf_counter()
                push = asyncio.ensure_future(anext(sub))
                await send_client.enqueue(recipient=device, channel_id=b"bench", payload=b"w")
                t1 = time.perf_counter()
                await push
                t2 = time.perf_counter()
                from_start.append(t2 - t0)
                from_answer.append(max(0.0, t2 - t1))
        await sub_client.ack(upto_seq=2**63)
    finally:
        await sub_client.close()
        await send_client.close()
    return from_start, from_answer


# ------------------------------------------------------- subscriber processes


async def _hold(port: int, fp: str, tokens: list[bytes], n: int, conn: Any) -> None:
    clients = []
    subs = []
    try:
        for i in range(n):
            c = client(
                port, fp, tokens[i % len(tokens)], keepalive_interval=10.0, dead_timeout=60.0
            )
            await c.connect()
            sub = c.fetch_wait(after_seq=2**62)
            await sub.__aenter__()
            await anext(sub)  # subscribed
            clients.append(c)
            subs.append(sub)
        conn.send(("ready", n))
        await asyncio.to_thread(conn.recv)  # the parent's "stop"
    except Exception as exc:  # report, don't hang the parent
        conn.send(("error", repr(exc)))
    finally:
        for sub in subs:
            await sub.aclose()
        for c in clients:
            await c.close()
        conn.send(("closed", 0))


def _holder_process(port: int, fp: str, tokens: list[bytes], n: int, conn: Any) -> None:
    asyncio.run(_hold(port, fp, tokens, n, conn))


# ------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="qpc-bench-node-") as tmp:
        proc, port, fp = await start_node(Path(tmp), args.sync, args.clients)
        try:
            sender_token, _ = await account(port, fp, "sender")
            receivers = [await account(port, fp, f"rcpt{i}") for i in range(8)]
            probe = await account(port, fp, "probe")

            c = client(port, fp, sender_token)
            await c.connect()
            await c.ping(payload=b"warm")
            lat = await sequential(lambda: c.ping(payload=b"x" * 16), 2000)
            rtt_med, rtt_p99 = statistics.median(lat), pct(lat, 99)
            rows.append(
                ("no-op RTT (ping), median / p99", f"{rtt_med * 1e3:.3f} / {rtt_p99 * 1e3:.3f} ms")
            )
            pool = [c] + [client(port, fp, sender_token) for _ in range(args.connections - 1)]
            for extra in pool[1:]:
                await extra.connect()
            spread = f"{args.inflight} in flight on {args.connections} connection(s)"
            noop = await throughput(
                lambda k: pool[k % len(pool)].ping(payload=b"x" * 16), args.inflight, args.seconds
            )
            rows.append((f"no-op calls/s ({spread})", f"{noop:,.0f}"))

            i = 0

            def enqueue(k: int = 0) -> Awaitable[object]:
                nonlocal i
                i += 1
                return pool[k % len(pool)].enqueue(
                    recipient=receivers[i % len(receivers)][1],
                    channel_id=b"bench",
                    payload=b"m" * 200,
                )

            lat_e = await sequential(enqueue, 200)
            rows.append(
                (
                    "durable enqueue RTT, median / p99",
                    f"{statistics.median(lat_e) * 1e3:.3f} / {pct(lat_e, 99) * 1e3:.3f} ms",
                )
            )
            durable = await throughput(enqueue, args.inflight, args.seconds)
            rows.append(
                (
                    f"durable enqueue calls/s ({spread}, sync={args.sync})",
                    f"{durable:,.0f} ({durable / noop:.0%} of no-op)",
                )
            )
            for each in pool:
                await each.close()

            ws, wa = await wakeups(port, fp, sender_token, probe, args.wakeups)
            rows.append(
                (
                    "fetchWait wake-up from enqueue start, median / p99",
                    f"{statistics.median(ws) * 1e3:.3f} / {pct(ws, 99) * 1e3:.3f} ms "
                    f"(p99 = {pct(ws, 99) / rtt_med:.1f}x no-op RTT)",
                )
            )
            rows.append(
                (
                    "fetchWait wake-up after enqueue answer, median / p99",
                    f"{statistics.median(wa) * 1e3:.3f} / {pct(wa, 99) * 1e3:.3f} ms",
                )
            )
            rows.append(("node RSS idle (after phases 1-3)", f"{rss_mb(proc.pid):.0f} MiB"))

            # ---- phase 4: many subscribers
            tokens = [t for t, _ in receivers]
            ctx = mp.get_context("spawn")
            pipes = []
            procs = []
            per = [
                args.clients // args.workers + (1 if k < args.clients % args.workers else 0)
                for k in range(args.workers)
            ]
            t_conn = time.perf_counter()
            for n in per:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_holder_process, args=(port, fp, tokens, n, child))
                p.start()
                pipes.append(parent)
                procs.append(p)
            held = 0
            for parent in pipes:
                kind, value = await asyncio.to_thread(parent.recv)
                if kind != "ready":
                    raise RuntimeError(f"subscriber process failed: {value}")
                held += value
            t_conn = time.perf_counter() - t_conn
            await asyncio.sleep(1.0)
            rows.append(
                (f"{held} clients subscribed (connect + subscribe time)", f"{t_conn:.1f} s")
            )
            rows.append((f"node RSS with {held} subscriptions", f"{rss_mb(proc.pid):.0f} MiB"))
            ws2, wa2 = await wakeups(port, fp, sender_token, probe, args.wakeups)
            rows.append(
                (
                    f"fetchWait wake-up at {held} subscribers, median / p99",
                    f"{statistics.median(ws2) * 1e3:.3f} / {pct(ws2, 99) * 1e3:.3f} ms "
                    f"(p99 = {pct(ws2, 99) / rtt_med:.1f}x no-op RTT)",
                )
            )
            rows.append(
                (
                    f"wake-up after enqueue answer at {held} subscribers, median / p99",
                    f"{statistics.median(wa2) * 1e3:.3f} / {pct(wa2, 99) * 1e3:.3f} ms",
                )
            )
            c2 = client(port, fp)
            await c2.connect()
            lat2 = await sequential(lambda: c2.ping(payload=b"x" * 16), 500)
            await c2.close()
            rows.append(
                (
                    f"no-op RTT at {held} subscribers, median / p99",
                    f"{statistics.median(lat2) * 1e3:.3f} / {pct(lat2, 99) * 1e3:.3f} ms",
                )
            )
            for parent in pipes:
                parent.send("stop")
            for p in procs:
                p.join(timeout=30)
        finally:
            proc.terminate()
            await proc.wait()

    width = max(len(k) for k, _ in rows)
    print(f"\nqpc-node benchmark ({os.cpu_count()} cores, loopback, sync={args.sync})\n")
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    ap.add_argument("--inflight", type=int, default=64, help="concurrent calls in throughput runs")
    ap.add_argument(
        "--connections", type=int, default=1, help="connections carrying the in-flight calls"
    )
    ap.add_argument("--wakeups", type=int, default=300, help="wake-up samples per phase")
    ap.add_argument("--clients", type=int, default=1000, help="subscribed clients in phase 4")
    ap.add_argument("--workers", type=int, default=2, help="processes holding the clients")
    ap.add_argument("--sync", choices=("FULL", "NORMAL"), default="FULL", help="SQLite synchronous")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
