"""The in-process notifier: announced envelopes, gaps, overflow."""

from __future__ import annotations

from node.notify import MAX_PENDING, InboxNotifier
from node.store import StoredEnvelope

R = b"r" * 32


def env(seq: int) -> StoredEnvelope:
    return StoredEnvelope(seq=seq, channel_id=b"c", data=b"%d" % seq)


async def test_announced_envelopes_in_order() -> None:
    n = InboxNotifier()
    with n.subscribe(R) as sub:
        assert n.count(R) == 1 and n.total() == 1
        n.notify(R, [env(7)])
        n.notify(R, [env(5), env(6)])  # handlers may resume out of seq order
        n.notify(b"x" * 32, [env(1)])  # another inbox
        assert sub.event.is_set()
        assert [e.seq for e in sub.take(4) or []] == [5, 6, 7]
        assert not sub.event.is_set()
        n.notify(R, [env(3), env(8)])  # already-seen seqs are dropped
        assert [e.seq for e in sub.take(7) or []] == [8]
    assert n.total() == 0


async def test_gap_or_bare_notify_means_read_the_inbox() -> None:
    n = InboxNotifier()
    with n.subscribe(R) as sub:
        n.notify(R, [env(6)])
        assert sub.take(4) is None  # seq 5 committed but not announced yet
        n.notify(R)
        assert sub.take(4) is None  # e.g. from another node
        n.notify(R, [env(i) for i in range(5, 5 + MAX_PENDING + 1)])
        assert sub.take(4) is None  # too many to keep
        assert sub.take(4) == []  # nothing new since
