"""Ordering and atomicity under concurrency, through the real RPC, on both
store backends (the ``node`` fixture here is the backend-parametrised one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from node.embedded import EmbeddedNode
from proto.codec import Recipient
from proto.errors import StaleEpoch
from tests.node.helpers import Account, make_account

pytestmark = pytest.mark.network


@pytest.fixture
async def node(backend_node: EmbeddedNode) -> AsyncIterator[EmbeddedNode]:
    yield backend_node


async def _close(*accounts: Account) -> None:
    for a in accounts:
        await a.client.close()


async def test_twenty_concurrent_senders_get_gapless_seqs(node: EmbeddedNode) -> None:
    inbox = await make_account(node, "inbox")
    senders = await asyncio.gather(*(make_account(node, f"sender{i}") for i in range(20)))
    try:

        async def send(a: Account) -> list[tuple[int, bytes]]:
            out = []
            for i in range(10):  # one sender's messages in order, senders concurrently
                payload = f"{a.username}:{i}".encode()
                r = await a.client.enqueue(
                    recipient=inbox.device_id, channel_id=b"c", payload=payload
                )
                out.append((r.seq, payload))
            return out

        per_sender = await asyncio.gather(*(send(a) for a in senders))
        results = [item for items in per_sender for item in items]
        # each sender saw its own seqs strictly increase
        for a in senders:
            own = [seq for seq, p in results if p.startswith(a.username.encode() + b":")]
            assert own == sorted(own) and len(set(own)) == len(own)
        seqs = sorted(seq for seq, _ in results)
        assert seqs == list(range(1, 201))  # no gaps, no duplicates
        got = await inbox.client.fetch(after_seq=0, limit=500)
        assert [e.seq for e in got.envelopes] == seqs  # fetch order = seq order
        by_seq = dict(results)
        assert all(by_seq[e.seq] == e.data for e in got.envelopes)
    finally:
        await _close(inbox, *senders)


async def test_fifty_concurrent_key_package_fetches(node: EmbeddedNode) -> None:
    owner = await make_account(node, "owner")
    fetchers = await asyncio.gather(*(make_account(node, f"fetcher{i}") for i in range(5)))
    try:
        packages = [f"kp{i}".encode() for i in range(30)]
        await owner.client.upload_key_packages(packages=packages, last_resort=b"last")
        results = await asyncio.gather(
            *(
                fetchers[i % 5].client.fetch_key_package(
                    username="owner", device_id=owner.device_id
                )
                for i in range(50)
            )
        )
        one_time = [r.package for r in results if not r.last_resort]
        assert sorted(one_time) == sorted(packages)  # each handed out exactly once
        assert [r.package for r in results if r.last_resort] == [b"last"] * 20
        count = await owner.client.key_package_count()
        assert (count.count, count.has_last_resort) == (0, True)
    finally:
        await _close(owner, *fetchers)


async def test_commit_race_has_one_winner(node: EmbeddedNode) -> None:
    members = await asyncio.gather(*(make_account(node, f"member{i}") for i in range(4)))
    try:

        async def commit(i: int) -> int | None:
            me = members[i]
            fanout = [
                Recipient(recipient=m.device_id, payload=f"commit-by-{i}".encode())
                for m in members
                if m is not me
            ]
            try:
                r = await me.client.enqueue_commit(channel_id=b"group", epoch=5, fanout=fanout)
            except StaleEpoch:
                return None
            assert r.new_epoch == 6
            return i

        for _round in range(3):
            outcomes = await asyncio.gather(commit(0), commit(1))
            winners = [o for o in outcomes if o is not None]
            if _round == 0:
                assert len(winners) == 1
                winner = winners[0]
            else:
                assert winners == []  # epoch 5 is gone for good
        for m in members:
            got = await m.client.fetch(after_seq=0, limit=100)
            expected = [] if m is members[winner] else [f"commit-by-{winner}".encode()]
            assert [e.data for e in got.envelopes] == expected
    finally:
        await _close(*members)
