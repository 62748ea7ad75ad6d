"""``qpc search`` over a real node: two members, two channels, no plaintext at rest."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import Cli

pytestmark = [pytest.mark.slow, pytest.mark.network]


async def test_search_all_channels_and_one(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    dm = (await cli.ok("alice", "dm", "bob", "the Zebrafish deploy is done"))["channel"]["id"]
    group = (await cli.ok("alice", "create-group", "ops"))["id"]
    await cli.ok("alice", "invite", group, "bob")
    await cli.ok("alice", "send", group, "zebrafish again, redeployed")
    await cli.ok("alice", "send", group, "unrelated line")
    got = await cli.ok("bob", "recv")
    assert len(got["messages"]) == 3
    await cli.ok("bob", "send", group, "ZEBRAFISH ack")

    # every word, any case, substrings; newest first; both channels
    hits = await cli.ok("bob", "search", "zebraFISH deploy")
    assert [(m["sender"], m["text"]) for m in hits] == [
        ("alice", "zebrafish again, redeployed"),
        ("alice", "the Zebrafish deploy is done"),
    ]
    assert {m["channel"] for m in hits} == {dm, group}
    # one channel (by name); the index catches up with the message sent since
    hits = await cli.ok("bob", "search", "zebrafish", "--channel", "ops")
    assert [m["text"] for m in hits] == ["ZEBRAFISH ack", "zebrafish again, redeployed"]
    assert await cli.ok("bob", "search", "nothing-like-this") == []
    human = await cli.run("bob", "search", "unrelated", json_out=False)
    assert human.rc == 0 and "#ops alice: unrelated line" in human.out
    bad = await cli.run("bob", "search", "x", "--channel", "no-such-channel")
    assert bad.rc == 1 and bad.err.startswith("qpc: error:")
    # searching wrote no plaintext anywhere in the profile
    files = [p for p in (cli.base / "bob").rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes().lower()
        assert b"zebrafish" not in data and b"redeployed" not in data, path.name
