"""Two ``qpc-node`` processes on one PostgreSQL database: SIGKILL one under
load; clients move to the other and nothing acknowledged is lost or doubled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from proto import tls
from proto.codec import Envelope
from proto.errors import QpcError
from proto.rpc_client import ClientConfig, RpcClient
from tests.node.backends import fresh_postgres
from tests.node.helpers import make_account
from tests.node.test_durability import NodeProcess, node_process

pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.postgres]


def failover_client(first: NodeProcess, second: NodeProcess, token: bytes) -> RpcClient:
    """A client of ``first`` that moves to ``second`` when ``first`` dies (quickly:
    a silent node is declared dead after 1.5 s)."""
    return RpcClient(
        ClientConfig(
            host="127.0.0.1",
            port=first.port,
            alternates=(("127.0.0.1", second.port),),
            trust=tls.TrustConfig(fingerprint=first.fingerprint),
            keepalive_interval=0.3,
            dead_timeout=1.5,
            connect_timeout=2.0,
            reconnect_wait=30.0,
            call_timeout=10.0,
        ),
        token=token,
    )


async def test_kill_one_of_two_nodes_under_load(tmp_path: Path) -> None:
    identity = tls.load_or_create_server_identity(tmp_path / "tls")
    same_key = ("--cert", str(identity.cert_file), "--key", str(identity.key_file))
    async with (
        fresh_postgres() as dsn,
        node_process(tmp_path / "a", "--store", dsn, *same_key) as a,
        node_process(tmp_path / "b", "--store", dsn, *same_key) as b,
    ):
        assert a.fingerprint == b.fingerprint  # one deployment, one key
        setup = [await make_account(a, name) for name in ("inbox", "sender0", "sender1")]
        for acct in setup:
            await acct.client.close()
        inbox, *senders = setup
        receiver = failover_client(a, b, inbox.token)
        # sender0 and the receiver use node a (killed); sender1 node b (wakes a's
        # subscriber through NOTIFY until a dies)
        clients = [failover_client(a, b, senders[0].token), failover_client(b, a, senders[1].token)]
        acked: dict[bytes, int] = {}
        received: list[Envelope] = []
        cursor = 0
        stop = asyncio.Event()
        progress = asyncio.Event()

        async def send(k: int, client: RpcClient) -> None:
            i = 0
            while not stop.is_set():
                payload = f"s{k}:{i}".encode()
                i += 1
                try:  # an unanswered send is not retried: its outcome is unknown
                    r = await client.enqueue(
                        recipient=inbox.device_id, channel_id=b"c", payload=payload
                    )
                except QpcError:
                    continue
                acked[payload] = r.seq
                progress.set()

        async def receive() -> None:  # until cancelled
            nonlocal cursor
            while True:
                with contextlib.suppress(QpcError):
                    async with receiver.fetch_wait(after_seq=cursor) as sub:
                        async for batch in sub:
                            for e in batch.envelopes:
                                assert e.seq > cursor  # never twice, never backwards
                                received.append(e)
                                cursor = e.seq
                            if batch.envelopes:
                                await receiver.ack(upto_seq=cursor)
                            progress.set()

        async def until(predicate: object) -> None:
            async with asyncio.timeout(60):
                while not predicate():  # type: ignore[operator]
                    progress.clear()
                    await progress.wait()

        tasks = [asyncio.create_task(send(k, c)) for k, c in enumerate(clients)] + [
            asyncio.create_task(receive())
        ]
        try:
            await until(lambda: len(acked) >= 300 and len(received) >= 100)
            a.proc.send_signal(signal.SIGKILL)  # mid-stream: calls are in flight
            await a.proc.wait()
            before = len(acked)
            await until(lambda: len(acked) >= before + 300)
            stop.set()  # the senders stop; the receiver goes on
            # every acknowledged message reaches the receiver
            await until(lambda: {e.data for e in received} >= set(acked))
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in (receiver, *clients):
                await c.close()
        payloads = [e.data for e in received]
        assert len(payloads) == len(set(payloads)), "a message was delivered twice"
        missing = [p for p in acked if p not in set(payloads)]
        assert not missing, f"{len(missing)} acknowledged messages lost"
        by_payload = {e.data: e.seq for e in received}
        assert all(by_payload[p] == seq for p, seq in acked.items())
        assert [e.seq for e in received] == sorted({e.seq for e in received})
        for c in (receiver, clients[0]):  # both moved to the surviving node
            assert c.address == ("127.0.0.1", b.port) and c.connects >= 2
        assert b.proc.returncode is None


async def test_workers_share_one_port_and_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    async with fresh_postgres() as dsn:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "node",
            "--workers",
            "2",
            "--store",
            dsn,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
            "--log-level",
            "WARNING",
            "--login-burst",
            "1000",
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                listen = (await proc.stdout.readline()).decode().strip()
                finger = (await proc.stdout.readline()).decode().strip()
                workers = (await proc.stdout.readline()).decode().split()
            port = int(listen.rsplit(":", 1)[1])
            pids = [int(p) for p in workers[3:]]
            assert workers[:3] == ["workers:", "2", "pids"] and len(pids) == 2
            node = NodeProcess(proc, port, finger.split(": ", 1)[1])
            # several clients: the kernel spreads them over both workers by address
            accounts = [await make_account(node, f"user{i}") for i in range(6)]
            for acct in accounts:
                await acct.client.enqueue(
                    recipient=accounts[0].device_id, channel_id=b"c", payload=acct.username.encode()
                )
            got = await accounts[0].client.fetch(after_seq=0, limit=10)
            assert sorted(e.data for e in got.envelopes) == sorted(
                a.username.encode() for a in accounts
            )
            os.kill(pids[0], signal.SIGKILL)
            async with asyncio.timeout(30):  # the supervisor starts a new worker 0
                while True:
                    line = (await proc.stdout.readline()).decode()
                    assert line, "supervisor exited"
                    if line.startswith("worker 0: restarted pid"):
                        break
            for acct in accounts:  # every client works again (same port, same key)
                async with asyncio.timeout(30):
                    while True:
                        try:
                            await acct.client.ping(payload=b"p")
                            break
                        except QpcError:
                            await asyncio.sleep(0.1)
                await acct.client.close()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            for pid in pids[1:]:
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
        finally:
            if proc.returncode is None:
                proc.kill()  # its workers notice and stop by themselves
                await proc.wait()


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    async with fresh_postgres() as dsn:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "node",
            "--workers",
            "2",
            "--store",
            dsn,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
            "--log-level",
            "WARNING",
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                for _ in range(2):
                    await proc.stdout.readline()
                pids = [int(p) for p in (await proc.stdout.readline()).decode().split()[3:]]
            assert len(pids) == 2
            # a pidfd per worker, taken while the supervisor still runs (so no
            # recycled pid is watched): readable once that worker has exited
            fds = [os.pidfd_open(pid) for pid in pids]
        finally:
            proc.kill()
            await proc.wait()
        try:
            async with asyncio.timeout(20):
                for fd in fds:
                    await _readable(fd)
        finally:
            for fd in fds:
                os.close(fd)


async def _readable(fd: int) -> None:
    """Wait until ``fd`` is readable (a pidfd: its process has exited)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        await ready.wait()
    finally:
        loop.remove_reader(fd)
