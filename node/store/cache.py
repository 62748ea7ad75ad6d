"""A small LRU cache that knows when it was invalidated."""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A bounded LRU map with a generation counter bumped on every invalidation.

    Read-through use: note :attr:`generation` before reading the backing
    store, then :meth:`put` with that generation; if any invalidation happened
    meanwhile the value is not cached, so a read that raced a write cannot
    re-cache the old row.
    """

    def __init__(self, max_entries: int) -> None:
        """Args: the most entries kept (least recently used go first)."""
        self._max = max_entries
        self._data: collections.OrderedDict[K, V] = collections.OrderedDict()
        self.generation = 0
        """Bumped by every :meth:`invalidate`."""

    def get(self, key: K) -> V | None:
        """The cached value, or None."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V, generation: int) -> None:
        """Cache ``value`` unless an invalidation happened since ``generation``."""
        if generation != self.generation:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def invalidate(self, key: K | None = None) -> None:
        """Drop ``key`` (or everything) and bump the generation."""
        self.generation += 1
        if key is None:
            self._data.clear()
        else:
            self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)
