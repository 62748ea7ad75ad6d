"""Search over the local history: an in-memory index and its encrypted segments.

The client database stores every message as an AEAD record (see
:mod:`tui.client.profile`); SQLite sees ciphertext only. An on-disk full-text
index (FTS5) would write every word of every message in plaintext into
``client.db`` and its WAL, and a keyed token index would still leak which
messages share words and how often. So a search runs over casefolded text
held in memory (:class:`SearchIndex`), and what is kept on disk is that same
text in **segments**: the casefolded text of :data:`SEGMENT_ROWS` consecutive
history rows packed into one value (:func:`encode_segment`) that the profile
encrypts like any other record (table ``search_segments``). Loading the index
in a new process decrypts a few hundred segments instead of every message;
rows above the last segment are decrypted one by one (fewer than
:data:`SEGMENT_ROWS` in the steady state).

Matching is case-insensitive substring search on every word of the query
(all words must occur, in any order), which works the same for every script
(no tokeniser that splits Chinese or Thai wrong) and finds ``deploy`` in
``redeployed``. A linear scan over 100,000 messages takes a few
milliseconds (``bench/search.py``); the text is kept casefolded in one list
per channel, so a search is one ``in`` test per message.

Deletes and edits rewrite a stored record: whoever does that calls
:meth:`SearchIndex.forget` (or :meth:`SearchIndex.replace`) for the local id
so the index never returns text that is gone from the store, and rewrites the
segment holding the row in the same transaction (see
:meth:`tui.client.profile.Profile.search_messages`).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "SEGMENT_ROWS",
    "IndexedMessage",
    "SearchIndex",
    "SegmentDamaged",
    "decode_segment",
    "encode_segment",
    "query_terms",
]

SEGMENT_ROWS = 256
"""History rows per sealed segment: a delete or edit rewrites one segment
(~15 KiB), and a new process decrypts at most this many rows one by one."""

_MAGIC = b"QSI1"
_HEAD = struct.Struct("<4sIH")


class SegmentDamaged(ValueError):
    """A decrypted segment does not parse (a bug or a format from elsewhere)."""


def _le(a: array) -> array:  # type: ignore[type-arg]
    if sys.byteorder == "big":  # pragma: no cover (little-endian hosts only in CI)
        a.byteswap()
    return a


def encode_segment(ids: Sequence[int], tags: Sequence[bytes], texts: Sequence[str]) -> bytes:
    """Pack parallel lists (ascending local ids, channel tags, casefolded text).

    A newline inside a text becomes a space: query words never contain
    whitespace, so no match changes, and the texts can be joined by newlines.
    """
    table: dict[bytes, int] = {}
    idx = array("H", (table.setdefault(t, len(table)) for t in tags))
    if len(table) > 0xFFFF:  # pragma: no cover (at most SEGMENT_ROWS rows)
        raise ValueError("too many channels in one segment")
    out = [_HEAD.pack(_MAGIC, len(ids), len(table))]
    out.extend(bytes([len(t)]) + t for t in table)
    out.append(_le(array("q", ids)).tobytes())
    out.append(_le(idx).tobytes())
    out.append("\n".join(t.replace("\n", " ") for t in texts).encode())
    return b"".join(out)


def decode_segment(data: bytes) -> tuple[list[int], list[bytes], list[str]]:
    """The inverse of :func:`encode_segment`.

    Raises:
        SegmentDamaged: the bytes are not a segment of this format.
    """
    try:
        magic, n, n_tags = _HEAD.unpack_from(data)
        if magic != _MAGIC:
            raise SegmentDamaged("not a search segment")
        view = memoryview(data)
        pos = _HEAD.size
        table = []
        for _ in range(n_tags):
            size = data[pos]
            table.append(bytes(view[pos + 1 : pos + 1 + size]))
            pos += 1 + size
        ids, idx = array("q"), array("H")
        ids.frombytes(view[pos : pos + 8 * n])
        _le(ids)
        pos += 8 * n
        idx.frombytes(view[pos : pos + 2 * n])
        _le(idx)
        pos += 2 * n
        texts = str(view[pos:], "utf-8").split("\n") if n else []
        if len(ids) != n or len(idx) != n or len(texts) != n:
            raise SegmentDamaged("segment lengths disagree")
        tags = [table[i] for i in idx]
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, SegmentDamaged):
            raise
        raise SegmentDamaged("damaged search segment") from exc
    return ids.tolist(), tags, texts


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

    def extend(
        self, ids: Sequence[int], tags: Sequence[bytes], texts: Sequence[str], *, through: int
    ) -> None:
        """Index a decoded segment: ascending ``ids`` above :attr:`last_id`, covering
        every stored row up to ``through`` (rows without text are not listed)."""
        if ids and ids[0] <= self.last_id:
            raise ValueError("segment overlaps the index")
        self._ids.extend(ids)
        self._tags.extend(tags)
        self._texts.extend(texts)
        self.last_id = max(self.last_id, through)

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
