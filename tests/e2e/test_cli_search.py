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


async def test_search_reads_sealed_segments_and_a_delete_leaves_them(cli: Cli) -> None:
    """Each ``qpc search`` is a new process: it loads the encrypted segments the
    earlier processes sealed; a delete received from the author rewrites the
    segment that held the text."""
    import sqlite3

    from tests.e2e.helpers import PASSPHRASE
    from tui.client.profile import CLIENT_DB, ChatMessage, Profile
    from tui.client.search import SEGMENT_ROWS

    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    group = (await cli.ok("alice", "create-group", "ops"))["id"]
    await cli.ok("alice", "invite", group, "bob")
    sent = await cli.ok("alice", "send", group, "the Walrus plan, phase one")
    await cli.ok("alice", "send", group, "walrus phase two")
    assert len((await cli.ok("bob", "recv"))["messages"]) == 2
    # bob's history grows past two segments (stored directly; bob runs no qpc now)
    path = cli.base / "bob"
    async with await Profile.open(path, PASSPHRASE) as p:
        for i in range(2 * SEGMENT_ROWS):
            await p.append_message(
                ChatMessage(
                    channel_id=bytes.fromhex(group),
                    sender=b"\x01" * 32,
                    sender_name="carol",
                    timestamp_ms=i,
                    text=f"filler {i}",
                )
            )
        assert p.search_segments_through >= SEGMENT_ROWS
    with sqlite3.connect(path / CLIENT_DB) as db:
        old_segments = [
            bytes(b) for (b,) in db.execute("SELECT blob FROM search_segments ORDER BY first_id")
        ]
    hits = await cli.ok("bob", "search", "walrus")
    assert [m["text"] for m in hits] == ["walrus phase two", "the Walrus plan, phase one"]

    await cli.ok("alice", "delete", group, sent["msg_id"])
    await cli.ok("bob", "recv")
    hits = await cli.ok("bob", "search", "walrus", "--channel", "ops")
    assert [m["text"] for m in hits] == ["walrus phase two"]
    assert await cli.ok("bob", "search", "plan") == []
    # the text is in no segment, and the segment's old ciphertext in no file
    async with await Profile.open(path, PASSPHRASE) as p:
        with sqlite3.connect(path / CLIENT_DB) as db:
            segs = list(db.execute("SELECT first_id, last_id, blob FROM search_segments"))
        texts = [t for a, b, blob in segs for t in p._open_segment(a, b, bytes(blob))[2]]
        assert "walrus phase two" in texts and not [t for t in texts if "plan" in t]
    files = [f for f in path.rglob("*") if f.is_file()]
    assert old_segments[0] not in b"".join(f.read_bytes() for f in files)
