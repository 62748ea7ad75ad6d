"""Receipts: a processed message's result stored in the MLS transaction.

``Group.process(message, receipt=seq)`` and the joins with ``receipt=`` store
their result, encrypted, in the same SQLite transaction as the MLS state
change; the same message under the same seq returns the stored result
without processing again, until ``Client.forget_receipts``. Real
subprocesses that exit without closing stand in for the crash between the
MLS transaction and the caller's own commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proto import errors, mls
from tests.proto.mls_util import Party, add, create_group, file_bytes, new_party

ROOT = Path(__file__).resolve().parents[2]

# Bob processes the messages with receipts 1..n (deferred writes) and dies.
CRASHER = r"""
import json, os, sys
from pathlib import Path
from proto import mls
path, key, work = sys.argv[1], bytes.fromhex(sys.argv[2]), Path(sys.argv[3])
client = mls.Client.open(path, key)
group = client.load_group(b"test-group")
out = []
for i, m in enumerate(sorted(work.glob("m*"), key=lambda p: int(p.name[1:])), start=1):
    res = group.process(m.read_bytes(), defer_write=True, receipt=i)
    out.append(type(res).__name__)
print(json.dumps(out), flush=True)
os._exit(0)  # no close(), no forget_receipts(): a crash before the history commit
"""


def _pair(tmp_path: Path, suite: int = mls.Ciphersuite.HYBRID) -> tuple[Party, Party]:
    alice = new_party(tmp_path, "alice", suite)
    bob = new_party(tmp_path, "bob", suite)
    create_group(alice)
    add(alice, [bob], [])
    return alice, bob


def test_receipt_returns_the_stored_result_without_processing(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path, mls.Ciphersuite.CLASSICAL)
    m1 = alice.g.encrypt(b"one")
    first = bob.g.process(m1, receipt=7)
    assert isinstance(first, mls.ApplicationMessage) and first.plaintext == b"one"
    assert bob.client.receipts() == [7]
    bob.client.sync()  # fsyncs the WAL; nothing else changes
    again = bob.g.process(m1, receipt=7)
    assert isinstance(again, mls.ApplicationMessage)
    assert (again.plaintext, again.sender_leaf, again.epoch) == (b"one", first.sender_leaf, 1)
    # Without the receipt the same bytes are a replay: MLS refuses them.
    with pytest.raises(errors.InvalidMessage):
        bob.g.process(m1)
    # A different message under a used seq is refused and changes nothing.
    m2 = alice.g.encrypt(b"two")
    with pytest.raises(errors.InvalidMessage, match="different message"):
        bob.g.process(m2, receipt=7)
    assert bob.g.process(m2, receipt=8).plaintext == b"two"  # type: ignore[union-attr]
    assert bob.client.forget_receipts(upto=7) == 1
    assert bob.client.receipts() == [8]
    assert bob.client.forget_receipts() == 1
    assert bob.client.receipts() == []
    with pytest.raises(errors.InvalidMessage):  # forgotten: a replay again
        bob.g.process(m1, receipt=7)


def test_commit_receipt_and_join_receipt(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path, mls.Ciphersuite.CLASSICAL)
    carol = new_party(tmp_path, "carol", mls.Ciphersuite.CLASSICAL)
    out = alice.g.add_members([carol.client.key_package()])
    alice.g.merge_pending_commit()
    res = bob.g.process(out.commit, receipt=3)
    assert isinstance(res, mls.CommitMerged) and res.epoch == 2
    res2 = bob.g.process(out.commit, receipt=3)  # a stale commit without the receipt
    assert isinstance(res2, mls.CommitMerged)
    assert [m.identity for m in res2.added] == [b"carol"]
    assert out.welcome is not None
    g = carol.client.join_from_welcome(out.welcome, out.ratchet_tree, receipt=1)
    g2 = carol.client.join_from_welcome(out.welcome, out.ratchet_tree, receipt=1)
    assert g.group_id == g2.group_id == b"test-group" and g2.epoch == 2
    with pytest.raises(errors.InvalidMessage, match="different message"):
        g.process(out.commit, receipt=1)
    carol.client.forget_receipts()
    with pytest.raises(errors.MlsError):  # no receipt: the Welcome is used up
        carol.client.join_from_welcome(out.welcome, out.ratchet_tree, receipt=1)


def test_receipt_values_are_encrypted(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path, mls.Ciphersuite.CLASSICAL)
    secret = b"receipt-plaintext-marker-0123456789"
    bob.g.process(alice.g.encrypt(secret), receipt=1)
    bob.client.close()
    for suffix in ("", "-wal"):
        f = bob.path.with_name(bob.path.name + suffix)
        if f.exists():
            assert secret not in file_bytes(f)


@pytest.mark.slow
def test_crash_before_forget_returns_stored_results_and_decrypts_nothing_twice(
    tmp_path: Path,
) -> None:
    """Deferred writes + receipts: after a crash the stored ratchet is
    behind, but every message that got a receipt comes back from it, and the
    next new message decrypts; the messages' keys are not used again."""
    alice, bob = _pair(tmp_path)
    msgs = [alice.g.encrypt(f"m{i}".encode()) for i in range(5)]
    bob.client.close()
    work = tmp_path / "w"
    work.mkdir()
    for i, m in enumerate(msgs):
        (work / f"m{i}").write_bytes(m)
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(bob.path), bob.key.hex(), str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["ApplicationMessage"] * 5
    bob.client = mls.Client.open(str(bob.path), bob.key)
    bob.group = bob.client.load_group(b"test-group")
    assert bob.client.receipts() == [1, 2, 3, 4, 5]
    for i, m in enumerate(msgs, start=1):
        res = bob.g.process(m, defer_write=True, receipt=i)
        assert isinstance(res, mls.ApplicationMessage) and res.plaintext == f"m{i - 1}".encode()
    bob.client.forget_receipts(upto=5)
    nxt = bob.g.process(alice.g.encrypt(b"next"), defer_write=True, receipt=6)
    assert isinstance(nxt, mls.ApplicationMessage) and nxt.plaintext == b"next"
    assert bob.client.receipts() == [6]
