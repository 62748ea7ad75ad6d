"""Benchmark: raw aioquic stream echo vs our RPC (no-op handler), in one run.

Run by hand from the repository root::

    python3 bench/rpc.py [--calls 2000] [--seconds 5] [--inflight 64]

Both servers run in one child process (its own core); the clients run here.
Prints a table: median / p90 round trip of sequential calls and calls/s with
``--inflight`` calls in flight, for two raw baselines and our RPC; then the
cost of decoding one ping request and response (whole decode, and the
structural validation in Rust alone) beside the node's CPU per ping (from
``/proc/<pid>/stat`` of the server process while our RPC runs).
Results are discussed in docs/perf/rpc.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto import codec as c
from proto import tls
from proto.rpc import ALPN, CallContext
from proto.rpc_client import ClientConfig, RpcClient
from proto.rpc_server import RpcServer, ServerConfig

PAYLOAD = c.encode_request(c.Request(auth=b"t" * 32, call=c.PingParams(payload=b"x" * 16)))


class EchoServer(QuicConnectionProtocol):
    """Raw baseline: echo each stream's bytes back with FIN (no capnp, no tasks)."""

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived) and event.end_stream:
            self._quic.send_stream_data(event.stream_id, event.data, end_stream=True)


class EchoClient(QuicConnectionProtocol):
    """Raw baseline client: one stream per call, await the FIN.

    ``coalesce=False`` (naive): every call transmits at once. ``coalesce=True``
    (tuned): the send strategy of ``RpcClient`` - a lone call transmits at
    once, calls made while others are in flight go out together next loop turn.
    """

    coalesce = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters: dict[int, asyncio.Future[bytes]] = {}
        self._bufs: dict[int, bytes] = {}

    async def echo(self, data: bytes) -> bytes:
        sid = self._quic.get_next_available_stream_id()
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters[sid] = fut
        self._quic.send_stream_data(sid, data, end_stream=True)
        if self.coalesce and len(self._waiters) > 1:
            self._transmit_soon()
        else:
            self.transmit()
        return await fut

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            buf = self._bufs.pop(event.stream_id, b"") + event.data
            if event.end_stream:
                self._waiters.pop(event.stream_id).set_result(bytes(buf))
            else:
                self._bufs[event.stream_id] = buf


class TunedEchoClient(EchoClient):
    """Raw baseline with ``RpcClient``'s send strategy."""

    coalesce = True


class NoopHandler:
    """Answers ping at once; nothing else is called."""

    async def ping(self, ctx: CallContext, params: c.PingParams) -> c.PingResult:
        return c.PingResult(payload=params.payload, server_time_ms=0)


async def _serve(ready: Any, tls_dir: str) -> None:
    # NoopHandler answers ping only; the server's "no such handler" notes are noise here.
    logging.getLogger("proto.rpc_server").setLevel(logging.ERROR)
    rpc = RpcServer(NoopHandler(), ServerConfig(host="127.0.0.1", port=0, tls_dir=Path(tls_dir)))  # type: ignore[arg-type]
    await rpc.start()
    assert rpc.identity is not None
    qcfg = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
    qcfg.load_cert_chain(rpc.identity.cert_file, rpc.identity.key_file)
    raw = await serve("127.0.0.1", 0, configuration=qcfg, create_protocol=EchoServer)
    assert raw._transport is not None
    raw_port = raw._transport.get_extra_info("sockname")[1]
    ready.send((raw_port, rpc.port, rpc.fingerprint))
    await asyncio.Event().wait()


def _server_process(ready: Any, tls_dir: str) -> None:
    asyncio.run(_serve(ready, tls_dir))


async def sequential(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def throughput(fn: Callable[[], Awaitable[object]], inflight: int, seconds: float) -> int:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await fn()
            done += 1

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return done


RAW_NAIVE = "raw aioquic echo (transmit per call)"
RAW_TUNED = "raw aioquic echo (coalescing, like ours)"
OURS = "qpc RPC (capnp, no-op handler)"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_call_us(fn: Callable[[], object], n: int = 20_000) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def decode_costs() -> dict[str, float]:
    """µs per call: whole decode and the Rust validation alone, request and response."""
    req = c.encode_request(c.Request(auth=b"t" * 32, call=c.PingParams(payload=b"x" * 16)))
    resp = c.encode_response(c.Response(result=c.PingResult(payload=b"x" * 16, server_time_ms=0)))
    limits = c.DEFAULT_LIMITS
    return {
        "decode ping request": _per_call_us(lambda: c.decode_request(req)),
        "  of which validation": _per_call_us(lambda: c._validate(req, limits)),
        "decode ping response": _per_call_us(lambda: c.decode_response(resp)),
        "  of which validation ": _per_call_us(lambda: c._validate(resp, limits)),
    }


async def run(
    args: argparse.Namespace, raw_port: int, rpc_port: int, fp: str, server_pid: int
) -> None:
    qcfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    ccfg = ClientConfig(host="127.0.0.1", port=rpc_port, trust=tls.TrustConfig(fingerprint=fp))
    async with (
        connect("127.0.0.1", raw_port, configuration=qcfg, create_protocol=EchoClient) as naive,
        connect(
            "127.0.0.1", raw_port, configuration=qcfg, create_protocol=TunedEchoClient
        ) as tuned,
        RpcClient(ccfg, token=b"t" * 32) as client,
    ):
        assert isinstance(naive, EchoClient) and isinstance(tuned, EchoClient)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            RAW_NAIVE: lambda: naive.echo(PAYLOAD),
            RAW_TUNED: lambda: tuned.echo(PAYLOAD),
            OURS: lambda: client.ping(payload=b"x" * 16),
        }
        rtts: dict[str, list[float]] = {name: [] for name in calls}
        done: dict[str, int] = dict.fromkeys(calls, 0)
        for fn in calls.values():  # warm up
            await sequential(fn, 200)
        # Interleave short rounds so background load hits every variant alike.
        rounds = 20
        for _ in range(rounds):
            for name, fn in calls.items():
                rtts[name] += await sequential(fn, args.calls // rounds)
        windows = max(1, round(args.seconds / 0.5))
        node_cpu = 0.0
        for _ in range(windows):
            for name, fn in calls.items():
                before = _cpu_seconds(server_pid)
                done[name] += await throughput(fn, args.inflight, args.seconds / windows)
                if name == OURS:
                    node_cpu += _cpu_seconds(server_pid) - before

    print(
        f"{args.calls} sequential calls (interleaved in {rounds} rounds); "
        f"{args.inflight} in flight for {args.seconds:g}s each (interleaved in {windows} windows)"
    )
    print()
    print(
        "| transport | median RTT (µs) | p90 RTT (µs) | calls/s "
        "| RTT vs tuned raw | calls/s vs tuned raw | calls/s vs naive raw |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base_med = statistics.median(rtts[RAW_TUNED])
    for name in calls:
        med = statistics.median(rtts[name])
        p90 = statistics.quantiles(rtts[name], n=10)[8]
        print(
            f"| {name} | {med * 1e6:.0f} | {p90 * 1e6:.0f} | {done[name] / args.seconds:,.0f} | "
            f"{(med / base_med - 1) * 100:+.1f}% | {done[name] / done[RAW_TUNED] * 100:.0f}% | "
            f"{done[name] / done[RAW_NAIVE] * 100:.0f}% |"
        )
    ping_cpu_us = node_cpu / done[OURS] * 1e6
    print()
    print(f"node CPU per ping ({args.inflight} in flight): {ping_cpu_us:.1f} µs")
    print()
    print("| codec step | µs per call | share of node CPU per ping |")
    print("|---|---:|---:|")
    for step, us in decode_costs().items():
        print(f"| {step} | {us:.2f} | {us / ping_cpu_us * 100:.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, default=64)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    with tempfile.TemporaryDirectory() as tmp:
        proc = ctx.Process(target=_server_process, args=(send, tmp), daemon=True)
        proc.start()
        try:
            raw_port, rpc_port, fp = recv.recv()
            assert proc.pid is not None
            asyncio.run(run(args, raw_port, rpc_port, fp, proc.pid))
        finally:
            proc.terminate()
            proc.join()


if __name__ == "__main__":
    main()
