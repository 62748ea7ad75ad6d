"""The MLS undo copy (tui/client/undo.py) against a real OpenMLS state file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from proto import mls
from tui.client.undo import UNDO_FILE, MlsUndo

GID = b"g" * 16


def _client(path: Path, key: bytes) -> mls.Client:
    return (
        mls.Client.open(str(path), key)
        if path.exists()
        else mls.Client.create(str(path), key, b"me")
    )


def test_an_uncommitted_batch_is_rolled_back(tmp_path: Path) -> None:
    db, key = tmp_path / "mls.db", os.urandom(32)
    client = _client(db, key)
    client.create_group(GID)
    undo = MlsUndo(db)
    undo.take(5)
    assert undo.held and stat.S_IMODE((tmp_path / UNDO_FILE).stat().st_mode) == 0o600
    group = client.load_group(GID)
    group.self_update()
    group.merge_pending_commit()
    assert group.epoch == 1
    client.close()  # the "crash": the batch never committed, the cursor is still 5
    assert MlsUndo(db).recover(5)
    again = _client(db, key)
    assert again.load_group(GID).epoch == 0  # as before the batch
    assert not (tmp_path / UNDO_FILE).exists()
    # The restored file can be copied again (the marker table was dropped).
    MlsUndo(db).take(6)
    again.close()


def test_a_committed_batch_keeps_its_state(tmp_path: Path) -> None:
    db, key = tmp_path / "mls.db", os.urandom(32)
    client = _client(db, key)
    client.create_group(GID)
    MlsUndo(db).take(5)
    group = client.load_group(GID)
    group.self_update()
    group.merge_pending_commit()
    client.close()
    # The batch committed (cursor 7) but the copy was not deleted yet.
    assert not MlsUndo(db).recover(7)
    assert not (tmp_path / UNDO_FILE).exists()
    assert _client(db, key).load_group(GID).epoch == 1


def test_an_unfinished_copy_is_ignored(tmp_path: Path) -> None:
    db, key = tmp_path / "mls.db", os.urandom(32)
    _client(db, key).close()
    (tmp_path / (UNDO_FILE + ".tmp")).write_bytes(b"torn")
    assert not MlsUndo(db).recover(0)
    (tmp_path / UNDO_FILE).write_bytes(b"not sqlite")
    assert not MlsUndo(db).recover(0)
    assert not (tmp_path / UNDO_FILE).exists()
    MlsUndo(db).take(1)  # a stale .tmp does not block the next copy
