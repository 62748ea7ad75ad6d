"""ACK timing helpers (proto.rpc.ack_pending / hold_ack) on stand-in aioquic state."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aioquic.tls import Epoch

from proto.rpc import ack_pending, hold_ack
from proto.rpc_client import RpcClient
from tests.proto.handler import FakeHandler


def fake_quic(ack_at: float | None, *, other: float | None = None, in_flight: int = 0) -> Any:
    space = SimpleNamespace(ack_at=ack_at)
    quic = SimpleNamespace(
        _handshake_complete=True,
        _state=SimpleNamespace(name="CONNECTED"),
        _spaces={Epoch.ONE_RTT: space},
        _ack_delay=0.001,
        _loss=SimpleNamespace(bytes_in_flight=in_flight, congestion_window=10_000),
    )

    def get_timer() -> float | None:
        times = [t for t in (space.ack_at, other) if t is not None]
        return min(times) if times else None

    quic.get_timer = get_timer
    return quic


def test_ack_pending_only_when_an_ack_is_armed_for_later() -> None:
    assert ack_pending(fake_quic(10.001), 10.0)
    assert not ack_pending(fake_quic(None), 10.0)  # nothing armed: no bound
    assert not ack_pending(fake_quic(9.999), 10.0)  # due now
    assert not ack_pending(fake_quic(10.001, in_flight=6_000), 10.0)  # window half used
    quic = fake_quic(10.001)
    quic._handshake_complete = False
    assert not ack_pending(quic, 10.0)
    quic = fake_quic(10.001)
    quic._state = SimpleNamespace(name="CLOSING")
    assert not ack_pending(quic, 10.0)
    assert not ack_pending(object(), 10.0)  # unknown state: transmit as before


def test_hold_ack_is_bounded_and_yields_to_other_timers() -> None:
    quic = fake_quic(10.001)  # armed at 10.000
    assert hold_ack(quic, 10.001, 0.004)
    assert quic._spaces[Epoch.ONE_RTT].ack_at == 10.004
    assert not hold_ack(fake_quic(10.001), 10.006, 0.004)  # bound passed: send it
    assert not hold_ack(fake_quic(10.002), 10.001, 0.004)  # not due yet
    busy = fake_quic(10.001, other=10.0005)  # e.g. loss detection due too
    assert not hold_ack(busy, 10.001, 0.004)
    assert busy._spaces[Epoch.ONE_RTT].ack_at == 10.001  # unchanged


async def test_ack_of_a_running_call_is_held_only_briefly(
    client: RpcClient, handler: FakeHandler
) -> None:
    """A unary call that keeps running still gets its request acknowledged: the
    held ACK goes out on its own instead of waiting for the answer."""
    await client.ping(payload=b"warm")
    task = asyncio.create_task(client.ping(payload=b"block"))
    await asyncio.wait_for(handler.block_started.wait(), 5)
    proto = client._proto
    assert proto is not None
    quic = proto._quic
    sent = quic._packet_number - 1  # the request's packet (or a later one)
    space = quic._spaces[Epoch.ONE_RTT]
    while space.largest_acked_packet < sent:  # the hold ends 4 ms after the request
        await asyncio.sleep(0.002)
    assert not task.done()  # acknowledged while the call still runs, not with its answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
