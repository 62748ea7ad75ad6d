"""``encrypt(..., defer_write=True)``: sends under a reservation.

OpenMLS writes its whole message-secrets entity after every encrypt (MBs in
large hybrid groups). With ``defer_write=True`` the binding stores the
sender ratchet ``SEND_RESERVE`` generations ahead once and then skips the
write for that many sends. A crash (a real subprocess exiting without
closing) must never make the reopened client reuse a generation: the
receiver, who already used those keys, would refuse the message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proto import errors, mls
from tests.proto.mls_util import Party, add, create_group, new_party

ROOT = Path(__file__).resolve().parents[2]
SEND_RESERVE = 128  # rust/src/core.rs

CRASHER = r"""
import os, sys
from pathlib import Path
from proto import mls
path, key, work, n = sys.argv[1], bytes.fromhex(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
client = mls.Client.open(path, key)
group = client.load_group(b"test-group")
for i in range(n):
    (work / f"m{i}").write_bytes(group.encrypt(f"m{i}".encode(), defer_write=True))
os._exit(0)  # no close(): what a crash leaves behind
"""


def _pair(tmp_path: Path, suite: int, *, big: bool = True) -> tuple[Party, Party]:
    """Alice and Bob in a group of RESERVE_MIN_MEMBERS (16; smaller groups
    write at every send): the other 14 are KeyPackages whose clients are
    closed."""
    alice = new_party(tmp_path, "alice", suite)
    bob = new_party(tmp_path, "bob", suite)
    create_group(alice)
    others = []
    for i in range(14 if big else 0):
        p = new_party(tmp_path, f"o{i}", suite)
        others.append(p.client.key_package())
        p.client.close()
    add(alice, [bob], [])
    if big:
        out = alice.g.add_members(others)
        alice.g.merge_pending_commit()
        assert isinstance(bob.g.process(out.commit), mls.CommitMerged)
    return alice, bob


def _crashed_sends(alice: Party, work: Path, n: int) -> list[bytes]:
    alice.client.close()
    work.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(alice.path), alice.key.hex(), str(work), str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    alice.client = mls.Client.open(str(alice.path), alice.key)
    alice.group = alice.client.load_group(b"test-group")
    return [(work / f"m{i}").read_bytes() for i in range(n)]


def test_deferred_sends_decrypt_in_order_and_mixed(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path, mls.Ciphersuite.CLASSICAL)
    for i in range(SEND_RESERVE + 5):  # crosses one renewal
        plain = f"d{i}".encode()
        msg = alice.g.encrypt(plain, defer_write=i % 7 != 3)  # some direct writes between
        res = bob.g.process(msg, defer_write=True)
        assert isinstance(res, mls.ApplicationMessage) and res.plaintext == plain
    # A commit in between ends the reservation; sends go on in the new epoch.
    up = alice.g.self_update()
    alice.g.merge_pending_commit()
    assert isinstance(bob.g.process(up.commit), mls.CommitMerged)
    res = bob.g.process(alice.g.encrypt(b"after commit", defer_write=True))
    assert isinstance(res, mls.ApplicationMessage) and res.plaintext == b"after commit"


@pytest.mark.parametrize(
    ("n", "big"), [(1, True), (5, True), (SEND_RESERVE, True), (SEND_RESERVE + 3, True), (5, False)]
)
def test_crash_never_reuses_a_generation(tmp_path: Path, n: int, big: bool) -> None:
    alice, bob = _pair(tmp_path, mls.Ciphersuite.CLASSICAL, big=big)
    alice.g.encrypt(b"warm-up", defer_write=True)  # a reservation exists before the crash
    sent = _crashed_sends(alice, tmp_path / "w", n)
    for i, m in enumerate(sent):  # the receiver uses every key
        res = bob.g.process(m)
        assert isinstance(res, mls.ApplicationMessage) and res.plaintext == f"m{i}".encode()
    # After the crash the sender continues past every generation it used:
    # a reused one would be refused by bob (its key is gone).
    for defer in (True, False):
        res = bob.g.process(alice.g.encrypt(b"after crash", defer_write=defer))
        assert isinstance(res, mls.ApplicationMessage) and res.plaintext == b"after crash"


def test_deferred_send_errors_like_a_send(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path, mls.Ciphersuite.CLASSICAL)
    bob.g.process(alice.g.encrypt(b"x", defer_write=True))
    prop = bob.g.leave()
    alice.g.process(prop)
    with pytest.raises(errors.PendingCommit):
        alice.g.encrypt(b"y", defer_write=True)


def test_release_memory_keeps_sending_and_receiving(tmp_path: Path) -> None:
    """``Client.release_memory`` between deferred sends and receives (a group
    of 16, so sends run under a reservation): the groups reload from storage,
    nothing deferred is lost, no generation is reused (the receiver would
    refuse it), and the group goes on as before."""
    alice, bob = _pair(tmp_path, mls.Ciphersuite.CLASSICAL, big=True)
    for i in range(40):
        plain = f"r{i}".encode()
        msg = alice.g.encrypt(plain, defer_write=True)
        res = bob.g.process(msg, defer_write=True)
        assert isinstance(res, mls.ApplicationMessage) and res.plaintext == plain
        if i % 9 == 4:
            alice.client.release_memory()
            bob.client.release_memory()
    bob.client.release_memory()  # what bob deferred is on disk: a reopen sees it
    bob.client.close()
    bob.client = mls.Client.open(str(bob.path), bob.key)
    bob.group = bob.client.load_group(b"test-group")
    res = bob.g.process(alice.g.encrypt(b"after reopen", defer_write=True))
    assert isinstance(res, mls.ApplicationMessage) and res.plaintext == b"after reopen"
