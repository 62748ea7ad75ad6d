"""Each state-changing binding call is one SQLite transaction.

A failure injected in the middle of an operation (a trigger that aborts one of
the writes, after others of the same operation went through) must leave the
state file exactly as it was, and the group must keep working: retrying the
same operation succeeds, messages flow, and a reopened client agrees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proto import mls
from proto.errors import QpcError
from tests.proto.mls_util import SUITE_IDS, SUITES, add, create_group, new_party, send

FAIL_TRIGGER = "qpc_test_fail"

# The file is inspected and altered from a separate process: the binding
# links its own SQLite, and two SQLite libraries in one process do not see
# each other's POSIX locks (closing Python's connection would checkpoint and
# remove the WAL under the binding's open connection).
_SQL_HELPER = """
import json, sqlite3, sys
path, action, arg = sys.argv[1], sys.argv[2], sys.argv[3]
con = sqlite3.connect(path, timeout=10)
if action == "snapshot":
    tables = [r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    out = {t: sorted(repr(r) for r in con.execute(f'SELECT * FROM "{t}"')) for t in tables}
    print(json.dumps(out))
else:
    con.execute(arg)
    con.commit()
con.close()
"""


def _sql(path: Path, action: str, arg: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-c", _SQL_HELPER, str(path), action, arg],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def snapshot(path: Path) -> dict[str, list[str]]:
    """Every row of every table (blobs are ciphertext; compared byte for byte)."""
    result: dict[str, list[str]] = json.loads(_sql(path, "snapshot"))
    return result


def inject_failure(path: Path, table: str, when: str) -> None:
    _sql(
        path,
        "execute",
        f'CREATE TRIGGER {FAIL_TRIGGER} BEFORE INSERT ON "{table}" '
        f"WHEN {when} BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )


def remove_failure(path: Path) -> None:
    _sql(path, "execute", f"DROP TRIGGER {FAIL_TRIGGER}")


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_failed_commit_processing_leaves_state_unchanged(tmp_path: Path, suite: int) -> None:
    alice, bob, carol = (new_party(tmp_path, n, suite) for n in ("alice", "bob", "carol"))
    create_group(alice)
    add(alice, [bob], [])
    send(alice, [bob], b"before")

    kp = carol.client.key_package()
    out = alice.g.add_members([kp])
    alice.g.merge_pending_commit()

    # Processing a commit writes the advanced handshake ratchet, then merges:
    # tree, context, transcript hash, confirmation tag, epoch and message
    # secrets, then the new epoch's HPKE key pairs: fail that last write.
    before = snapshot(bob.path)
    inject_failure(bob.path, "openmls_epoch_keys_pairs", "1")
    with pytest.raises(QpcError):
        bob.g.process(out.commit)
    remove_failure(bob.path)
    assert snapshot(bob.path) == before

    # Nothing half-applied: the same commit now merges, and messages flow.
    assert bob.g.epoch == alice.g.epoch - 1
    res = bob.g.process(out.commit)
    assert isinstance(res, mls.CommitMerged)
    assert bob.g.epoch == alice.g.epoch
    assert out.welcome is not None
    carol.group = carol.client.join_from_welcome(out.welcome, out.ratchet_tree)
    send(alice, [bob, carol], b"after")
    send(bob, [alice, carol], b"from bob")

    # And a fresh process reading the file agrees.
    bob.client.close()
    reopened = mls.Client.open(str(bob.path), bob.key)
    group = reopened.load_group(alice.g.group_id)
    assert group.epoch == alice.g.epoch
    res2 = group.process(alice.g.encrypt(b"reopened"))
    assert isinstance(res2, mls.ApplicationMessage)
    assert res2.plaintext == b"reopened"


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_failed_commit_creation_leaves_no_pending_commit(tmp_path: Path, suite: int) -> None:
    alice, bob, carol = (new_party(tmp_path, n, suite) for n in ("alice", "bob", "carol"))
    create_group(alice)
    add(alice, [bob], [])
    kp = carol.client.key_package()

    # add_members: OpenMLS stores the pending commit and the new own leaf's
    # keys, then we record the commit's digest (qpc_sent): fail that last write.
    before = snapshot(alice.path)
    inject_failure(alice.path, "qpc_sent", "1")
    with pytest.raises(QpcError):
        alice.g.add_members([kp])
    remove_failure(alice.path)
    assert snapshot(alice.path) == before
    assert not alice.g.has_pending_commit

    add(alice, [carol], [bob])
    send(carol, [alice, bob], b"hello")


def test_failed_encrypt_does_not_advance_the_ratchet(tmp_path: Path) -> None:
    # Encrypting writes one row (the message secrets); the point here is that
    # the in-memory group is dropped with the failed write, so the next
    # message uses the stored ratchet, not a generation nobody persisted.
    suite = mls.Ciphersuite.HYBRID
    alice, bob = (new_party(tmp_path, n, suite) for n in ("alice", "bob"))
    create_group(alice)
    add(alice, [bob], [])

    before = snapshot(alice.path)
    inject_failure(alice.path, "openmls_group_data", "NEW.data_type = 'message_secrets'")
    with pytest.raises(QpcError):
        alice.g.encrypt(b"lost")
    remove_failure(alice.path)
    assert snapshot(alice.path) == before
    send(alice, [bob], b"kept")
