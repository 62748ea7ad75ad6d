"""Local history search: the in-memory index over the encrypted store."""

from __future__ import annotations

from pathlib import Path

from proto.crypto.atrest import FAST_TEST_PARAMS
from tui.client.profile import ChatMessage, Profile
from tui.client.search import IndexedMessage, SearchIndex

PASS = "correct horse battery staple"
ONE = b"\x01channel-one"
TWO = b"\x02channel-two"


def _msg(text: str, channel: bytes = ONE) -> ChatMessage:
    return ChatMessage(
        channel_id=channel, sender=b"\x02" * 32, sender_name="bob", timestamp_ms=1, text=text
    )


def test_index_matches_every_word_newest_first_and_forgets() -> None:
    index = SearchIndex()
    texts = ["Deploy at noon", "the redeploy FAILED", "lunch?", "deploy failed again"]
    index.add(
        IndexedMessage(local_id=i + 1, channel_tag=b"t", folded=t.casefold())
        for i, t in enumerate(texts)
    )
    assert [i for i, _ in index.search("deploy")] == [4, 2, 1]
    assert [i for i, _ in index.search("failed DEPLOY")] == [4, 2]
    assert index.search("deploy", limit=1) == [(4, b"t")]
    assert index.search("   ") == [] and index.search("nothing") == []
    assert index.search("deploy", channel_tag=b"other") == []
    index.forget(4)  # deleted: never returned again
    assert [i for i, _ in index.search("failed")] == [2]
    index.replace(3, "lunch at the deploy party")  # edited: the new text is searched
    assert [i for i, _ in index.search("deploy party")] == [3]
    assert index.search("lunch?") == []
    assert len(index) == 3


async def test_profile_search_catches_up_and_scopes(tmp_path: Path) -> None:
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        await p.append_message(_msg("Zebra crossing"))
        await p.append_message(_msg("zebra in channel two", TWO))
        found = await p.search_messages("ZEBRA", [ONE, TWO])
        assert [(m.text, m.channel_id) for m in found] == [
            ("zebra in channel two", TWO),
            ("Zebra crossing", ONE),
        ]
        assert found[0].sender_name == "bob" and found[0].local_id == 2
        new_id = await p.append_message(_msg("a third zebra"))
        found = await p.search_messages("zebra", [ONE, TWO], channel_id=ONE)
        assert [m.local_id for m in found] == [new_id, 1]
        # channels the caller does not know (left, forgotten) are not returned
        assert [m.text for m in await p.search_messages("two", [ONE])] == []
        # the delete hook (called in the scrubbing transaction) forgets it
        await p._write.write(lambda conn: p.forget_indexed(conn, b"", new_id))
        assert [m.local_id for m in await p.search_messages("zebra", [ONE])] == [1]


async def test_no_plaintext_in_profile_dir_after_indexing(tmp_path: Path) -> None:
    words = [b"quetzalcoatl", b"xylophone", b"Marmalade"]
    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        for i in range(200):
            await p.append_message(_msg(f"quetzalcoatl plays the xylophone {i} Marmalade"))
        assert len(await p.search_messages("xylophone marmalade", [ONE], limit=500)) == 200
        # live files (WAL not checkpointed) and after close
        _assert_absent(tmp_path, words)
    _assert_absent(tmp_path, words)


def _assert_absent(path: Path, needles: list[bytes]) -> None:
    blobs = {f.name: f.read_bytes().lower() for f in path.rglob("*") if f.is_file()}
    assert "client.db" in blobs
    for name, blob in blobs.items():
        for needle in needles:
            assert needle.lower() not in blob, f"{needle!r} found in {name}"


async def test_rewritten_record_never_returns_old_text(tmp_path: Path) -> None:
    import dataclasses

    from tui.client.profile import _encode_message

    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        local_id = await p.append_message(_msg("old secret words"))
        assert len(await p.search_messages("secret", [ONE])) == 1
        # rewrite the stored record in place (what an edit or a delete does)
        tag = p._channel_tag(ONE)
        new = dataclasses.replace(_msg("new text"), local_id=local_id)
        record = p._keys.records.encrypt(
            _encode_message(new), table="messages", column="record", row=p._row(tag, local_id)
        )
        await p._write.write(
            lambda c: c.execute("UPDATE messages SET record = ? WHERE id = ?", (record, local_id))
        )
        assert await p.search_messages("secret", [ONE]) == []
        assert [m.text for m in await p.search_messages("new", [ONE])] == ["new text"]


async def test_delete_and_edit_update_the_index(tmp_path: Path) -> None:
    import dataclasses

    from tui.client.profile import MessageChange

    async with await Profile.create(tmp_path, PASS, kdf=FAST_TEST_PARAMS) as p:
        gone = dataclasses.replace(_msg("the launch codes are 1234"), msg_id=b"\x01" * 16)
        kept = dataclasses.replace(_msg("launch party friday"), msg_id=b"\x02" * 16)
        gone_id = await p.append_message(gone)
        kept_id = await p.append_message(kept)
        assert len(await p.search_messages("launch", [ONE])) == 2
        # a delete (scrub) forgets it in the index itself, in its transaction
        assert await p.scrub_message(ONE, gone.msg_id) is not None
        assert [i for i, _ in p.search_index.search("launch")] == [kept_id]
        assert [m.local_id for m in await p.search_messages("codes", [ONE])] == []
        # an edit by the author replaces the indexed text
        edit = MessageChange(
            channel_id=ONE, target=kept.msg_id, actor="bob", kind="edit", text="picnic saturday"
        )
        assert await p.apply_change(edit) is not None
        assert p.search_index.search("launch") == []
        assert [m.text for m in await p.search_messages("picnic", [ONE])] == ["picnic saturday"]
        assert gone_id not in [i for i, _ in p.search_index.search("the")]
