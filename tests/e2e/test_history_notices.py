"""Join/leave/added/removed/topic notices are system entries in each device's
encrypted history: written when the commit is processed, listed by
``qpc history`` after a restart (every ``qpc`` is a fresh process), marked
``system`` in ``--json``, never unread, never searchable."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import Cli

pytestmark = [pytest.mark.slow, pytest.mark.network]


def _lines(hist: list[dict[str, Any]]) -> list[str]:
    return [("-- " if m["system"] else f"{m['sender']}: ") + m["text"] for m in hist]


async def test_notices_are_stored_in_every_history(cli: Cli) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        await cli.ok(name, "register", name)
    channel = (await cli.ok("alice", "create-group", "team"))["id"]
    await cli.ok("alice", "invite", channel, "bob", "carol")
    await cli.ok("bob", "join")
    await cli.ok("carol", "join")
    await cli.ok("alice", "send", channel, "welcome both")
    await cli.ok("alice", "invite", channel, "dave")  # a member joins
    await cli.ok("dave", "join")
    await cli.ok("alice", "remove", channel, "carol")  # one is removed
    await cli.ok("bob", "recv")
    await cli.ok("bob", "topic", channel, "plans")
    for name in ("alice", "bob", "carol", "dave"):
        await cli.ok(name, "recv")

    alice = await cli.ok("alice", "history", channel)
    assert _lines(alice) == [
        "-- alice added bob, carol",
        "alice: welcome both",
        "-- alice added dave",
        "-- alice removed carol",
        "-- bob set the topic: plans",
    ]
    notices = [m for m in alice if m["system"]]
    assert all(m["msg_id"] == "" and not m["outgoing"] for m in notices)
    assert _lines(await cli.ok("bob", "history", channel)) == [
        "-- bob joined",
        "alice: welcome both",
        "-- alice added dave",
        "-- alice removed carol",
        "-- bob set the topic: plans",
    ]
    assert _lines(await cli.ok("dave", "history", channel)) == [
        "-- dave joined",
        "-- alice removed carol",
        "-- bob set the topic: plans",
    ]
    # carol's history ends with her removal (she sees no later topic).
    assert _lines(await cli.ok("carol", "history", channel)) == [
        "-- carol joined",
        "alice: welcome both",
        "-- alice added dave",
        "-- alice removed carol",
    ]
    # Not unread, not someone's searchable text; the plain CLI shows them.
    (chan,) = [c for c in await cli.ok("bob", "channels") if c["id"] == channel]
    assert chan["unread"] == 0
    assert await cli.ok("bob", "search", "removed") == []
    assert await cli.ok("bob", "search", "welcome") != []
    plain = await cli.run("bob", "history", channel, json_out=False)
    assert plain.rc == 0 and "-- alice removed carol" in plain.out

    # A leave: bob proposes his removal, alice's client commits it ("left").
    await cli.ok("bob", "leave", channel)
    await cli.ok("alice", "recv")
    await cli.ok("dave", "recv")
    assert _lines(await cli.ok("alice", "history", channel))[-1] == "-- bob left"
    assert _lines(await cli.ok("dave", "history", channel))[-1] == "-- bob left"
