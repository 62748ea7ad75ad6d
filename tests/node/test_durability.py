"""Durability: SIGKILL the real ``qpc-node`` process while clients enqueue,
on both store backends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proto.codec import Envelope
from proto.errors import QpcError
from tests.node.backends import Backend
from tests.node.helpers import Account, client_at, make_account

pytestmark = [pytest.mark.slow, pytest.mark.network]


@dataclasses.dataclass
class NodeProcess:
    """A ``python -m node`` subprocess and what it printed on start."""

    proc: asyncio.subprocess.Process
    port: int
    fingerprint: str


async def start_node_process(data_dir: Path, *extra: str) -> NodeProcess:
    """Start ``qpc-node`` (as ``python -m node``, with ``extra`` arguments) and
    parse its two start-up lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--login-burst",
        "1000",
        "--write-burst",
        "100000",
        "--write-rate",
        "100000",
        "--log-level",
        "WARNING",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        listen = (await proc.stdout.readline()).decode().strip()
        finger = (await proc.stdout.readline()).decode().strip()
    assert listen.startswith("listening: "), listen
    assert finger.startswith("fingerprint: "), finger
    port = int(listen.rsplit(":", 1)[1])
    return NodeProcess(proc, port, finger.split(": ", 1)[1])


def store_args(backend: Backend) -> tuple[str, ...]:
    """``qpc-node`` arguments selecting ``backend``'s database (SQLite: the data dir)."""
    return ("--store", backend.target) if backend.name == "postgres" else ()


@contextlib.asynccontextmanager
async def node_process(data_dir: Path, *extra: str) -> AsyncIterator[NodeProcess]:
    """A node subprocess, SIGKILLed on exit if still running."""
    n = await start_node_process(data_dir, *extra)
    try:
        yield n
    finally:
        if n.proc.returncode is None:
            n.proc.kill()
            await n.proc.wait()


async def test_sigkill_while_enqueueing_loses_nothing_acknowledged(
    tmp_path: Path, backend: Backend
) -> None:
    acknowledged: dict[bytes, int] = {}
    async with node_process(tmp_path, *store_args(backend)) as n:
        inbox = await make_account(n, "inbox")
        senders = await asyncio.gather(*(make_account(n, f"sender{i}") for i in range(10)))
        enough = asyncio.Event()

        async def send(a: Account) -> None:
            i = 0
            while True:
                payload = f"{a.username}:{i}".encode()
                r = await a.client.enqueue(
                    recipient=inbox.device_id, channel_id=b"c", payload=payload
                )
                acknowledged[payload] = r.seq
                i += 1
                if len(acknowledged) >= 300:
                    enough.set()

        tasks = [asyncio.create_task(send(a)) for a in senders]
        async with asyncio.timeout(60):
            await enough.wait()
        n.proc.send_signal(signal.SIGKILL)  # mid-stream: enqueues are in flight
        await n.proc.wait()
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError | QpcError) for r in results), results
        for a in [inbox, *senders]:
            await a.client.close()
    token = inbox.token
    snapshot = dict(acknowledged)
    assert len(snapshot) >= 300

    async with node_process(tmp_path, *store_args(backend)) as n2:
        client = client_at(n2.port, n2.fingerprint, token=token)  # the session survived
        try:
            fetched: list[Envelope] = []
            after = 0
            while True:
                page = await client.fetch(after_seq=after, limit=500)
                if not page.envelopes:
                    break
                fetched.extend(page.envelopes)
                after = page.envelopes[-1].seq
        finally:
            await client.close()
        n2.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(n2.proc.wait(), 15) == 0  # clean shutdown
    seqs = [e.seq for e in fetched]
    assert seqs == sorted(set(seqs))  # strictly increasing: nothing twice
    payloads = [e.data for e in fetched]
    assert len(payloads) == len(set(payloads))
    by_payload = {e.data: e.seq for e in fetched}
    missing = [p for p in snapshot if p not in by_payload]
    assert not missing, f"{len(missing)} acknowledged enqueues lost"
    assert all(by_payload[p] == seq for p, seq in snapshot.items())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_signal_shuts_down_cleanly(
    tmp_path: Path, sig: signal.Signals, backend: Backend
) -> None:
    async with node_process(tmp_path, *store_args(backend)) as n:
        alice = await make_account(n, "alice")
        await alice.client.enqueue(recipient=alice.device_id, channel_id=b"c", payload=b"kept")
        async with alice.client.fetch_wait(after_seq=1) as sub:  # an open subscription
            await anext(sub)
            n.proc.send_signal(sig)
            assert await asyncio.wait_for(n.proc.wait(), 15) == 0
        await alice.client.close()
    async with node_process(tmp_path, *store_args(backend)) as n2:  # same key, data kept
        client = client_at(n2.port, n2.fingerprint, token=alice.token)
        try:
            got = await client.fetch(after_seq=0, limit=10)
        finally:
            await client.close()
        assert [e.data for e in got.envelopes] == [b"kept"]
        assert n2.fingerprint == n.fingerprint


async def test_help_lists_options() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node",
        "--help",
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    for option in (
        "--listen",
        "--data-dir",
        "--config",
        "--cert",
        "--key",
        "--retention",
        "--max-payload-bytes",
        "--max-queue-depth",
        "--metrics-port",
        "--log-level",
    ):
        assert option in out.decode()
