"""In-process wake-ups for fetchWait subscribers, one channel per inbox.

The delivery service calls :meth:`InboxNotifier.notify` after an enqueue has
committed, handing over the stored envelopes so a subscriber can usually push
them without reading the inbox again. The PostgreSQL store calls it from its
LISTEN connection for inboxes other node processes wrote to, without
envelopes: subscribers then read the inbox; and :meth:`InboxNotifier.notify_all`
when notifications may have been missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from node.store import StoredEnvelope

MAX_PENDING = 256
"""Envelopes kept per subscriber between wake-ups; beyond that it reads the inbox."""


class Subscriber:
    """One waiting fetchWait: an event plus the envelopes announced since it last looked."""

    __slots__ = ("_overflow", "_pending", "event")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        """Set on every notify for the inbox."""
        self._pending: list[StoredEnvelope] = []
        self._overflow = False

    def _offer(self, envelopes: Sequence[StoredEnvelope]) -> None:
        if not envelopes or len(self._pending) + len(envelopes) > MAX_PENDING:
            self._overflow = True
        else:
            self._pending.extend(envelopes)
        self.event.set()

    def take(self, cursor: int) -> list[StoredEnvelope] | None:
        """Clear the event and return the announced envelopes after ``cursor``.

        Returns None when they are not known to be complete (an announcement
        without envelopes, too many, or a gap after ``cursor``): then the
        caller must read the inbox. Call before reading, so a notify that
        arrives meanwhile sets the event again.
        """
        self.event.clear()
        pending, overflow = self._pending, self._overflow
        self._pending, self._overflow = [], False
        if overflow:
            return None
        fresh = sorted((e for e in pending if e.seq > cursor), key=lambda e: e.seq)
        expected = cursor + 1
        for e in fresh:
            if e.seq != expected:
                return None  # an enqueue committed but not yet announced: read the inbox
            expected += 1
        return fresh


class InboxNotifier:
    """Maps inbox (recipient device id) -> its waiting subscribers."""

    def __init__(self) -> None:
        self._waiters: dict[bytes, set[Subscriber]] = {}

    @contextmanager
    def subscribe(self, recipient: bytes) -> Iterator[Subscriber]:
        """Register a subscriber of ``recipient`` for the duration of the block."""
        sub = Subscriber()
        self._waiters.setdefault(recipient, set()).add(sub)
        try:
            yield sub
        finally:
            waiters = self._waiters.get(recipient)
            if waiters is not None:
                waiters.discard(sub)
                if not waiters:
                    del self._waiters[recipient]

    def notify(self, recipient: bytes, envelopes: Sequence[StoredEnvelope] = ()) -> None:
        """Wake every subscriber of ``recipient``, announcing the new (committed) envelopes."""
        for sub in self._waiters.get(recipient, ()):
            sub._offer(envelopes)

    def notify_all(self) -> None:
        """Wake every subscriber of every inbox, announcing nothing (they re-read)."""
        for waiters in self._waiters.values():
            for sub in waiters:
                sub._offer(())

    def count(self, recipient: bytes) -> int:
        """Subscribers of one inbox."""
        return len(self._waiters.get(recipient, ()))

    def total(self) -> int:
        """Subscribers of all inboxes."""
        return sum(len(w) for w in self._waiters.values())
