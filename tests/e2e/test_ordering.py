"""Ordering: catching up after being offline, held future-epoch messages, crash before ack."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.embedded import EmbeddedNode
from proto.codec import Envelope
from tests.e2e.helpers import CRASH, Cli, group_of, new_user
from tui.client.delivery import CRASH_POINTS
from tui.client.engine import Engine

pytestmark = [pytest.mark.network]


async def test_offline_member_catches_up_in_order(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob", "carol"])
    engines += members
    alice, bob, carol = members
    dave = await new_user(node, tmp_path, "dave")
    engines.append(dave)
    # carol is offline (does not sync) through three commits and twenty messages
    sent: list[str] = []

    async def say(e: Engine, n: int) -> None:
        for _ in range(n):
            text = f"m{len(sent):02d} from {e.user}"
            await e.send(chan, text)
            sent.append(text)

    await say(alice, 5)
    await alice.invite(chan, ["dave"])  # commit 1
    await bob.sync()
    await say(bob, 5)
    await bob.self_update(chan)  # commit 2
    await alice.sync()
    await say(alice, 5)
    await alice.remove(chan, ["dave"])  # commit 3
    await bob.sync()
    await say(bob, 5)
    assert len(sent) == 20

    got = await carol.sync()
    assert [m.text for m in got] == sent
    assert [m.user for m in await carol.members(chan)] == ["alice", "bob", "carol"]
    assert (
        carol.mls.load_group(bytes.fromhex(chan)).epoch
        == alice.mls.load_group(bytes.fromhex(chan)).epoch
    )
    assert [m.text for m in await carol.history(chan, limit=100) if not m.system] == sent


async def test_future_epoch_message_is_held_until_its_commit(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob"])
    engines += members
    alice, bob = members
    await alice.self_update(chan)
    await alice.send(chan, "in the new epoch")
    raw = (await (await bob.rpc()).fetch(after_seq=bob.state.cursor, limit=10)).envelopes
    commit, message = raw
    # Deliver them swapped: the message first (lower seq), its commit after.
    swapped = [
        Envelope(seq=commit.seq, channel_id=message.channel_id, data=message.data),
        Envelope(seq=message.seq, channel_id=commit.channel_id, data=commit.data),
    ]
    async with bob.mutex:
        first = await bob.inbox.process_batch(swapped[:1])
        assert first == [] and len(bob.state.held) == 1
        second = await bob.inbox.process_batch(swapped[1:])
    assert [m.text for m in second] == ["in the new epoch"]
    assert bob.state.held == []
    assert await bob.sync() == []  # acked; nothing comes back


async def test_killed_between_fetch_and_ack_reprocesses_without_dupes(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    chan = (await cli.ok("alice", "dm", "bob", "first"))["channel"]["id"]
    await cli.ok("alice", "send", chan, "second")
    crashed = await cli.run("bob", "recv", env={CRASH: "before-ack"})
    assert crashed.rc == 9  # died after persisting, before acking
    again = await cli.ok("bob", "recv")  # the node redelivers; seqs are de-duplicated
    assert again["messages"] == []
    await cli.ok("alice", "send", chan, "third")
    later = await cli.ok("bob", "recv")
    assert [m["text"] for m in later["messages"]] == ["third"]
    hist = [m for m in await cli.ok("bob", "history", chan) if not m["system"]]
    assert [m["text"] for m in hist] == ["first", "second", "third"]


async def test_killed_before_the_batch_commits_gets_it_again(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    chan = (await cli.ok("alice", "dm", "bob", "first"))["channel"]["id"]
    await cli.ok("bob", "join")
    await cli.ok("alice", "send", chan, "second")
    await cli.ok("alice", "send", chan, "third")
    crashed = await cli.run("bob", "recv", env={CRASH: "before-commit"})
    assert crashed.rc == 9  # MLS processed both (receipts stored), nothing in client.db
    again = await cli.ok("bob", "recv")  # the node redelivers; the receipts answer
    assert [m["text"] for m in again["messages"]] == ["second", "third"]
    hist = [m for m in await cli.ok("bob", "history", chan) if not m["system"]]
    assert [m["text"] for m in hist] == ["first", "second", "third"]
    await cli.ok("alice", "send", chan, "fourth")
    assert [m["text"] for m in (await cli.ok("bob", "recv"))["messages"]] == ["fourth"]


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_killed_between_any_two_receive_writes_loses_nothing(cli: Cli, point: str) -> None:
    """SIGKILL-like exit at each point between two writes of the receive path
    (after each MLS transaction with its receipt - the join and three
    messages -, before and after the history commit, after the receipts are
    forgotten, before the ack): after a restart every message is in the
    history exactly once and MLS goes on in both directions."""
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    chan = (await cli.ok("alice", "dm", "bob", "first"))["channel"]["id"]
    await cli.ok("alice", "send", chan, "second")
    await cli.ok("alice", "send", chan, "third")
    crashed = await cli.run("bob", "recv", env={CRASH: point})
    assert crashed.rc == 9, crashed.err
    await cli.ok("bob", "recv")
    hist = [m for m in await cli.ok("bob", "history", chan) if not m["system"]]
    assert [m["text"] for m in hist] == ["first", "second", "third"]
    await cli.ok("alice", "send", chan, "fourth")
    assert [m["text"] for m in (await cli.ok("bob", "recv"))["messages"]] == ["fourth"]
    await cli.ok("bob", "send", chan, "reply")
    assert [m["text"] for m in (await cli.ok("alice", "recv"))["messages"]] == ["reply"]
