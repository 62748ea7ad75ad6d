"""The persistent search index: encrypted segments inside the client store.

Real profiles (SQLite, AEAD records); each reopening is what a new ``qpc
search`` process does.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from proto.crypto.atrest import FAST_TEST_PARAMS
from tui.client.profile import CLIENT_DB, ChatMessage, MessageChange, Profile
from tui.client.search import SEGMENT_ROWS, SegmentDamaged, decode_segment, encode_segment

PASS = "correct horse battery staple"
ONE = b"\x01channel-one"
TWO = b"\x02channel-two"
K = SEGMENT_ROWS


def _msg(i: int, text: str | None = None, channel: bytes = ONE) -> ChatMessage:
    return ChatMessage(
        channel_id=channel,
        sender=b"\x02" * 32,
        sender_name="bob",
        timestamp_ms=i,
        text=f"filler line {i}" if text is None else text,
        msg_id=i.to_bytes(16, "big"),
    )


async def _fill(p: Profile, start: int, n: int, special: dict[int, str] | None = None) -> None:
    special = special or {}
    futs = [
        p.queue_message(_msg(i, special.get(i), TWO if i % 3 == 0 else ONE))
        for i in range(start, start + n)
    ]
    for f in futs:
        await f


def _segments(path: Path) -> list[tuple[int, int, bytes]]:
    with sqlite3.connect(path / CLIENT_DB) as db:
        return [
            (int(a), int(b), bytes(c))
            for a, b, c in db.execute(
                "SELECT first_id, last_id, blob FROM search_segments ORDER BY first_id"
            )
        ]


def _segment_texts(p: Profile, path: Path) -> list[str]:
    out: list[str] = []
    for first, last, blob in _segments(path):
        out.extend(p._open_segment(first, last, blob)[2])
    return out


class _CountDecrypts:
    """Counts history records decrypted one by one (what segments avoid)."""

    def __init__(self, p: Profile, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = p._decrypt_text

        def counted(local_id: int, tag: bytes, blob: bytes) -> str:
            self.n += 1
            return real(local_id, tag, blob)

        monkeypatch.setattr(p, "_decrypt_text", counted)


def test_segment_codec_round_trip_and_damage() -> None:
    ids, tags = [3, 4, 9], [b"a" * 32, b"b" * 32, b"a" * 32]
    texts = ["zebra\ncrossing", "", "日本語のテキスト"]
    got = decode_segment(encode_segment(ids, tags, texts))
    # a newline becomes a space (query words have no whitespace: same matches)
    assert got == (ids, tags, ["zebra crossing", "", "日本語のテキスト"])
    assert decode_segment(encode_segment([], [], [])) == ([], [], [])
    good = encode_segment(ids, tags, texts)
    for bad in (b"", b"XXXX" + good[4:], good[:20], good[:-3] + b"\xff\xfe\xfd", good + b"\n"):
        with pytest.raises(SegmentDamaged):
            decode_segment(bad)


async def test_writes_seal_segments_and_a_new_process_decrypts_only_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 3 * K + 10
    special = {5: "Zanzibar trip", K + 7: "the zanzibar photos", n - 2: "ZANZIBAR again"}
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await _fill(p, 1, n, special)
        assert p.search_segments_through == 3 * K
    assert [(a, b) for a, b, _ in _segments(tmp_path)] == [
        (1, K),
        (K + 1, 2 * K),
        (2 * K + 1, 3 * K),
    ]
    async with await Profile.open(tmp_path, PASS) as p:
        counter = _CountDecrypts(p, monkeypatch)
        found = await p.search_messages("zanzibar", [ONE, TWO])
        assert [m.text for m in found] == ["ZANZIBAR again", "the zanzibar photos", "Zanzibar trip"]
        assert counter.n == 10  # the unsealed tail only
        got = await p.search_messages("filler line 77", [ONE, TWO], limit=1000)
        assert sorted(m.local_id for m in got) == [
            i for i in range(1, n + 1) if "77" in str(i) and i not in special
        ]


async def test_search_seals_the_tail_of_a_history_without_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history stored without the index (an older profile) is indexed once, by
    the first search; writes in between do not stall on it."""
    n = 3 * K + 5
    async with await Profile.create(
        tmp_path, PASS, kdf=FAST_TEST_PARAMS, persist_search_index=False
    ) as p:
        await _fill(p, 1, n, {2: "needle one"})
    assert _segments(tmp_path) == []
    async with await Profile.open(tmp_path, PASS) as p:
        await p.append_message(_msg(n + 1, "needle two"))
        assert _segments(tmp_path) == []  # a write does not rebuild
        found = await p.search_messages("needle", [ONE, TWO])
        assert [m.text for m in found] == ["needle two", "needle one"]
        assert p.search_segments_through == 3 * K
    async with await Profile.open(tmp_path, PASS) as p:
        counter = _CountDecrypts(p, monkeypatch)
        assert len(await p.search_messages("needle", [ONE, TWO])) == 2
        assert counter.n == 6
        # from now on writes seal as they go
        await _fill(p, n + 2, K)
        assert p.search_segments_through == 4 * K


async def test_delete_and_edit_rewrite_the_segment_and_leave_no_trace(tmp_path: Path) -> None:
    n = K + 20
    special = {10: "the launch codes are 4711", 11: "launch party friday", n - 1: "launch tail"}
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await _fill(p, 1, n, special)
    ((_, _, sealed_before),) = _segments(tmp_path)
    async with await Profile.open(tmp_path, PASS) as p:
        assert len(await p.search_messages("launch", [ONE, TWO])) == 3
        # delete a sealed message and a tail message; edit a sealed one
        assert await p.scrub_message(ONE, (10).to_bytes(16, "big")) is not None
        assert await p.scrub_message(ONE, (n - 1).to_bytes(16, "big")) is not None
        edit = MessageChange(
            channel_id=TWO if 11 % 3 == 0 else ONE,
            target=(11).to_bytes(16, "big"),
            actor="bob",
            kind="edit",
            text="Picnic Saturday",
        )
        assert await p.apply_change(edit) is not None
        texts = _segment_texts(p, tmp_path)
        assert not [t for t in texts if "launch" in t or "4711" in t]
        assert "picnic saturday" in texts and "filler line 12" in texts
        assert await p.search_messages("launch", [ONE, TWO]) == []
    # the old segment's ciphertext is on no file (secure_delete, WAL purged)
    for f in tmp_path.iterdir():
        if f.is_file():
            assert sealed_before not in f.read_bytes(), f.name
    async with await Profile.open(tmp_path, PASS) as p:  # a new process
        assert await p.search_messages("launch", [ONE, TWO]) == []
        assert await p.search_messages("4711", [ONE, TWO]) == []
        assert [m.local_id for m in await p.search_messages("picnic", [ONE, TWO])] == [11]
        # the tail message was deleted before it was sealed: sealing leaves it out
        await _fill(p, n + 1, K)
        assert not [t for t in _segment_texts(p, tmp_path) if "launch" in t]


@pytest.mark.parametrize("damage", ["flip", "gap", "garbage", "moved"])
async def test_a_damaged_index_is_rebuilt_never_used(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    n = 3 * K + 3
    special = {K + 4: "quokka one", 2 * K + 9: "quokka two", n: "quokka three"}
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await _fill(p, 1, n, special)
        records = p._keys.records
    segs = _segments(tmp_path)
    with sqlite3.connect(tmp_path / CLIENT_DB) as db:
        first, last, blob = segs[1]
        if damage == "flip":
            flipped = bytearray(blob)
            flipped[30] ^= 0x40
            db.execute(
                "UPDATE search_segments SET blob = ? WHERE first_id = ?", (bytes(flipped), first)
            )
        elif damage == "gap":
            db.execute("DELETE FROM search_segments WHERE first_id = ?", (first,))
        elif damage == "garbage":  # authentic ciphertext of bytes that are not a segment
            junk = records.encrypt(
                b"QSI1 not a segment",
                table="search_segments",
                column="blob",
                row=Profile._segment_row(first, last),
            )
            db.execute("UPDATE search_segments SET blob = ? WHERE first_id = ?", (junk, first))
        else:  # another segment's (authentic) ciphertext copied over
            db.execute(
                "UPDATE search_segments SET blob = ? WHERE first_id = ?", (segs[2][2], first)
            )
    async with await Profile.open(tmp_path, PASS) as p:
        found = await p.search_messages("quokka", [ONE, TWO])
        assert [m.text for m in found] == ["quokka three", "quokka two", "quokka one"]
        assert "search index damaged" in caplog.text
        assert p.search_segments_through == 3 * K
        assert len(_segment_texts(p, tmp_path)) == 3 * K  # every segment opens again
    async with await Profile.open(tmp_path, PASS) as p:
        assert len(await p.search_messages("quokka", [ONE, TWO])) == 3


async def test_a_damaged_segment_met_by_a_delete_is_rebuilt(tmp_path: Path) -> None:
    n = K + 1
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await _fill(p, 1, n, {4: "walrus secret", 5: "walrus public"})
    ((first, _, blob),) = _segments(tmp_path)
    with sqlite3.connect(tmp_path / CLIENT_DB) as db:
        db.execute("UPDATE search_segments SET blob = ? WHERE first_id = ?", (blob[:-1], first))
    async with await Profile.open(tmp_path, PASS) as p:
        assert await p.scrub_message(ONE, (4).to_bytes(16, "big")) is not None
        texts = _segment_texts(p, tmp_path)
        assert "walrus public" in texts and "walrus secret" not in texts
        assert [m.local_id for m in await p.search_messages("walrus", [ONE, TWO])] == [5]


async def test_segments_hold_only_what_the_store_holds(tmp_path: Path) -> None:
    """A record rewritten behind this process's back (not through an edit) is
    sealed as stored, not as this process last saw it."""
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await _fill(p, 1, 5, {4: "stale words"})
        tag = p._channel_tag(ONE)
        from tui.client.profile import _encode_message

        new = dataclasses.replace(_msg(4, "fresh words"), local_id=4)
        record = p._keys.records.encrypt(
            _encode_message(new), table="messages", column="record", row=p._row(tag, 4)
        )
        await p._write.write(
            lambda c: c.execute("UPDATE messages SET record = ? WHERE id = 4", (record,))
        )
        await _fill(p, 6, K)
        texts = _segment_texts(p, tmp_path)
        assert "fresh words" in texts and "stale words" not in texts


async def test_no_plaintext_on_disk_with_sealed_segments(tmp_path: Path) -> None:
    words = [b"quetzalcoatl", b"xylophone", b"marmalade"]
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await _fill(
            p, 1, 2 * K + 7, {i: f"quetzalcoatl xylophone {i} marmalade" for i in range(1, 600)}
        )
        assert p.search_segments_through == 2 * K
        assert (
            len(await p.search_messages("xylophone marmalade", [ONE, TWO], limit=1000)) == 2 * K + 7
        )
        for f in tmp_path.rglob("*"):
            if f.is_file():
                blob = f.read_bytes().lower()
                assert not [w for w in words if w in blob], f.name


async def test_a_tampered_history_record_never_blocks_a_write(tmp_path: Path) -> None:
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await _fill(p, 1, 5)
    with sqlite3.connect(tmp_path / CLIENT_DB) as db:
        db.execute("UPDATE messages SET record = x'00' WHERE id = 2")
    async with await Profile.open(tmp_path, PASS) as p:
        await _fill(p, 6, K)  # the seal cannot read row 2: the writes still commit
        assert p.search_segments_through == 0
    with sqlite3.connect(tmp_path / CLIENT_DB) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (K + 5,)
