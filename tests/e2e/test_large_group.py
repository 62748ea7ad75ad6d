"""A group past 64 members through the real engine and a real node.

Every application message and commit is uploaded once (channel log) and the
invite of more devices than the node's old per-request limit allowed works
in one call; removed members can neither read nor post afterwards. The node
runs on each store backend in turn (SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.embedded import EmbeddedNode, start_embedded_node
from proto.errors import MlsError, PermissionDenied
from proto.rpc_client import RpcClient
from tests.e2e.helpers import new_user, node_on_backend
from tests.node.backends import BACKENDS
from tests.node.helpers import node_config
from tui.client.engine import Engine
from tui.client.sending import post_key

pytestmark = [pytest.mark.network]

SIZE = 66


@pytest.fixture(params=BACKENDS)
async def big_node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EmbeddedNode]:
    """A node on each store backend with default limits except connections
    per address: every device of this test connects from 127.0.0.1."""
    async with node_on_backend(
        request.param, tmp_path, max_connections_per_address=4 * SIZE
    ) as handle:
        yield handle


@pytest.mark.slow
async def test_group_past_64_members_with_removals(
    big_node: EmbeddedNode, tmp_path: Path, engines: list[Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = big_node
    names = [f"u{i:03d}" for i in range(SIZE)]
    users: list[Engine] = []
    for start in range(0, SIZE, 8):  # a few handshakes at a time on a busy box
        users += await asyncio.gather(
            *(new_user(node, tmp_path, n) for n in names[start : start + 8])
        )
    engines += users
    owner, rest = users[0], users[1:]
    chan = (await owner.create_group("big")).id
    cid = bytes.fromhex(chan)
    # grow: a few first, then everyone else in one invite (65 devices at once)
    await owner.invite(chan, names[1:4])
    await owner.invite(chan, names[4:])
    await asyncio.gather(*(e.sync() for e in rest))
    assert len(await owner.members(chan)) == SIZE
    for e in rest:
        assert len(await e.members(chan)) == SIZE

    # one upload per message, whatever the group size
    calls: list[dict[str, Any]] = []
    original = RpcClient.post_channel

    async def spy(self: RpcClient, **kw: Any) -> Any:
        calls.append(kw)
        return await original(self, **kw)

    monkeypatch.setattr(RpcClient, "post_channel", spy)
    await rest[10].send(chan, "hello everyone")
    # the recipients packed: 32 B per device (docs/PROTOCOL.md, "Channel logs")
    assert len(calls) == 1 and len(calls[0]["recipient_ids"]) == 32 * (SIZE - 1)
    got = await asyncio.gather(*(e.sync() for e in users if e is not rest[10]))
    assert all([m.text for m in g] == ["hello everyone"] for g in got)

    # remove two members; they keep the key they held
    gone = rest[-2:]
    old_keys = [post_key(e.mls.load_group(cid)) for e in gone]
    await owner.remove(chan, [e.user for e in gone])
    stay = [e for e in users if e not in gone]
    await asyncio.gather(*(e.sync() for e in users))
    for e in gone:
        assert not next(c for c in await e.channels() if c.id == chan).active
    await stay[5].send(chan, "after the removal")
    got = await asyncio.gather(*(e.sync() for e in stay if e is not stay[5]))
    assert all([m.text for m in g] == ["after the removal"] for g in got)
    for e, key in zip(gone, old_keys, strict=True):
        # nothing new reaches their inbox, their MLS state derives nothing,
        # and the key they held posts nothing
        assert await e.sync() == []
        raw = await (await e.rpc()).fetch(after_seq=e.state.cursor, limit=10)
        assert raw.envelopes == ()
        with pytest.raises(MlsError):
            post_key(e.mls.load_group(cid))
        with pytest.raises(PermissionDenied):
            await original(
                await e.rpc(),
                channel_id=cid,
                post_key=key,
                recipients=[owner.device_id],
                payload=b"\x00\x01junk",
                auth=b"",
            )


async def test_an_invite_too_large_for_one_commit_is_split(
    tmp_path: Path, engines: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """With a small commit limit the engine splits the invite, never failing it."""
    node = await start_embedded_node(node_config(tmp_path / "node", max_commit_bytes=18 * 1024))
    try:
        names = [f"sp{i}x" for i in range(9)]
        users = [await new_user(node, tmp_path, n) for n in names]
        engines += users
        chan = (await users[0].create_group("split")).id
        caplog.set_level("INFO", logger="tui.client.engine")
        await users[0].invite(chan, names[1:])  # 8 devices: too large at once
        assert "devices per commit" in caplog.text
        await asyncio.gather(*(e.sync() for e in users[1:]))
        for e in users:
            assert len(await e.members(chan)) == 9
        await users[3].send(chan, "all here")
        got = await asyncio.gather(*(e.sync() for e in users if e is not users[3]))
        assert all([m.text for m in g] == ["all here"] for g in got)
    finally:
        for e in engines:
            await e.close()
        engines.clear()
        await node.stop()
