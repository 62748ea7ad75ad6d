"""A real ``qpc-node`` process given every input that ever aborted a decoder.

The node runs as a subprocess, so if an input still killed it the test sees
a dead process and fails, instead of taking the test runner down with it.
Each input goes on a fresh QUIC stream of one raw connection; every one must
get a typed ``badRequest`` error (or a stream reset), and afterwards the same
connection and a new client are still served.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration

from proto import codec as c
from proto.errors import ErrorCode
from proto.rpc import ALPN
from proto.rpc_client import ClientConfig, RpcClient
from proto.tls import TrustConfig
from tests.proto.test_rpc_hostile import RawClient

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "vectors" / "fuzz" / "wire-request.hex"
REPRO = bytes.fromhex(
    "000000000800000000000000010002000000000000000000050000c302010000fcffffff"
    "00000000000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)


class NodeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, fingerprint: str) -> None:
        self.proc, self.port, self.fingerprint = proc, port, fingerprint


@pytest.fixture
async def node_process(tmp_path: Path) -> AsyncIterator[NodeProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path / "node"),
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    port, fingerprint = 0, ""
    while not (port and fingerprint):
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, "node exited before listening"
        if line.startswith("listening:"):
            port = int(line.rsplit(":", 1)[1])
        elif line.startswith("fingerprint:"):
            fingerprint = line.split(":", 1)[1].strip()
    yield NodeProcess(proc, port, fingerprint)
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


async def test_node_process_survives_the_corpus(node_process: NodeProcess) -> None:
    corpus = [REPRO] + [bytes.fromhex(x) for x in CORPUS.read_text().split()]
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    async with connect(
        "127.0.0.1", node_process.port, configuration=cfg, create_protocol=RawClient
    ) as raw:
        assert isinstance(raw, RawClient)
        for start in range(0, len(corpus), 32):  # under the per-connection stream limit
            outs = [raw.send(data) for data in corpus[start : start + 32]]
            for data, out in zip(corpus[start : start + 32], outs, strict=True):
                await asyncio.wait_for(out.done.wait(), 10)
                if out.reset is None:
                    result = out.response().result
                    assert isinstance(result, c.ErrorInfo), data.hex()
                    assert result.code == ErrorCode.BAD_REQUEST, data.hex()
                    assert "Traceback" not in result.message
            assert node_process.proc.returncode is None
        ok = raw.send(c.encode_request(c.Request(call=c.PingParams(payload=b"alive"))))
        await asyncio.wait_for(ok.done.wait(), 10)
        result = ok.response().result
        assert isinstance(result, c.PingResult) and result.payload == b"alive"
    trust = TrustConfig(fingerprint=node_process.fingerprint)
    async with RpcClient(ClientConfig(host="127.0.0.1", port=node_process.port, trust=trust)) as cl:
        assert (await cl.health()).status == "ok"
    assert node_process.proc.returncode is None
