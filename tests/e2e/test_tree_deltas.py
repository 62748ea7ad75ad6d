"""Tree deltas through the real engine, real OpenMLS and a real node
(docs/PROTOCOL.md, "Tree deltas").

A channel's first commit uploads the whole sealed tree (a base); later
commits upload only a delta. A joiner fetches the latest base and the deltas
after it and rebuilds its epoch's tree. A commit that breaks the chain makes
the next delta refused with ``treeBaseRequired``, and the client sends the
same commit again with the whole tree. A tampered delta is refused clearly.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.embedded import EmbeddedNode
from proto.errors import TreeBaseRequired
from proto.rpc_client import RpcClient
from tests.e2e.helpers import new_user, node_on_backend
from tests.node.backends import BACKENDS
from tui.client.engine import Engine
from tui.client.receive import parse_welcome_ref

pytestmark = [pytest.mark.network]


@pytest.fixture(params=BACKENDS)
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EmbeddedNode]:
    """A node on each store backend."""
    async with node_on_backend(request.param, tmp_path) as handle:
        yield handle


Change = Any


def _spy(monkeypatch: pytest.MonkeyPatch, change: Change = None) -> list[dict[str, Any]]:
    """Record every commitChannel call's arguments (after ``change``) and,
    under "error", the typed error the node answered."""
    calls: list[dict[str, Any]] = []
    original = RpcClient.commit_channel

    async def spy(self: RpcClient, **kw: Any) -> Any:
        if change is not None:
            kw = change(kw)
        calls.append(kw)
        try:
            return await original(self, **kw)
        except Exception as exc:
            kw["error"] = exc
            raise

    monkeypatch.setattr(RpcClient, "commit_channel", spy)
    return calls


def _part(call: dict[str, Any]) -> str:
    return "delta" if call.get("tree_delta") else "base" if call.get("ratchet_tree") else "none"


async def test_joiner_rebuilds_its_tree_from_base_and_deltas(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["alice", "bob", "carol", "dave", "erin", "frank"]
    alice, bob, carol, dave, erin, frank = [await new_user(node, tmp_path, n) for n in names]
    engines += [alice, bob, carol, dave, erin, frank]
    calls = _spy(monkeypatch)
    chan = await alice.create_group("team")
    cid = bytes.fromhex(chan.id)
    await alice.invite(chan.id, ["bob", "carol"])  # epoch 0 -> 1: a new channel, the base
    await bob.sync()
    await carol.sync()
    await alice.invite(chan.id, ["dave"])  # 1 -> 2: a delta
    await dave.sync()
    await alice.remove(chan.id, ["carol"])  # 2 -> 3: a delta (a removal has a path)
    await bob.sync()
    await dave.sync()
    await bob.invite(chan.id, ["erin"])  # 3 -> 4: a delta, by another member
    assert [_part(c) for c in calls] == ["base", "delta", "delta", "delta"]
    assert not any("error" in c for c in calls)
    base = calls[0]["ratchet_tree"]
    for c in calls[1:]:
        assert len(c["tree_delta"]) < len(base) + 2_000  # a few nodes, not the tree
    # erin's Welcome: the base of epoch 1 and the deltas of epochs 2, 3, 4
    (entry,) = calls[-1]["joiner_entries"]
    epoch, _ = parse_welcome_ref(entry)
    assert epoch == 4
    res = await (await erin.rpc()).fetch_welcome(channel_id=cid, epoch=epoch)
    assert res.ratchet_tree == base
    assert res.tree_deltas == tuple(c["tree_delta"] for c in calls[1:])
    await erin.sync()
    assert {m.user for m in await erin.members(chan.id)} == {"alice", "bob", "dave", "erin"}
    await alice.sync()
    await dave.sync()
    await alice.send(chan.id, "hello erin")
    assert [m.text for m in await erin.sync()] == ["hello erin"]
    # a joiner after erin: same base, one more delta
    await erin.invite(chan.id, ["frank"])
    assert _part(calls[-1]) == "delta"
    await frank.sync()
    assert {m.user for m in await frank.members(chan.id)} == {
        "alice",
        "bob",
        "dave",
        "erin",
        "frank",
    }
    for e in (alice, bob, dave):
        await e.sync()
    await dave.send(chan.id, "hi frank")
    assert [m.text for m in await frank.sync()] == ["hi frank"]


async def test_base_required_sends_the_same_commit_whole(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit without a tree part breaks the chain: the next delta is refused
    (nothing stored) and the client resends that commit with the whole tree."""
    alice, bob, carol = [await new_user(node, tmp_path, n) for n in ("alice", "bob", "carol")]
    engines += [alice, bob, carol]
    drop = {"on": False}

    def maybe_drop(kw: dict[str, Any]) -> dict[str, Any]:
        if drop["on"]:  # an old client would send no part: the chain breaks
            drop["on"] = False
            return {k: v for k, v in kw.items() if k not in ("tree_delta", "ratchet_tree")}
        return kw

    calls = _spy(monkeypatch, maybe_drop)
    chan = await alice.create_group("team")
    await alice.invite(chan.id, ["bob"])
    await bob.sync()
    drop["on"] = True
    await alice.self_update(chan.id)
    await bob.sync()
    assert _part(calls[-1]) == "none"
    n = len(calls)
    await alice.invite(chan.id, ["carol"])
    refused, resent = calls[n:]
    assert _part(refused) == "delta" and isinstance(refused["error"], TreeBaseRequired)
    assert _part(resent) == "base" and "error" not in resent
    assert refused["epoch"] == resent["epoch"] and refused["commit"] == resent["commit"]
    res = await (await carol.rpc()).fetch_welcome(
        channel_id=bytes.fromhex(chan.id), epoch=resent["epoch"] + 1
    )
    assert res.ratchet_tree == resent["ratchet_tree"] and res.tree_deltas == ()
    await carol.sync()
    await bob.sync()
    await alice.send(chan.id, "hello carol")
    assert [m.text for m in await carol.sync()] == ["hello carol"]
    assert [m.text for m in await bob.sync()] == ["hello carol"]


async def test_tampered_delta_is_refused_clearly(
    node: EmbeddedNode,
    tmp_path: Path,
    engines: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice, bob, carol = [await new_user(node, tmp_path, n) for n in ("alice", "bob", "carol")]
    engines += [alice, bob, carol]

    def tamper(kw: dict[str, Any]) -> dict[str, Any]:
        if not kw.get("tree_delta"):
            return kw
        delta = bytearray(kw["tree_delta"])
        delta[len(delta) // 2] ^= 0x01
        return {**kw, "tree_delta": bytes(delta)}

    chan = await alice.create_group("team")
    await alice.invite(chan.id, ["bob"])
    await bob.sync()
    _spy(monkeypatch, tamper)
    await alice.invite(chan.id, ["carol"])
    with caplog.at_level(logging.WARNING, logger="tui.client.engine"):
        await carol.sync()
    assert "ratchet tree or GroupInfo from the node does not match" in caplog.text
    assert chan.id not in {c.id for c in await carol.channels() if c.active}
    assert bytes.fromhex(chan.id) not in carol.mls.group_ids()
