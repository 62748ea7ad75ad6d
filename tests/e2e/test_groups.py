"""Groups over a real node: three parties with a removal, concurrent invites."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode
from proto import mls
from proto.errors import LocalError, MlsError, PermissionDenied
from tests.e2e.helpers import group_of, new_user
from tui.client.engine import Engine
from tui.client.sending import post_key

pytestmark = [pytest.mark.network]


async def test_three_party_group_with_remove(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob", "carol"])
    engines += members
    alice, bob, carol = members
    for e in members:
        info = (await e.channels())[0]
        assert info.id == chan and info.name == "team"
        assert info.members == ("alice", "bob", "carol")
    for e in members:
        await e.send(chan, f"hi from {e.user}")
    for e in members:
        got = {(m.sender, m.text) for m in await e.sync()}
        assert got == {(o.user, f"hi from {o.user}") for o in members if o is not e}

    cid = bytes.fromhex(chan)
    carol_key = post_key(carol.mls.load_group(cid))  # what carol holds before removal
    await alice.remove(chan, ["carol"])
    await bob.sync()
    assert [m.user for m in await bob.members(chan)] == ["alice", "bob"]
    await carol.sync()
    assert not (await carol.channels())[0].active
    with pytest.raises(LocalError):
        await carol.send(chan, "still here?")

    # A message after the removal: bob reads it; carol's MLS state cannot,
    # even when handed the ciphertext (taken from bob's inbox, where the
    # channel log entry is the MLS PrivateMessage itself).
    await alice.send(chan, "after carol left")
    raw = await (await bob.rpc()).fetch(after_seq=bob.state.cursor, limit=10)
    assert len(raw.envelopes) == 1
    body = raw.envelopes[0].data
    assert mls.message_info(body).kind == "private_message"
    with pytest.raises(MlsError):
        carol.mls.load_group(bytes.fromhex(chan)).process(body)
    assert [m.text for m in await bob.sync()] == ["after carol left"]
    assert await carol.sync() == []
    # nor can she post: the key she held is not the new epoch's (OpenMLS
    # derives nothing for her any more), and nothing new reaches her inbox
    with pytest.raises(MlsError):
        post_key(carol.mls.load_group(cid))
    with pytest.raises(PermissionDenied):
        await (await carol.rpc()).post_channel(
            channel_id=cid,
            post_key=carol_key,
            recipients=[alice.device_id, bob.device_id],
            payload=body,
        )
    assert (await (await carol.rpc()).fetch(after_seq=carol.state.cursor, limit=10)).envelopes == ()
    assert "after carol left" not in [m.text for m in await carol.history(chan)]


async def test_concurrent_invites_converge(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tui.client")
    members, chan = await group_of(node, tmp_path, ["alice", "bob"])
    engines += members
    alice, bob = members
    carol = await new_user(node, tmp_path, "carol")
    dave = await new_user(node, tmp_path, "dave")
    engines += [carol, dave]
    # Both commit at the same epoch; the node takes one, the other retries.
    await asyncio.gather(alice.invite(chan, ["carol"]), bob.invite(chan, ["dave"]))
    assert "commit raced another one" in caplog.text
    everyone = [alice, bob, carol, dave]
    for _ in range(2):
        for e in everyone:
            await e.sync()
    epochs = set()
    for e in everyone:
        group = e.mls.load_group(bytes.fromhex(chan))
        epochs.add(group.epoch)
        assert [m.user for m in await e.members(chan)] == ["alice", "bob", "carol", "dave"]
    assert epochs == {3}  # add bob, then one add each
    for e in everyone:
        await e.send(chan, f"from {e.user}")
    for e in everyone:
        texts = sorted(m.text for m in await e.sync())
        assert texts == sorted(f"from {o.user}" for o in everyone if o is not e)


async def test_leave_is_committed_by_a_member(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob", "carol"])
    engines += members
    alice, bob, carol = members
    await carol.leave(chan)
    assert not (await carol.channels())[0].active
    await alice.sync()  # sees the proposal and commits it
    await bob.sync()
    assert [m.user for m in await bob.members(chan)] == ["alice", "bob"]
    assert [m.user for m in await alice.members(chan)] == ["alice", "bob"]
    await bob.send(chan, "bye carol")
    assert [m.text for m in await alice.sync()] == ["bye carol"]


async def test_self_update_and_welcome_after_restart(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob"])
    engines += members
    alice, bob = members
    before = alice.mls.load_group(bytes.fromhex(chan)).epoch
    info = await bob.self_update(chan)
    assert info.epoch == before + 1
    await alice.sync()
    assert alice.mls.load_group(bytes.fromhex(chan)).epoch == before + 1
    await alice.send(chan, "new keys")
    assert [m.text for m in await bob.sync()] == ["new keys"]
    assert alice.mls.load_group(bytes.fromhex(chan)).ciphersuite == mls.DEFAULT_CIPHERSUITE


async def test_periodic_self_update_and_keypackage_refill(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    alice = await new_user(node, tmp_path, "alice")
    bob = await new_user(node, tmp_path, "bob", keypackage_low=20)
    engines += [alice, bob]
    chan = (await alice.create_group("team")).id
    await alice.invite(chan, ["bob"])
    await bob.sync()  # joins (one KeyPackage consumed), then refills below 20
    stock = (await bob.whoami()).key_stock
    assert stock is not None and stock.count == 20
    cid = bytes.fromhex(chan)
    epoch = alice.mls.load_group(cid).epoch
    alice.state.channels[chan].updated_ms = 0  # our leaf key is "old"
    await alice.sync()
    assert alice.mls.load_group(cid).epoch == epoch + 1
    await alice.sync()  # not due again
    assert alice.mls.load_group(cid).epoch == epoch + 1
    await bob.sync()
    assert bob.mls.load_group(cid).epoch == epoch + 1
