"""Test helpers: accounts that register, log in and register a device over real RPC."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from node.config import NodeConfig
from node.embedded import EmbeddedNode
from proto import tls
from proto.crypto import opaque
from proto.crypto.identity import IdentityKey
from proto.rpc_client import ClientConfig, RpcClient

HYBRID_KEY_BYTES = 1216


def node_config(data_dir: Path, **overrides: object) -> NodeConfig:
    """A node config for tests: free port, generous rate limits, quick housekeeping."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "login_burst": 10_000,
        "login_rate_per_s": 10_000.0,
        "write_burst": 100_000,
        "write_rate_per_s": 100_000.0,
    }
    values.update(overrides)
    return NodeConfig(**values)  # type: ignore[arg-type]


def client_at(port: int, fingerprint: str, *, token: bytes = b"") -> RpcClient:
    """A client for 127.0.0.1:``port`` pinned to ``fingerprint`` (no reconnects)."""
    return RpcClient(
        ClientConfig(
            host="127.0.0.1",
            port=port,
            trust=tls.TrustConfig(fingerprint=fingerprint),
            reconnect=False,
        ),
        token=token,
    )


def client_for(node: EmbeddedNode, *, token: bytes = b"") -> RpcClient:
    """A client pinned to the node's fingerprint."""
    return client_at(node.port, node.fingerprint, token=token)


@contextlib.asynccontextmanager
async def connected(node: EmbeddedNode, *, token: bytes = b"") -> AsyncIterator[RpcClient]:
    """``async with connected(node) as c``: a connected client, closed afterwards."""
    client = client_for(node, token=token)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def register(client: RpcClient, username: str, password: str) -> None:
    """OPAQUE registration over RPC."""
    start = opaque.client_registration_start(password)
    resp = await client.register_start(username=username, request=start.request)
    finish = opaque.client_registration_finish(password, start.state, resp.response)
    await client.register_finish(username=username, upload=finish.upload)


async def login(client: RpcClient, username: str, password: str, device_id: bytes) -> bytes:
    """OPAQUE login over RPC; returns the session token."""
    start = opaque.client_login_start(password)
    resp = await client.login_start(username=username, request=start.request)
    finish = opaque.client_login_finish(password, start.state, resp.response)
    result = await client.login_finish(
        login_id=resp.login_id, finalization=finish.finalization, device_id=device_id
    )
    return result.token


@dataclasses.dataclass
class Account:
    """A registered, logged-in user with one registered device."""

    username: str
    password: str
    identity: IdentityKey
    hybrid_key: bytes
    access_key: bytes
    client: RpcClient

    @property
    def device_id(self) -> bytes:
        """The device's Ed25519 public key."""
        return self.identity.public_key

    @property
    def token(self) -> bytes:
        """The session token."""
        return self.client.token


class _Endpoint(Protocol):
    @property
    def port(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...


async def make_account(
    node: _Endpoint, username: str, *, password: str = "correct horse", device: bool = True
) -> Account:
    """Register ``username``, log in with a new device and (by default) register it."""
    client = client_at(node.port, node.fingerprint)
    await client.connect()
    identity = IdentityKey.generate()
    await register(client, username, password)
    client.token = await login(client, username, password, identity.public_key)
    hybrid_key = os.urandom(HYBRID_KEY_BYTES)
    access_key = os.urandom(32)
    if device:
        await client.register_device(
            hybrid_key=hybrid_key,
            signature=identity.sign_device_registration(hybrid_key),
            delivery_access_key=access_key,
        )
    return Account(username, password, identity, hybrid_key, access_key, client)
