"""Welcomes by reference through the real engine and a real node.

The inviter uploads the split Welcome's shared part (encrypted GroupInfo) and
the sealed ratchet tree once; each joiner's inbox gets only its own
EncryptedGroupSecrets behind a reference, and the joiner fetches the rest
(``fetchWelcome``). A tampered or missing tree is a clear warning, never a
join; the shared parts are deleted once every joiner acked its entry.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.embedded import EmbeddedNode, start_embedded_node
from proto.errors import NotFound, Unauthenticated
from proto.rpc_client import RpcClient
from tests.e2e.helpers import new_user, node_on_backend
from tests.node.backends import BACKENDS
from tests.node.helpers import node_config
from tui.client.engine import Engine
from tui.client.receive import WELCOME_REF_FIRST_BYTE, parse_welcome_ref

pytestmark = [pytest.mark.network]


@pytest.fixture(params=BACKENDS)
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EmbeddedNode]:
    """A node on each store backend."""
    async with node_on_backend(request.param, tmp_path) as handle:
        yield handle


def _spy(monkeypatch: pytest.MonkeyPatch, change: Any = None) -> list[dict[str, Any]]:
    """Record (and optionally change) every commitChannel call's arguments."""
    calls: list[dict[str, Any]] = []
    original = RpcClient.commit_channel

    async def spy(self: RpcClient, **kw: Any) -> Any:
        if change is not None and kw.get("ratchet_tree"):
            kw = change(kw)
        calls.append(kw)
        return await original(self, **kw)

    monkeypatch.setattr(RpcClient, "commit_channel", spy)
    return calls


async def test_join_by_reference_and_cleanup(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob, carol = [await new_user(node, tmp_path, n) for n in ("alice", "bob", "carol")]
    engines += [alice, bob, carol]
    calls = _spy(monkeypatch)
    chan = await alice.create_group("team")
    await alice.invite(chan.id, ["bob", "carol"])
    (call,) = calls
    assert call["welcome"] == b"" and call["group_info"] and call["ratchet_tree"]
    entries = call["joiner_entries"]
    assert len(entries) == 2 == len(call["joiners"])
    for entry in entries:  # only the joiner's own secrets behind the reference
        assert entry[:1] == WELCOME_REF_FIRST_BYTE
        epoch, _ = parse_welcome_ref(entry)
        assert epoch == call["epoch"] + 1
        assert len(entry) < 2_000
    # the node keeps the parts until a joiner acks its entry
    raw = await (await bob.rpc()).fetch(after_seq=0, limit=10)
    assert raw.envelopes[0].data in entries
    res = await (await bob.rpc()).fetch_welcome(channel_id=bytes.fromhex(chan.id), epoch=epoch)
    assert res.group_info == call["group_info"] and res.ratchet_tree == call["ratchet_tree"]
    with pytest.raises(Unauthenticated):  # a device token is needed
        await (await bob.rpc()).fetch_welcome(
            channel_id=bytes.fromhex(chan.id), epoch=epoch, auth=b""
        )
    await bob.sync()
    await carol.sync()
    sent = await alice.send(chan.id, "welcome both")
    assert sent.text == "welcome both"
    assert [m.text for m in await bob.sync()] == ["welcome both"]
    assert [m.text for m in await carol.sync()] == ["welcome both"]
    assert {m.user for m in await carol.members(chan.id)} == {"alice", "bob", "carol"}
    # both acked: the shared parts are gone from the node
    for e in (bob, carol):
        with pytest.raises(NotFound):
            await (await e.rpc()).fetch_welcome(channel_id=bytes.fromhex(chan.id), epoch=epoch)
    # and a device that was never a joiner cannot fetch them either
    with pytest.raises(NotFound):
        await (await alice.rpc()).fetch_welcome(channel_id=bytes.fromhex(chan.id), epoch=epoch)


async def test_tampered_tree_is_refused_clearly(
    node: EmbeddedNode,
    tmp_path: Path,
    engines: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob = [await new_user(node, tmp_path, n) for n in ("alice", "bob")]
    engines += [alice, bob]

    def tamper(kw: dict[str, Any]) -> dict[str, Any]:
        tree = bytearray(kw["ratchet_tree"])
        tree[len(tree) // 2] ^= 0x01
        return {**kw, "ratchet_tree": bytes(tree)}

    _spy(monkeypatch, tamper)
    chan = await alice.create_group("team")
    await alice.invite(chan.id, ["bob"])
    with caplog.at_level(logging.WARNING, logger="tui.client.engine"):
        await bob.sync()
    assert "ratchet tree or GroupInfo from the node does not match" in caplog.text
    assert chan.id not in {c.id for c in await bob.channels() if c.active}
    assert bytes.fromhex(chan.id) not in bob.mls.group_ids()


async def test_missing_tree_is_refused_clearly(
    node: EmbeddedNode,
    tmp_path: Path,
    engines: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob = [await new_user(node, tmp_path, n) for n in ("alice", "bob")]
    engines += [alice, bob]

    def wrong_epoch(kw: dict[str, Any]) -> dict[str, Any]:
        # the entry refers to an epoch the node holds no Welcome for
        entries = [e[:1] + (2**40).to_bytes(8, "big") + e[9:] for e in kw["joiner_entries"]]
        return {**kw, "joiner_entries": entries}

    _spy(monkeypatch, wrong_epoch)
    chan = await alice.create_group("team")
    await alice.invite(chan.id, ["bob"])
    with caplog.at_level(logging.WARNING, logger="tui.client.engine"):
        await bob.sync()
    assert "its ratchet tree and GroupInfo are not on the node" in caplog.text
    assert bytes.fromhex(chan.id) not in bob.mls.group_ids()


async def test_invite_too_large_for_one_commit_is_split(
    tmp_path: Path, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a node limit one commit of the invite cannot meet, the engine
    splits it into several commits; everyone joins, no size error surfaces."""
    handle = await start_embedded_node(
        # 12 hybrid KeyPackages (~2.7 KB each) and the path (38 KB) do not fit in 30 KB
        node_config(tmp_path / "node", max_commit_bytes=30_000)
    )
    try:
        names = [f"u{i:02d}" for i in range(13)]
        users = [await new_user(handle, tmp_path, n) for n in names]
        engines += users
        calls = _spy(monkeypatch)
        chan = await users[0].create_group("team")
        await users[0].invite(chan.id, names[1:])
        accepted = [c for c in calls if c["joiners"]]
        assert len({c["epoch"] for c in accepted}) >= 2  # several commits
        for e in users[1:]:
            await e.sync()
        for e in users:
            assert len(await e.members(chan.id)) == len(names)
    finally:
        await handle.stop()


@pytest.mark.slow
async def test_invite_200_at_once_with_default_limits(
    tmp_path: Path, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 people invited in one call to a node with the default size limits:
    everyone joins by reference and reads the next message."""
    size = 201
    handle = await start_embedded_node(
        # every device connects from 127.0.0.1: only that limit is lifted
        node_config(tmp_path / "node", max_connections_per_address=4 * size)
    )
    try:
        names = [f"u{i:03d}" for i in range(size)]
        users: list[Engine] = []
        for start in range(0, size, 8):
            users += [await new_user(handle, tmp_path, n) for n in names[start : start + 8]]
        engines += users
        calls = _spy(monkeypatch)
        owner, rest = users[0], users[1:]
        chan = await owner.create_group("big")
        await owner.invite(chan.id, names[1:])
        joined = [c for c in calls if c["joiners"]]
        assert sum(len(c["joiners"]) for c in joined) >= size - 1
        for e in rest:  # one at a time: they share this event loop
            await e.sync()
        await owner.send(chan.id, "hello 200")
        for e in rest:
            assert [m.text for m in await e.sync()] == ["hello 200"]
        assert len(await rest[-1].members(chan.id)) == size
    finally:
        await handle.stop()
