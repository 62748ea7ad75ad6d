"""Bad input from a raw aioquic client: the node answers with an error or a reset,
the same connection and other clients keep working, and the node never dies."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from proto import codec as c
from proto.errors import ErrorCode
from proto.rpc import ALPN, StreamError
from proto.rpc_client import RpcClient
from proto.rpc_server import RpcServer, ServerConfig
from tests.proto import samples
from tests.proto.conftest import client_config
from tests.proto.handler import FakeHandler
from tests.proto.test_codec import deep_message, unknown_tag_message

pytestmark = pytest.mark.network


@dataclass
class Outcome:
    """What came back on one stream."""

    data: bytearray = field(default_factory=bytearray)
    reset: int | None = None
    stop_sending: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def response(self) -> c.Response:
        return c.decode_response(bytes(self.data))


class RawClient(QuicConnectionProtocol):
    """Writes arbitrary bytes on streams and records what the node does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams: dict[int, Outcome] = {}
        self.terminated = asyncio.Event()

    def send(self, data: bytes, fin: bool = True, *, uni: bool = False) -> Outcome:
        sid = self._quic.get_next_available_stream_id(is_unidirectional=uni)
        out = self.streams[sid] = Outcome()
        self._quic.send_stream_data(sid, data, end_stream=fin)
        self.transmit()
        return out

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived) and event.stream_id in self.streams:
            out = self.streams[event.stream_id]
            out.data += event.data
            if event.end_stream:
                out.done.set()
        elif isinstance(event, events.StreamReset) and event.stream_id in self.streams:
            self.streams[event.stream_id].reset = event.error_code
            self.streams[event.stream_id].done.set()
        elif isinstance(event, events.StopSendingReceived) and event.stream_id in self.streams:
            self.streams[event.stream_id].stop_sending = event.error_code
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated.set()


@pytest.fixture
async def raw(server: RpcServer) -> AsyncIterator[RawClient]:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", server.port, configuration=cfg, create_protocol=RawClient) as p:
        assert isinstance(p, RawClient)
        yield p


async def still_works(raw: RawClient, server: RpcServer) -> None:
    """The same connection, and a fresh client, still get answers."""
    ok = raw.send(c.encode_request(c.Request(call=c.PingParams(payload=b"alive"))))
    await asyncio.wait_for(ok.done.wait(), 5)
    assert ok.response().result == c.PingResult(payload=b"alive", server_time_ms=1)
    async with RpcClient(client_config(server)) as other:
        assert await other.health() == samples.RESULTS["health"]
    assert not raw.terminated.is_set()


async def expect_error(out: Outcome, code: ErrorCode) -> c.ErrorInfo:
    await asyncio.wait_for(out.done.wait(), 10)
    assert out.reset is None
    result = out.response().result
    assert isinstance(result, c.ErrorInfo)
    assert result.code == code
    assert "Traceback" not in result.message
    return result


VALID = c.encode_request(samples.request_for("ping"))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"this is not capnp at all", id="garbage"),
        pytest.param(b"\xff" * 64, id="huge-segment-count"),
        pytest.param(VALID[: len(VALID) // 2], id="truncated"),
        pytest.param(VALID[:6], id="truncated-header"),
        pytest.param(b"", id="empty"),
        pytest.param(VALID + b"\x00" * 8, id="trailing"),
        pytest.param(deep_message(200), id="deep-nesting"),
        pytest.param(unknown_tag_message(), id="unknown-union-tag"),
        pytest.param(struct.pack("<II", 0, 0x10000000), id="claims-2GiB"),
    ],
)
async def test_bad_request_gets_error(raw: RawClient, server: RpcServer, data: bytes) -> None:
    out = raw.send(data)
    await asyncio.wait_for(out.done.wait(), 10)
    if out.reset is None:
        result = out.response().result
        assert isinstance(result, c.ErrorInfo)
        assert result.code in (ErrorCode.BAD_REQUEST, ErrorCode.PAYLOAD_TOO_LARGE)
    await still_works(raw, server)


async def test_10_mib_request(raw: RawClient, server: RpcServer) -> None:
    big = c.encode_request(c.Request(call=c.PingParams(payload=b"x" * (10 * 1024 * 1024))))
    out = raw.send(big)
    await expect_error(out, ErrorCode.PAYLOAD_TOO_LARGE)
    assert out.stop_sending == StreamError.REQUEST_TOO_LARGE
    await still_works(raw, server)


async def test_oversized_body_without_header_hint(raw: RawClient, server: RpcServer) -> None:
    """Garbage with no valid segment table is cut off at the byte limit, not buffered."""
    out = raw.send(b"\x00\x00\x00\x00" + b"\x01" * (5 * 1024 * 1024), fin=False)
    await expect_error(out, ErrorCode.PAYLOAD_TOO_LARGE)
    await still_works(raw, server)


async def test_stream_that_never_fins(handler: FakeHandler, tmp_path: Path) -> None:
    cfg = ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path, request_timeout=0.3)
    async with RpcServer(handler, cfg) as srv:
        qcfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
        async with connect(
            "127.0.0.1", srv.port, configuration=qcfg, create_protocol=RawClient
        ) as p:
            assert isinstance(p, RawClient)
            out = p.send(VALID[:10], fin=False)
            await expect_error(out, ErrorCode.BAD_REQUEST)
            assert out.stop_sending == StreamError.REQUEST_TIMEOUT
            await still_works(p, srv)


async def test_unidirectional_stream_is_ignored(raw: RawClient, server: RpcServer) -> None:
    raw.send(VALID, uni=True)
    await still_works(raw, server)


async def test_many_bad_streams_at_once(raw: RawClient, server: RpcServer) -> None:
    outs = [raw.send(bytes([i]) * (i + 1)) for i in range(100)]
    await asyncio.wait_for(asyncio.gather(*(o.done.wait() for o in outs)), 10)
    await still_works(raw, server)


async def test_oversized_announcement_is_refused_before_the_body(
    raw: RawClient, server: RpcServer
) -> None:
    """A segment table announcing 64 MiB is refused at once (nothing buffered)."""
    out = raw.send(struct.pack("<II", 0, 8 * 1024 * 1024), fin=False)
    await expect_error(out, ErrorCode.PAYLOAD_TOO_LARGE)
    assert out.stop_sending == StreamError.REQUEST_TOO_LARGE
    await still_works(raw, server)
