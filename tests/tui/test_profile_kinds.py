"""The history store's message ids, changes (edit, react, delete) and scrubbing."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from proto.crypto.atrest import FAST_TEST_PARAMS
from tui.client.profile import CLIENT_DB, ChatMessage, MessageChange, Profile

PASS = "correct horse battery staple"
CHANNEL = b"\x01channel-one"
MID = bytes(range(16))


def _msg(text: str, mid: bytes = MID, sender: str = "alice") -> ChatMessage:
    return ChatMessage(
        channel_id=CHANNEL,
        sender=b"\x02" * 32,
        sender_name=sender,
        timestamp_ms=1,
        text=text,
        msg_id=mid,
    )


def _change(kind: str, actor: str, **kw: str) -> MessageChange:
    return MessageChange(channel_id=CHANNEL, target=MID, actor=actor, kind=kind, **kw)


async def test_edit_react_delete_follow_the_rules(tmp_path: Path) -> None:
    p = await Profile.create(tmp_path / "p", PASS, kdf=FAST_TEST_PARAMS)
    try:
        await p.append_message(_msg("secret plans"))
        # another member cannot edit or delete alice's message
        assert await p.apply_change(_change("edit", "mallory", text="x")) is None
        assert await p.apply_change(_change("delete", "mallory")) is None
        edited = await p.apply_change(_change("edit", "alice", text="secret plans v2"))
        assert edited is not None and edited.edited and edited.text == "secret plans v2"
        await p.apply_change(_change("react", "bob", emoji="👍"))
        await p.apply_change(_change("react", "carol", emoji="👍"))
        await p.apply_change(_change("react", "bob", emoji="❤"))
        await p.apply_change(_change("unreact", "carol", emoji="👍"))
        (stored,) = await p.list_messages(CHANNEL)
        assert stored.reactions == (("👍", ("bob",)), ("❤", ("bob",)))
        # an unknown target changes nothing
        other = MessageChange(channel_id=CHANNEL, target=b"\x09" * 16, actor="alice", kind="delete")
        assert await p.apply_change(other) is None
        # a change and the message in one batch: the change applies after the append
        second = _msg("in one batch", mid=b"\7" * 16)
        ids, changed = await p.commit_batch(
            [second],
            [dataclasses.replace(_change("react", "bob", emoji="🎉"), target=b"\7" * 16)],
            "x",
            b"state",
        )
        assert len(ids) == 1 and changed[0].reactions == (("🎉", ("bob",)),)
    finally:
        await p.close()


async def test_delete_scrubs_the_text_and_runs_the_hooks(tmp_path: Path) -> None:
    p = await Profile.create(tmp_path / "p", PASS, kdf=FAST_TEST_PARAMS)
    seen: list[int] = []
    try:
        # a stand-in for a search index: its own table of message rows
        await p._write.write(lambda c: c.execute("CREATE TABLE idx (local_id INTEGER)"))
        local = await p.append_message(_msg("to be forgotten"))
        await p._write.write(lambda c: c.execute("INSERT INTO idx VALUES (?)", (local,)))

        def hook(conn: sqlite3.Connection, tag: bytes, local_id: int) -> None:
            seen.append(local_id)
            conn.execute("DELETE FROM idx WHERE local_id = ?", (local_id,))

        p.add_scrub_hook(hook)
        with sqlite3.connect(tmp_path / "p" / CLIENT_DB) as db:
            (before,) = db.execute("SELECT record FROM messages").fetchone()
        gone = await p.apply_change(_change("delete", "alice"))
        assert gone is not None and gone.deleted and gone.text == "" and seen == [local]
        (stored,) = await p.list_messages(CHANNEL)
        assert stored.deleted and stored.text == "" and stored.msg_id == MID
        # a deleted message takes no more changes
        assert await p.apply_change(_change("edit", "alice", text="back")) is None
        assert await p.scrub_message(CHANNEL, b"\5" * 16) is None
    finally:
        await p.close()
    with sqlite3.connect(tmp_path / "p" / CLIENT_DB) as db:
        assert db.execute("SELECT count(*) FROM idx").fetchone() == (0,)
    # the old ciphertext of the text is overwritten on disk (secure_delete, checkpointed)
    for f in (tmp_path / "p").iterdir():
        assert bytes(before) not in f.read_bytes(), f.name


async def test_an_old_history_is_migrated(tmp_path: Path) -> None:
    p = await Profile.create(tmp_path / "p", PASS, kdf=FAST_TEST_PARAMS)
    await p.append_message(dataclasses.replace(_msg("old"), msg_id=b""))
    await p.close()
    with sqlite3.connect(tmp_path / "p" / CLIENT_DB) as db:  # back to the first schema
        db.execute("DROP INDEX messages_by_mid")
        db.execute("ALTER TABLE messages DROP COLUMN mid_tag")
        db.execute("PRAGMA user_version = 0")
    p = await Profile.open(tmp_path / "p", PASS)
    try:
        await p.append_message(_msg("new"))
        old, new = await p.list_messages(CHANNEL)
        assert (old.text, old.msg_id, new.text) == ("old", b"", "new")
        assert (await p.find_message(CHANNEL, MID)) == new
    finally:
        await p.close()
    with sqlite3.connect(tmp_path / "p" / CLIENT_DB) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
