"""The MLS undo copy: makes a received batch's MLS changes and its history one commit.

The MLS binding commits each operation (``Group.process``,
``Client.join_from_welcome``) in its own SQLite transaction in ``mls.db``,
and that same call is the only way to get the plaintext: decrypting *is*
advancing the stored group state (the message key is deleted). The history
and the delivery cursor live in ``client.db``. Two files cannot share one
transaction, so the inbox makes the pair atomic with an undo copy:

1. before the batch's first MLS operation, :meth:`MlsUndo.take` copies
   ``mls.db`` (SQLite online backup of a consistent snapshot) to
   ``mls.undo`` together with the cursor it belongs to, fsynced, by rename;
2. the MLS operations run (each one commits in ``mls.db``);
3. the batch's messages and the engine state (with the new cursor) commit in
   one durable ``client.db`` transaction
   (:meth:`tui.client.profile.Profile.commit_received`);
4. :meth:`MlsUndo.discard` deletes the copy; then the node is acked.

On start (:meth:`MlsUndo.recover`, before the MLS client is opened): a copy
whose cursor equals the saved cursor belongs to a batch whose step 3 never
committed, so ``mls.db`` is replaced by it, and the node, never acked,
delivers the batch again into the same MLS state. A copy with an older
cursor belongs to a batch that did commit: it is deleted. So a crash (or a
power cut: steps 1 and 3 are fsynced) at any point leaves either the whole
batch (MLS state, history, cursor) or none of it.

Cost: one copy of ``mls.db`` and two fsyncs per received batch that touches
MLS. The copy holds the pre-batch secrets for the batch's duration only.
This seam is meant to be replaced by a binding that writes the plaintext in
the same transaction as the MLS state (see docs/CLIENT.md, "Durability").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from proto.errors import ProfileError

__all__ = ["UNDO_FILE", "MlsUndo"]

log = logging.getLogger("tui.client.undo")

UNDO_FILE = "mls.undo"
"""The undo copy of ``mls.db`` inside the profile (exists only during a batch)."""


class MlsUndo:
    """The undo copy of one profile's ``mls.db`` (see module docstring)."""

    def __init__(self, mls_db: Path) -> None:
        """The copy for the MLS state file ``mls_db`` (kept beside it)."""
        self._db = mls_db
        self._undo = mls_db.with_name(UNDO_FILE)
        self.held = False
        """Whether a copy for the current batch exists."""

    def take(self, cursor: int) -> None:
        """Copy ``mls.db`` as it is now, for the batch after ``cursor`` (durable).

        Raises:
            ProfileError: the copy could not be written.
        """
        tmp = self._undo.with_name(UNDO_FILE + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            src = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True)
            dst = sqlite3.connect(tmp)
            try:
                # The copy is fsynced once, below, before it is renamed into place;
                # an unfinished copy is never read, so SQLite need not sync it.
                dst.execute("PRAGMA synchronous=OFF")
                src.backup(dst)
                # One self-contained file (the copy inherits mls.db's WAL mode).
                dst.execute("PRAGMA journal_mode=DELETE")
                dst.execute("DROP TABLE IF EXISTS qpc_undo_cursor")
                dst.execute("CREATE TABLE qpc_undo_cursor (cursor INTEGER NOT NULL)")
                dst.execute("INSERT INTO qpc_undo_cursor VALUES (?)", (cursor,))
                dst.commit()
            finally:
                src.close()
                dst.close()
            _fsync(tmp)
            os.replace(tmp, self._undo)
            _fsync(self._undo.parent)
        except (OSError, sqlite3.Error) as exc:
            raise ProfileError(f"could not write the MLS undo copy: {exc}") from exc
        self.held = True

    def discard(self) -> None:
        """Delete the copy (the batch committed).

        Not fsynced: a copy that reappears after a power cut carries an older
        cursor than the committed state, so :meth:`recover` deletes it.
        """
        with contextlib.suppress(FileNotFoundError):
            self._undo.unlink()
        self.held = False

    def recover(self, saved_cursor: int) -> bool:
        """At start, before ``mls.db`` is opened: roll back an uncommitted batch.

        Returns True when ``mls.db`` was replaced by the copy.
        """
        if not self._undo.exists():
            return False
        try:
            conn = sqlite3.connect(self._undo)
            try:
                row = conn.execute("SELECT cursor FROM qpc_undo_cursor").fetchone()
                if row is not None and int(row[0]) == saved_cursor:
                    conn.execute("DROP TABLE qpc_undo_cursor")
                    conn.commit()
            finally:
                conn.close()
        except sqlite3.Error:
            row = None  # unreadable: never renamed into place complete, mls.db untouched
        if row is None or int(row[0]) != saved_cursor:
            self.discard()
            return False
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                self._db.with_name(self._db.name + suffix).unlink()
        _fsync(self._undo)
        os.replace(self._undo, self._db)
        _fsync(self._db.parent)
        log.info("rolled the MLS state back to the last committed batch")
        return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
