"""Engine API the TUI asked for: server probe and pin, mark_read, server_info, node moves."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode
from proto import tls
from proto.crypto.atrest import FAST_TEST_PARAMS
from proto.errors import ConfigError, FingerprintMismatch
from proto.rpc_client import probe_server_key
from tests.e2e.helpers import PASSPHRASE, PASSWORD, engine_config, group_of
from tui.client import api
from tui.client.core import PINS_FILE, EngineConfig, parse_servers
from tui.client.engine import Engine
from tui.client.localnode import ensure_local_node, read_local_node, stop_local_node
from tui.client.probe import pin_server, probe_server

pytestmark = [pytest.mark.network]


async def test_probe_reads_the_key_without_trusting_or_sending(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    server = f"127.0.0.1:{node.port}"
    config = EngineConfig(profile_dir=tmp_path / "alice", server=server, kdf=FAST_TEST_PARAMS)
    presented = await probe_server_key("127.0.0.1", node.port)
    assert presented == node.fingerprint

    probe = await probe_server(config, server)
    assert probe == api.ServerProbe(server=server, fingerprint=node.fingerprint, pinned=None)
    assert not (tmp_path / "alice" / PINS_FILE).exists()  # nothing pinned by probing

    # The user agreed: the pin goes to the profile's pin store, which the engine checks.
    await pin_server(config, server, probe.fingerprint)
    assert tls.PinStore(tmp_path / "alice" / PINS_FILE).get(server) == node.fingerprint
    again = await probe_server(config, server)
    assert again.pinned == again.fingerprint == node.fingerprint
    alice = await Engine.open(config, PASSPHRASE, create=True)
    engines.append(alice)
    who = await alice.register("alice", PASSWORD)
    assert who.server_fingerprint == node.fingerprint
    assert alice.server_info() == api.ServerInfo(address=server, embedded=False)


async def test_a_wrong_pin_is_reported_by_the_probe_and_refused_by_the_engine(
    node: EmbeddedNode, tmp_path: Path
) -> None:
    server = f"127.0.0.1:{node.port}"
    config = engine_config(node, tmp_path / "alice")
    await pin_server(config, server, "ab" * 32)
    probe = await probe_server(config, server)
    assert probe.pinned == "ab" * 32 and probe.fingerprint == node.fingerprint
    engine = await Engine.open(config, PASSPHRASE, create=True)
    try:
        with pytest.raises(FingerprintMismatch):
            await engine.register("alice", PASSWORD)
    finally:
        await engine.close()


async def test_a_server_list_moves_past_an_address_that_does_not_answer(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    """``--server A,B``: A never answers (nothing listens there), so the engine
    connects through B; the key is probed and pinned under the first address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))  # a bound port where no QUIC server answers
        first = f"127.0.0.1:{dead.getsockname()[1]}"
        server = f"{first},127.0.0.1:{node.port}"
        config = EngineConfig(
            profile_dir=tmp_path / "alice",
            server=server,
            kdf=FAST_TEST_PARAMS,
            reconnect_wait_s=1.0,
        )
        assert parse_servers(server) == [
            ("127.0.0.1", dead.getsockname()[1]),
            ("127.0.0.1", node.port),
        ]
        await pin_server(config, server, node.fingerprint)
        assert tls.PinStore(tmp_path / "alice" / PINS_FILE).get(first) == node.fingerprint
        alice = await Engine.open(config, PASSPHRASE, create=True)
        engines.append(alice)
        who = await alice.register("alice", PASSWORD)
        assert who.server_fingerprint == node.fingerprint
        assert alice.connection_state().server == f"127.0.0.1:{node.port}"  # the one in use
    with pytest.raises(ConfigError):
        parse_servers("127.0.0.1:1,nonsense")


async def test_mark_read_survives_a_restart(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob"])
    alice, bob = members
    engines.append(alice)
    await bob.send(chan, "one")
    await bob.send(chan, "two")
    await bob.close()
    await alice.sync()
    assert next(c for c in await alice.channels() if c.id == chan).unread == 2
    await alice.mark_read(chan)
    assert next(c for c in await alice.channels() if c.id == chan).unread == 0
    await alice.close()
    engines.remove(alice)
    reopened = await Engine.open(engine_config(node, tmp_path / "alice"), PASSPHRASE)
    engines.append(reopened)
    assert next(c for c in await reopened.channels() if c.id == chan).unread == 0


async def test_engine_follows_the_local_node_to_a_new_port(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = await asyncio.to_thread(ensure_local_node, data)
    opened: list[Engine] = []
    try:

        def config(name: str) -> EngineConfig:
            return EngineConfig(
                profile_dir=tmp_path / name,
                kdf=FAST_TEST_PARAMS,
                data_dir=data,
                reconnect_wait_s=1.0,
            )

        alice = await Engine.open(config("alice"), PASSPHRASE, create=True)
        opened.append(alice)
        await alice.register("alice", PASSWORD)
        bob = await Engine.open(config("bob"), PASSPHRASE, create=True)
        opened.append(bob)
        await bob.register("bob", PASSWORD)
        chan = await alice.dm("bob")
        await bob.sync()
        assert alice.server_info() == api.ServerInfo(address=node.address, embedded=True)
        seen: list[api.EngineEvent] = []

        async def listen() -> None:
            async for event in alice.events():  # survives the node's restart
                seen.append(event)

        listener = asyncio.create_task(listen())  # the live subscription, as the TUI holds it
        for _ in range(100):
            if any(isinstance(e, api.ConnectionChanged) for e in seen):
                break
            await asyncio.sleep(0.05)

        await asyncio.to_thread(stop_local_node, data)
        moved = await asyncio.to_thread(ensure_local_node, data)
        assert read_local_node(data) == moved
        assert moved.pid != node.pid

        first = await alice.send(chan.id, "after the restart")  # may wait in the outbox
        for _ in range(40):
            if alice.connection_state().outbox_count == 0 and (
                first.state is api.DeliveryState.SENT
                or (await alice.history(chan.id))[-1].state is api.DeliveryState.SENT
            ):
                break
            await alice.sync()
        assert (await alice.history(chan.id))[-1].state is api.DeliveryState.SENT
        assert alice.server_info() == api.ServerInfo(address=moved.address, embedded=True)
        sent = await alice.send(chan.id, "and again")
        assert sent.state is api.DeliveryState.SENT
        got = await bob.sync()
        assert [m.text for m in got] == ["after the restart", "and again"]
        assert not listener.done()
        assert not [e for e in seen if isinstance(e, api.SecurityWarning)]
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    finally:
        for e in opened:
            await e.close()
        await asyncio.to_thread(stop_local_node, data)


async def test_tui_factory_probes_then_pins_through_the_pin_store(
    node: EmbeddedNode, tmp_path: Path
) -> None:
    from tui.launch import EngineFactoryImpl
    from tui.session import LoginForm, ServerKeyStatus

    server = f"127.0.0.1:{node.port}"
    base = EngineConfig(profile_dir=tmp_path / "alice", kdf=FAST_TEST_PARAMS)
    factory = EngineFactoryImpl(base)
    key = await factory.probe(server)
    assert key.status is ServerKeyStatus.NEW and key.fingerprint == node.fingerprint
    form = LoginForm(
        server=server, user="alice", password=PASSWORD, passphrase=PASSPHRASE, register=True
    )
    engine = await factory.open(form, trust_fingerprint=key.fingerprint)
    try:
        await engine.register("alice", PASSWORD)
        assert engine.server_info() == api.ServerInfo(address=server, embedded=False)
    finally:
        await engine.close()
        await factory.close()
    assert (await factory.probe(server)).status is ServerKeyStatus.PINNED
