"""Replies, reactions, edits, deletes and topics between two users over the ``qpc`` CLI
(each command a separate process, a real node, real MLS)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import Cli

pytestmark = [pytest.mark.slow, pytest.mark.network]


def _by_id(hist: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["msg_id"]: m for m in hist if not m["system"]}


async def test_reply_react_edit_delete_topic_both_ways(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    channel = (await cli.ok("alice", "create-group", "team"))["id"]
    await cli.ok("alice", "invite", channel, "bob")
    await cli.ok("bob", "join")

    first = await cli.ok("alice", "send", channel, "lunch at noon?")
    mid = first["msg_id"]
    assert len(mid) == 32
    await cli.ok("bob", "recv")
    # the id is the same on both devices
    bob_hist = [m for m in await cli.ok("bob", "history", channel) if not m["system"]]
    assert [(m["msg_id"], m["text"]) for m in bob_hist] == [(mid, "lunch at noon?")]
    # reading it sent a read receipt (not a chat line); once per read position
    await cli.ok("alice", "recv")
    (chan,) = await cli.ok("alice", "channels")
    assert chan["seen"] == [["bob", mid]]
    alice_hist = [m for m in await cli.ok("alice", "history", channel) if not m["system"]]
    assert [m["msg_id"] for m in alice_hist] == [mid]

    # bob replies and reacts; alice sees both
    reply = await cli.ok("bob", "send", channel, "--reply-to", mid, "yes!")
    assert reply["reply_to"] == mid
    mine = await cli.ok("bob", "react", channel, mid, "👍")
    assert mine["reactions"] == [{"emoji": "👍", "users": ["bob"], "mine": True}]
    await cli.ok("alice", "recv")
    hist = _by_id(await cli.ok("alice", "history", channel))
    assert hist[reply["msg_id"]]["reply_to"] == mid and hist[reply["msg_id"]]["text"] == "yes!"
    assert hist[mid]["reactions"] == [{"emoji": "👍", "users": ["bob"], "mine": False}]

    # alice reacts too (counted per emoji), then bob takes his reaction back
    await cli.ok("alice", "react", channel, mid, "👍")
    await cli.ok("bob", "recv")
    await cli.ok("bob", "react", channel, mid, "👍", "--remove")
    await cli.ok("alice", "recv")
    hist = _by_id(await cli.ok("alice", "history", channel))
    assert hist[mid]["reactions"] == [{"emoji": "👍", "users": ["alice"], "mine": True}]

    # only the author edits: bob's attempt is refused locally, alice's reaches bob
    res = await cli.run("bob", "edit", channel, mid, "hijacked")
    assert res.rc != 0 and "only the author" in res.err
    edited = await cli.ok("alice", "edit", channel, mid, "lunch at one?")
    assert edited["edited"] and edited["text"] == "lunch at one?"
    await cli.ok("bob", "recv")
    hist = _by_id(await cli.ok("bob", "history", channel))
    assert hist[mid]["text"] == "lunch at one?" and hist[mid]["edited"]

    # /me and the topic
    await cli.ok("bob", "send", channel, "--me", "waves")
    topic = await cli.ok("bob", "topic", channel, "Friday plans")
    assert topic["topic"] == "Friday plans"
    await cli.ok("alice", "recv")
    chans = await cli.ok("alice", "channels")
    assert chans[0]["topic"] == "Friday plans"
    alice_hist = [m for m in await cli.ok("alice", "history", channel) if not m["system"]]
    last = alice_hist[-1]
    assert last["action"] and last["text"] == "waves" and last["sender"] == "bob"

    # receipts off: bob reads alice's next message, alice learns nothing
    assert (await cli.ok("bob", "privacy", "--receipts", "off")) == {
        "receipts": False,
        "typing": True,
    }
    await cli.ok("alice", "send", channel, "unseen")
    await cli.ok("bob", "recv")
    await cli.ok("bob", "history", channel)
    await cli.ok("alice", "recv")
    (chan,) = await cli.ok("alice", "channels")
    assert chan["seen"] == [["bob", mid]]

    # delete: a tombstone on both devices, and the text is in no file of either profile
    gone = await cli.ok("alice", "delete", channel, mid)
    assert gone["deleted"] and gone["text"] == "" and gone["reactions"] == []
    await cli.ok("bob", "recv")
    hist = _by_id(await cli.ok("bob", "history", channel))
    assert hist[mid]["deleted"] and hist[mid]["text"] == ""
    text = await cli.run("bob", "history", channel, json_out=False)
    assert "(message deleted)" in text.out and "* bob waves" in text.out
    res = await cli.run("bob", "delete", channel, reply["msg_id"] + "00")
    assert res.rc != 0 and "not a message id" in res.err
