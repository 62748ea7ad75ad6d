"""Tree chains (docs/PROTOCOL.md, "Tree deltas"): per channel, one sealed tree
part per epoch, a base (the whole tree) or a delta; a joiner fetches the latest
base at or before its epoch and the deltas after it.

Every test runs on both store backends (``backend`` in conftest.py: SQLite
in a temp dir, PostgreSQL in a fresh schema). The node never opens a part, so
the parts here are opaque bytes; tests/e2e/test_tree_deltas.py joins real
members from real ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from node.embedded import EmbeddedNode
from node.store import Store, TreePart, WelcomeParts, WelcomeTree
from node.store.base import MAX_TREE_DELTAS, MIN_DELTA_BUDGET
from proto.errors import BadRequest, TreeBaseRequired
from tests.node.backends import Backend
from tests.node.helpers import make_account
from tests.node.test_channel_log import scalar

A, B, C, D = b"a" * 32, b"b" * 32, b"c" * 32, b"d" * 32
CH = b"chan-tree"
PARTS = "SELECT COUNT(*) FROM channel_tree_parts"


def key(epoch: int) -> bytes:
    return hashlib.sha256(b"k%d" % epoch).digest()


def h(k: bytes) -> bytes:
    return hashlib.sha256(k).digest()


@pytest.fixture
async def store(any_store: Store) -> AsyncIterator[Store]:
    yield any_store


def base(data: bytes) -> TreePart:
    return TreePart(data=data, base=True)


def delta(data: bytes) -> TreePart:
    return TreePart(data=data, base=False)


async def step(
    store: Store,
    epoch: int,
    tree: TreePart | None,
    *,
    joiners: tuple[bytes, ...] = (),
    now: int = 1,
) -> None:
    """Commit ``epoch`` -> ``epoch + 1`` as A (members: B) with ``tree``, then
    set the new epoch's key; with ``joiners``, a Welcome by reference."""
    parts = None
    if joiners:
        parts = WelcomeParts(
            group_info=b"gi%d" % (epoch + 1), entries=tuple(b"\x02" for _ in joiners)
        )
    r = await store.commit_channel(
        CH,
        epoch,
        h(key(epoch)) if epoch else None,
        A,
        b"commit%d" % epoch,
        [B],
        b"",
        list(joiners),
        now,
        1000,
        parts=parts,
        tree=tree,
    )
    assert r.new_epoch == epoch + 1
    await store.set_channel_key(CH, epoch + 1, A, h(key(epoch + 1)))


async def test_joiner_gets_the_base_and_the_deltas_after_it(store: Store) -> None:
    await step(store, 0, base(b"T1"))
    await step(store, 1, delta(b"d2"))
    await step(store, 2, delta(b"d3"), joiners=(C,))
    assert await store.fetch_welcome(CH, 3, C) == WelcomeTree(
        group_info=b"gi3", ratchet_tree=b"T1", tree_deltas=(b"d2", b"d3")
    )
    # a later base starts a new chain: a joiner of epoch 5 gets T4 and d5
    await step(store, 3, base(b"T4"))
    await step(store, 4, delta(b"d5"), joiners=(D,))
    assert await store.fetch_welcome(CH, 5, D) == WelcomeTree(
        group_info=b"gi5", ratchet_tree=b"T4", tree_deltas=(b"d5",)
    )
    # C's Welcome (epoch 3) still needs T1, d2, d3 though a newer base exists
    assert await store.fetch_welcome(CH, 3, C) == WelcomeTree(
        group_info=b"gi3", ratchet_tree=b"T1", tree_deltas=(b"d2", b"d3")
    )
    assert await store.fetch_welcome(CH, 5, C) is None  # not its Welcome
    assert await store.fetch_welcome(CH, 4, D) is None  # no Welcome at epoch 4


async def test_delta_needs_an_unbroken_chain(store: Store, backend: Backend) -> None:
    with pytest.raises(TreeBaseRequired):  # a new channel has no chain
        await step(store, 0, delta(b"d1"))
    assert await scalar(backend, "SELECT COUNT(*) FROM channels") == 0  # nothing stored
    await step(store, 0, base(b"T1"))  # the same commit with the whole tree
    await step(store, 1, delta(b"d2"))
    await step(store, 2, None)  # a commit without a part breaks the chain
    assert await scalar(backend, PARTS) == 0  # no Welcome needs the old chain
    with pytest.raises(TreeBaseRequired):
        await step(store, 3, delta(b"d4"), joiners=(C,))
    # nothing of the refused commit was stored: no epoch bump, no inbox entry
    assert await store.fetch(B, 0, 10) != [] and await store.fetch(C, 0, 10) == []
    assert [e.data for e in await store.fetch(B, 0, 10)][-1] == b"commit2"
    await step(store, 3, base(b"T4"), joiners=(C,))
    assert await store.fetch_welcome(CH, 4, C) == WelcomeTree(
        group_info=b"gi4", ratchet_tree=b"T4", tree_deltas=()
    )


async def test_chain_length_is_bounded(store: Store) -> None:
    await step(store, 0, base(b"T"))
    for e in range(1, MAX_TREE_DELTAS + 1):
        await step(store, e, delta(b"d"))
    with pytest.raises(TreeBaseRequired):
        await step(store, MAX_TREE_DELTAS + 1, delta(b"d"))
    await step(store, MAX_TREE_DELTAS + 1, base(b"T"))
    await step(store, MAX_TREE_DELTAS + 2, delta(b"d"))


async def test_chain_bytes_are_bounded(store: Store) -> None:
    """Deltas after a base may add up to max(base bytes, MIN_DELTA_BUDGET)."""
    await step(store, 0, base(b"T"))
    await step(store, 1, delta(b"x" * (MIN_DELTA_BUDGET - 10)))
    await step(store, 2, delta(b"x" * 10))
    with pytest.raises(TreeBaseRequired):
        await step(store, 3, delta(b"x"))
    big = MIN_DELTA_BUDGET + 1000
    await step(store, 3, base(b"T" * big))
    await step(store, 4, delta(b"x" * (big - 1)))
    await step(store, 5, delta(b"x"))
    with pytest.raises(TreeBaseRequired):
        await step(store, 6, delta(b"x"))


async def test_old_parts_live_while_a_welcome_needs_them(store: Store, backend: Backend) -> None:
    await step(store, 0, base(b"T1"))
    await step(store, 1, delta(b"d2"), joiners=(C,))
    await step(store, 2, delta(b"d3"))
    await step(store, 3, base(b"T4"))
    # T1 and d2 for C's Welcome (epoch 2); d3 is needed by nobody
    assert await scalar(backend, PARTS) == 3
    assert await scalar(backend, "SELECT COUNT(*) FROM channel_welcomes") == 1
    assert await scalar(backend, "SELECT MAX(length(ratchet_tree)) FROM channel_welcomes") == 0
    await store.ack(C, 10)
    assert await scalar(backend, PARTS) == 1  # the current chain: T4
    assert await store.fetch_welcome(CH, 2, C) is None


async def test_retention_drops_idle_chains_not_live_ones(store: Store, backend: Backend) -> None:
    await step(store, 0, base(b"T1"), now=1)
    await step(store, 1, delta(b"d2"), joiners=(C,), now=2)
    await store.purge_messages(2)  # C's Welcome (stored at 2) stays, the chain too
    assert await scalar(backend, PARTS) == 2
    await step(store, 2, delta(b"d3"), now=50)
    await store.purge_messages(10)  # C's Welcome goes; the chain is current
    assert await store.fetch_welcome(CH, 2, C) is None
    assert await scalar(backend, PARTS) == 3
    await store.purge_messages(100)  # no commit since 50: the idle chain goes
    assert await scalar(backend, PARTS) == 0
    with pytest.raises(TreeBaseRequired):
        await step(store, 3, delta(b"d4"), now=101)
    await step(store, 3, base(b"T4"), now=101)


# ------------------------------------------------------------- over the wire


async def test_tree_parts_over_the_wire(backend_node: EmbeddedNode) -> None:
    """treeDelta / treeDeltas on the wire, typed errors for bad combinations."""
    alice = await make_account(backend_node, "alice")
    bob = await make_account(backend_node, "bob")
    carol = await make_account(backend_node, "carol")
    try:
        k1 = b"1" * 32
        with pytest.raises(TreeBaseRequired):  # a new channel: send the whole tree
            await alice.client.commit_channel(
                channel_id=CH, epoch=0, post_key=b"", commit=b"c0",
                members=[bob.device_id], tree_delta=b"\x02d1",
            )  # fmt: skip
        await alice.client.commit_channel(
            channel_id=CH, epoch=0, post_key=b"", commit=b"c0",
            members=[bob.device_id], ratchet_tree=b"\x01T1",
        )  # fmt: skip
        await alice.client.set_channel_key(channel_id=CH, epoch=1, key_hash=h(k1))
        for bad in (
            {"ratchet_tree": b"\x01T", "tree_delta": b"\x02d"},  # both
            {"group_info": b"gi", "joiner_entries": [b"\x02e"]},  # by reference without a part
        ):
            with pytest.raises(BadRequest):
                await alice.client.commit_channel(
                    channel_id=CH, epoch=1, post_key=k1, commit=b"c1",
                    members=[bob.device_id], joiners=[carol.device_id], **bad,
                )  # fmt: skip
        await alice.client.commit_channel(
            channel_id=CH, epoch=1, post_key=k1, commit=b"c1", members=[bob.device_id],
            joiners=[carol.device_id], group_info=b"gi", joiner_entries=[b"\x02e"],
            tree_delta=b"\x02d2",
        )  # fmt: skip
        res = await carol.client.fetch_welcome(channel_id=CH, epoch=2)
        assert (res.group_info, res.ratchet_tree, res.tree_deltas) == (
            b"gi",
            b"\x01T1",
            (b"\x02d2",),
        )
    finally:
        for a in (alice, bob, carol):
            await a.client.close()
