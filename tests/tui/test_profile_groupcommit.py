"""Group commit of the client database: many writes, one transaction, each caller told."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from proto.crypto.atrest import FAST_TEST_PARAMS
from proto.dbwriter import BatchWriter
from proto.errors import ProfileError
from tui.client.dbwriter import GroupWriter
from tui.client.profile import ChatMessage, Profile

CHANNEL = b"\x01channel-one"


def _msg(text: str) -> ChatMessage:
    return ChatMessage(
        channel_id=CHANNEL, sender=b"\x02" * 32, sender_name="alice", timestamp_ms=1, text=text
    )


async def test_concurrent_appends_share_commits_and_keep_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await Profile.create(tmp_path, "pp", kdf=FAST_TEST_PARAMS) as p:
        batches: list[int] = []
        run = BatchWriter._commit

        def counting(self: BatchWriter, units: list[Any], mode: str) -> list[tuple[bool, Any]]:
            batches.append(len(units))
            return run(self, units, mode)

        monkeypatch.setattr(BatchWriter, "_commit", counting)
        ids = await asyncio.gather(*(p.append_message(_msg(f"m{i}")) for i in range(40)))
        assert ids == sorted(ids) and len(set(ids)) == 40  # call order = history order
        assert sum(batches) == 40 and len(batches) < 40  # commits were shared
        assert [m.text for m in await p.list_messages(CHANNEL)] == [f"m{i}" for i in range(40)]
    async with await Profile.open(tmp_path, "pp") as p:  # committed, durable
        assert len(await p.list_messages(CHANNEL)) == 40


async def test_a_failing_write_does_not_fail_its_batch(tmp_path: Path) -> None:
    async with await Profile.create(tmp_path, "pp", kdf=FAST_TEST_PARAMS) as p:

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO secrets (name, value) VALUES ('x', x'01')")
            conn.execute("INSERT INTO nowhere VALUES (1)")

        good = p.append_message(_msg("kept"))
        failing = p._write.write(bad)
        secret = p.put_secret("s", b"v")
        results = await asyncio.gather(good, failing, secret, return_exceptions=True)
        assert isinstance(results[0], int)
        assert isinstance(results[1], ProfileError)
        assert results[2] is None
        assert await p.get_secret("x") is None  # the failing write was rolled back alone
        assert await p.get_secret("s") == b"v"
        assert [m.text for m in await p.list_messages(CHANNEL)] == ["kept"]


async def test_close_waits_for_queued_writes_then_refuses(tmp_path: Path) -> None:
    p = await Profile.create(tmp_path, "pp", kdf=FAST_TEST_PARAMS)
    fut = p.queue_message(_msg("last"))
    await p.close()
    assert fut.done() and isinstance(fut.result(), int)
    with pytest.raises(ProfileError):
        await p.append_message(_msg("late"))
    async with await Profile.open(tmp_path, "pp") as p2:
        assert [m.text for m in await p2.list_messages(CHANNEL)] == ["last"]


async def test_closed_writer_refuses(tmp_path: Path) -> None:
    async with await Profile.create(tmp_path, "pp", kdf=FAST_TEST_PARAMS):
        writer = await GroupWriter.open(tmp_path / "client.db")
        await writer.close()
        with pytest.raises(ProfileError):
            writer.submit(lambda conn: None)


def _sync_mode(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA synchronous").fetchone()
    return int(row[0])  # 1 = NORMAL (no fsync at commit), 2 = FULL (WAL fsynced)


async def test_history_appends_are_crash_safe_and_a_durable_write_syncs_the_batch(
    tmp_path: Path,
) -> None:
    async with await Profile.create(tmp_path, "pp", kdf=FAST_TEST_PARAMS) as p:
        writer = p._write
        # alone, a history append commits NORMAL: no fsync on the receive path
        await p.append_message(_msg("first"))
        assert await writer.write(_sync_mode, durable=False) == 1
        # any durable write makes its whole batch (appends included) commit FULL
        append = p.append_message(_msg("second"))
        mode_seen_by_append_batch = writer.write(_sync_mode, durable=False)
        durable = p.put_secret("s", b"v")
        results = await asyncio.gather(append, mode_seen_by_append_batch, durable)
        assert results[1] == 2
        # state, secrets and keys are durable by default
        assert await writer.write(_sync_mode) == 2


async def test_crash_safe_batches_run_inline_and_durable_ones_on_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from proto import dbwriter

    checkpoints: list[int] = []
    real_checkpoint = dbwriter._checkpoint

    def counting_checkpoint(raw: sqlite3.Connection) -> None:
        checkpoints.append(threading.get_ident())
        real_checkpoint(raw)

    monkeypatch.setattr(dbwriter, "_checkpoint", counting_checkpoint)

    def thread_id(conn: sqlite3.Connection) -> int:
        return threading.get_ident()

    loop_thread = threading.get_ident()
    async with await Profile.create(tmp_path, "pp", kdf=FAST_TEST_PARAMS) as p:
        writer = p._write
        shared = writer.shared
        monkeypatch.setattr(
            shared, "_config", dataclasses.replace(shared.config, checkpoint_every=4)
        )
        # automatic checkpoints (which fsync) are off; the writer runs its own
        assert shared._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert await writer.write(thread_id, durable=False) == loop_thread
        assert await writer.write(thread_id) != loop_thread
        for i in range(8):
            await p.append_message(_msg(f"m{i}"))
        assert len(checkpoints) >= 2 and loop_thread not in checkpoints
        assert len(await p.list_messages(CHANNEL)) == 8
