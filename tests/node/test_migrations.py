"""Migrations: an empty database, and a version-1 database holding data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import migrations
from node.store import DeviceRecord
from node.store.sqlite import SqliteStore
from proto.errors import StaleEpoch

A = b"a" * 32
B = b"b" * 32


def _ledger(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return [
            (int(v), str(n))
            for v, n in db.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        ]


def test_loader_orders_and_checks() -> None:
    found = migrations.load("sqlite")
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "001_initial.sql"
    assert found[1].name == "002_add_seq.sql"


async def test_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    store = await SqliteStore.open(path)
    await store.close()
    assert _ledger(path) == [
        (1, "001_initial.sql"),
        (2, "002_add_seq.sql"),
        (3, "003_channel_log.sql"),
        (4, "004_channel_welcomes.sql"),
        (5, "005_tree_parts.sql"),
    ]
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {
        "accounts",
        "opaque_records",
        "sessions",
        "devices",
        "key_packages",
        "last_resort_key_packages",
        "messages",
        "channels",
        "delivery_seq_counters",
        "node_secrets",
        "channel_payloads",
        "channel_tree_parts",
    } <= tables
    store = await SqliteStore.open(path)  # re-opening applies nothing new
    await store.close()
    assert len(_ledger(path)) == 5


async def test_version_one_database_with_data(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    v1 = migrations.load("sqlite")[0]
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"
        )
        db.executescript(v1.sql)
        db.execute("INSERT INTO schema_migrations VALUES (1, '001_initial.sql', 0)")
        db.execute("INSERT INTO accounts VALUES ('alice', 1)")
        db.execute("INSERT INTO opaque_records VALUES ('alice', x'0102')")
        db.execute("INSERT INTO sessions VALUES (x'aa', 'alice', ?, 1, 99999999999999)", (A,))
        db.execute("INSERT INTO devices VALUES (?, 'alice', x'11', x'22', NULL, 1)", (A,))
        db.execute("INSERT INTO key_packages (device_id, package) VALUES (?, x'33')", (A,))
        db.execute("INSERT INTO last_resort_key_packages VALUES (?, x'44')", (A,))
        db.execute("INSERT INTO channels VALUES (x'67', 7, 1)")
        # interleave two inboxes so per-inbox numbering is exercised
        for i, rcpt in enumerate([A, B, A, B, A]):
            db.execute(
                "INSERT INTO messages (recipient, channel_id, payload, created_ms)"
                " VALUES (?, x'63', ?, 1)",
                (rcpt, f"m{i}".encode()),
            )
    db.close()

    store = await SqliteStore.open(path)
    try:
        assert _ledger(path) == [
            (1, "001_initial.sql"),
            (2, "002_add_seq.sql"),
            (3, "003_channel_log.sql"),
            (4, "004_channel_welcomes.sql"),
            (5, "005_tree_parts.sql"),
        ]
        got_a = await store.fetch(A, 0, 10)
        got_b = await store.fetch(B, 0, 10)
        assert [(e.seq, e.data) for e in got_a] == [(1, b"m0"), (2, b"m2"), (3, b"m4")]
        assert [(e.seq, e.data) for e in got_b] == [(1, b"m1"), (2, b"m3")]
        assert await store.enqueue(A, b"c", b"next", 2, 1000) == 4
        assert await store.enqueue(B, b"c", b"next", 2, 1000) == 3
        assert await store.get_password_file("alice") == b"\x01\x02"
        session = await store.get_session(b"\xaa")
        assert session is not None and session.device_id == A
        assert await store.get_device(A) == DeviceRecord(
            device_id=A,
            username="alice",
            hybrid_key=b"\x11",
            signature=b"\x22",
            access_key_hash=None,
        )
        assert await store.consume_key_package(A) == (b"\x33", False)
        assert await store.consume_key_package(A) == (b"\x44", True)
        with pytest.raises(StaleEpoch):  # channel b"g" survived at epoch 7
            await store.enqueue_commit(b"g", 6, [], 3, 1000)
        assert (await store.enqueue_commit(b"g", 7, [], 3, 1000)).new_epoch == 8
    finally:
        await store.close()
