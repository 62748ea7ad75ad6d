"""Fixtures: a real QUIC node on loopback (port 0) and clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proto.rpc_client import ClientConfig, RpcClient
from proto.rpc_server import RpcServer, ServerConfig
from proto.tls import TrustConfig
from tests.proto.handler import FakeHandler


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
def server_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, tls_dir=tmp_path / "tls")


@pytest.fixture
async def server(handler: FakeHandler, server_config: ServerConfig) -> AsyncIterator[RpcServer]:
    srv = RpcServer(handler, server_config)
    await srv.start()
    yield srv
    await srv.close(grace=1.0)


def client_config(server: RpcServer, **kw: object) -> ClientConfig:
    """A client config for ``server`` pinned to its fingerprint."""
    kw.setdefault("trust", TrustConfig(fingerprint=server.fingerprint))
    return ClientConfig(host="127.0.0.1", port=server.port, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def client(server: RpcServer) -> AsyncIterator[RpcClient]:
    async with RpcClient(client_config(server), token=b"t" * 32) as cl:
        yield cl
