"""UDP GSO batching of a server's datagrams (proto/udp_batch.py): the peer
receives exactly the datagrams ``sendto`` one by one would have sent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from proto.rpc_client import RpcClient
from proto.rpc_server import RpcServer
from proto.udp_batch import DatagramBatcher, open_batcher


class Sink(asyncio.DatagramProtocol):
    """Collects received datagrams, with an event per arrival."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.event = asyncio.Event()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.append(data)
        self.event.set()

    async def until(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.got) < n:
                self.event.clear()
                await self.event.wait()


@pytest.fixture
async def endpoints() -> AsyncIterator[tuple[asyncio.DatagramTransport, list[Sink], list[object]]]:
    loop = asyncio.get_running_loop()
    sender, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    sinks, addrs, transports = [], [], []
    for _ in range(2):
        t, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
        transports.append(t)
        sinks.append(sink)
        addrs.append(t.get_extra_info("sockname"))
    yield sender, sinks, addrs
    for t in (sender, *transports):
        t.close()


async def test_runs_of_equal_datagrams_go_in_one_syscall_each(
    endpoints: tuple[asyncio.DatagramTransport, list[Sink], list[object]],
) -> None:
    sender, (one, two), (a, b) = endpoints
    batcher = open_batcher(sender)
    assert isinstance(batcher, DatagramBatcher)
    sizes = [1200, 1200, 1200, 300, 1200, 1300, 40]
    sent = [(bytes([i]) * n, a) for i, n in enumerate(sizes)]
    sent.insert(5, (b"x" * 1200, b))  # another peer splits a run
    batcher.send(sent)
    await one.until(len(sizes))
    await two.until(1)
    assert one.got == [d for d, to in sent if to == a]  # same bytes, boundaries, order
    assert two.got == [b"x" * 1200]
    # [1200 x3 + 300] one sendmsg, [1200] alone, [x] alone, [1300, 40] one sendmsg
    assert batcher.syscalls_saved == 3 + 1
    batcher.send([(b"single", a)])  # one datagram: plain sendto
    await one.until(len(sizes) + 1)
    assert batcher.syscalls_saved == 4
    batcher.close()


async def test_switched_off_by_the_environment(
    endpoints: tuple[asyncio.DatagramTransport, list[Sink], list[object]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QPC_UDP_GSO", "off")
    assert open_batcher(endpoints[0]) is None


async def test_a_large_answer_leaves_in_batched_datagrams(
    server: RpcServer, client: RpcClient
) -> None:
    batcher = server._state.batcher
    assert batcher is not None and batcher.enabled
    big = b"p" * 60_000
    assert (await client.ping(payload=big)).payload == big
    assert batcher.syscalls_saved > 0


async def test_the_duplicate_socket_closes_with_the_server(server: RpcServer) -> None:
    batcher = server._state.batcher
    assert batcher is not None
    port = server.port
    await server.close(grace=1.0)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the port is free again
    try:
        s.bind(("127.0.0.1", port))
    finally:
        s.close()
