"""Search over the local history: an index that lives in memory only.

The client database stores every message as an AEAD record (see
:mod:`tui.client.profile`); SQLite sees ciphertext only. An on-disk full-text
index (FTS5) would write every word of every message in plaintext into
``client.db`` and its WAL, and a keyed token index would still leak which
messages share words and how often. So the index is built in memory from the
decrypted records, the first time a search runs, and caught up
incrementally (only rows newer than the last indexed id are decrypted) on
every later search. Nothing about it touches the disk.

Matching is case-insensitive substring search on every word of the query
(all words must occur, in any order), which works the same for every script
(no tokeniser that splits Chinese or Thai wrong) and finds ``deploy`` in
``redeployed``. A linear scan over 100,000 messages takes a few
milliseconds (``bench/search.py``); the text is kept casefolded in one list
per channel, so a search is one ``in`` test per message.

Deletes and edits rewrite a stored record: whoever does that calls
:meth:`SearchIndex.forget` (or :meth:`SearchIndex.replace`) for the local id
so the index never returns text that is gone from the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["IndexedMessage", "SearchIndex", "query_terms"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexedMessage:
    """What the index keeps of one stored message."""

    local_id: int
    channel_tag: bytes
    """The channel's blind index (as stored; the caller maps it to a channel)."""
    folded: str
    """The text, casefolded."""


def query_terms(query: str) -> list[str]:
    """The casefolded words of ``query`` (empty: matches nothing)."""
    return [w for w in query.casefold().split() if w]


@dataclass(slots=True)
class SearchIndex:
    """Casefolded text of every stored message, by local id (see module docstring)."""

    last_id: int = 0
    """Highest local id indexed (rows above it are caught up on the next search)."""
    _ids: list[int] = field(default_factory=list)
    _tags: list[bytes] = field(default_factory=list)
    _texts: list[str] = field(default_factory=list)
    _gone: set[int] = field(default_factory=set)
    _patched: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._ids) - len(self._gone)

    def add(self, messages: Iterable[IndexedMessage]) -> None:
        """Index ``messages`` (ascending local ids above :attr:`last_id`)."""
        for m in messages:
            if m.local_id <= self.last_id:
                continue
            self._ids.append(m.local_id)
            self._tags.append(m.channel_tag)
            self._texts.append(m.folded)
            self.last_id = m.local_id

    def forget(self, local_id: int) -> None:
        """Drop a message (deleted): it is never returned again."""
        self._gone.add(local_id)
        self._patched.pop(local_id, None)

    def replace(self, local_id: int, text: str) -> None:
        """A message's text changed (edited): search the new text."""
        self._patched[local_id] = text.casefold()

    def search(
        self, query: str, *, channel_tag: bytes | None = None, limit: int = 50
    ) -> list[tuple[int, bytes]]:
        """``(local_id, channel_tag)`` of the newest ``limit`` matches, newest first."""
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        out: list[tuple[int, bytes]] = []
        ids, tags, texts = self._ids, self._tags, self._texts
        gone, patched = self._gone, self._patched
        first, rest = terms[0], terms[1:]
        for i in range(len(ids) - 1, -1, -1):
            text = texts[i]
            if patched:
                text = patched.get(ids[i], text)
            if first not in text:
                continue
            if channel_tag is not None and tags[i] != channel_tag:
                continue
            if gone and ids[i] in gone:
                continue
            if rest and any(t not in text for t in rest):
                continue
            out.append((ids[i], tags[i]))
            if len(out) >= limit:
                break
        return out
