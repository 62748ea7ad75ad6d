"""Typing notices and read receipts between real engines: live events, coalescing,
the privacy switches (a real node, real MLS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode
from proto import appdata
from tests.e2e.helpers import group_of
from tui.client import api
from tui.client.engine import Engine

pytestmark = [pytest.mark.network]


async def _next(events: AsyncIterator[api.EngineEvent], kind: type) -> api.EngineEvent:
    async with asyncio.timeout(20):
        async for ev in events:
            if isinstance(ev, kind):
                return ev
    raise AssertionError("event stream ended")


def _count_sent(engine: Engine) -> list[str]:
    """Record the kind of every application record ``engine`` sends."""
    sent: list[str] = []
    original = engine.outbox.send_app

    async def send_app(
        channel: bytes, item: appdata.Known, only: set[str] | None = None
    ) -> set[str]:
        sent.append(type(item).__name__)
        return await original(channel, item, only)

    engine.outbox.send_app = send_app  # type: ignore[method-assign]
    return sent


async def test_typing_and_receipts_are_live_coalesced_and_off_able(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    (alice, bob), channel = await group_of(node, tmp_path, ["alice", "bob"])
    engines += [alice, bob]
    events = alice.events()
    bob_sent = _count_sent(bob)

    # typing: one notice, the second within TYPING_EVERY_S is not sent
    await bob.typing(channel)
    await bob.typing(channel)
    typing = await _next(events, api.TypingChanged)
    assert typing == api.TypingChanged(channel=channel, users=("bob",))
    assert bob_sent == ["Typing"]

    # receipts: bob reads two messages at once -> one receipt naming the newest
    await alice.send(channel, "one")
    second = await alice.send(channel, "two")
    await bob.sync()
    await bob.mark_read(channel)
    seen = await _next(events, api.ReceiptsChanged)
    assert seen == api.ReceiptsChanged(channel=channel, seen=(("bob", second.msg_id),))
    await bob.mark_read(channel)  # same position: nothing sent
    assert bob_sent == ["Typing", "Receipt"]
    # a new position within RECEIPT_EVERY_S waits for the interval, then goes out
    third = await alice.send(channel, "three")
    await bob.sync()
    await bob.mark_read(channel)
    assert bob_sent == ["Typing", "Receipt"]
    seen = await _next(events, api.ReceiptsChanged)
    assert seen == api.ReceiptsChanged(channel=channel, seen=(("bob", third.msg_id),))
    assert bob_sent == ["Typing", "Receipt", "Receipt"]
    (info,) = [c for c in await alice.channels() if c.id == channel]
    assert info.seen == (("bob", third.msg_id),)

    # off: neither is sent any more (and the setting is saved with the profile)
    assert await bob.set_privacy(receipts=False, typing=False) == api.Privacy(
        receipts=False, typing=False
    )
    await alice.send(channel, "four")
    await bob.sync()
    await bob.mark_read(channel)
    await bob.typing(channel)
    assert bob_sent == ["Typing", "Receipt", "Receipt"]
    assert not bob.state.send_receipts and not bob.state.send_typing


async def test_a_member_cannot_edit_or_delete_another_members_message(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    (alice, bob, carol), channel = await group_of(node, tmp_path, ["alice", "bob", "carol"])
    engines += [alice, bob, carol]
    msg = await alice.send(channel, "the plan")
    await bob.sync()
    await carol.sync()
    target = bytes.fromhex(msg.msg_id)
    # bob's client is modified: it sends an edit and a delete of alice's message
    cid = bytes.fromhex(channel)
    async with bob.mutex:
        await bob.outbox.send_app(cid, appdata.Edit(target=target, text="hijacked", ts=1))
        await bob.outbox.send_app(cid, appdata.Delete(target=target))
    for reader in (alice, carol):
        await reader.sync()
        hist = await reader.history(channel)
        by_text = {m.text: m for m in hist}
        assert by_text["the plan"].msg_id == msg.msg_id
        assert not by_text["the plan"].edited and not by_text["the plan"].deleted
    # alice's own edit goes through on every device
    await alice.edit(channel, msg.msg_id, "the new plan")
    await carol.sync()
    (m,) = [m for m in await carol.history(channel) if m.msg_id == msg.msg_id]
    assert (m.text, m.edited) == ("the new plan", True)
