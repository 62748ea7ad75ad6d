"""Outbox: messages written while the node is down are sent when it is back."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.embedded import EmbeddedNode, start_embedded_node
from tests.e2e.helpers import group_of
from tests.node.helpers import node_config
from tui.client import api
from tui.client.engine import Engine

pytestmark = [pytest.mark.network]


async def test_offline_messages_wait_in_the_outbox(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob"], reconnect_wait_s=1.0)
    engines += members
    alice, bob = members
    port = node.port
    await node.stop()
    first = await alice.send(chan, "written offline 1")
    second = await alice.send(chan, "written offline 2")
    assert first.state == second.state == api.DeliveryState.PENDING
    assert alice.connection_state().outbox_count == 2
    assert [m.state for m in await alice.history(chan) if not m.system] == [
        api.DeliveryState.PENDING
    ] * 2

    again = await start_embedded_node(node_config(tmp_path / "node", port=port))
    try:
        await alice.sync()  # reconnects and flushes the outbox in order
        assert alice.connection_state().outbox_count == 0
        assert [m.state for m in await alice.history(chan) if not m.system] == [
            api.DeliveryState.SENT
        ] * 2
        got = await bob.sync()
        assert [m.text for m in got] == ["written offline 1", "written offline 2"]
    finally:
        await again.stop()
