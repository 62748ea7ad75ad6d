"""In-process wake-ups for fetchWait subscribers, one channel per inbox.

The delivery service calls :meth:`InboxNotifier.notify` after an enqueue has
committed. A multi-node backend (PostgreSQL LISTEN/NOTIFY) would call it from
its listener too; subscribers don't care where a wake-up came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class InboxNotifier:
    """Maps inbox (recipient device id) -> the events of its waiting subscribers."""

    def __init__(self) -> None:
        self._waiters: dict[bytes, set[asyncio.Event]] = {}

    @contextmanager
    def subscribe(self, recipient: bytes) -> Iterator[asyncio.Event]:
        """Register a subscriber; the event is set on every notify for ``recipient``.

        The subscriber clears the event *before* reading the inbox and waits on
        it afterwards, so a notify in between is never lost.
        """
        event = asyncio.Event()
        self._waiters.setdefault(recipient, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(recipient)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[recipient]

    def notify(self, recipient: bytes) -> None:
        """Wake every subscriber of ``recipient``."""
        for event in self._waiters.get(recipient, ()):
            event.set()

    def count(self, recipient: bytes) -> int:
        """Subscribers of one inbox."""
        return len(self._waiters.get(recipient, ()))

    def total(self) -> int:
        """Subscribers of all inboxes."""
        return sum(len(w) for w in self._waiters.values())
