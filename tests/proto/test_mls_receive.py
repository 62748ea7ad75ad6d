"""``process(..., defer_write=True)`` defers the message-secrets write.

OpenMLS rewrites its whole message-secrets entity (MBs in large hybrid
groups) after every decrypted message; the binding drops that write for up to
``MAX_DEFERRED`` application messages in a row per group and writes the entity
with the next one, any other write of the group (send, commit, proposal),
``Client.flush()`` or ``Client.close()``. A crash in between leaves the stored
ratchet behind the in-memory one: messages decrypted since the last write
decrypt once more if delivered again, nothing is lost. Real subprocesses that
exit without closing stand in for the crash.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proto import errors, mls
from tests.proto.mls_util import Party, add, create_group, new_party

ROOT = Path(__file__).resolve().parents[2]
MAX_DEFERRED = 63  # rust/src/core.rs MAX_DEFERRED_WRITES

# Bob opens his state, decrypts the given messages and dies without closing.
CRASHER = r"""
import json, os, sys
from pathlib import Path
from proto import mls
path, key, work = sys.argv[1], bytes.fromhex(sys.argv[2]), Path(sys.argv[3])
client = mls.Client.open(path, key)
group = client.load_group(b"test-group")
texts = [group.process(m.read_bytes(), defer_write=True).plaintext.decode()
         for m in sorted(work.glob("m*"), key=lambda p: int(p.name[1:]))]
print(json.dumps(texts), flush=True)
os._exit(0)  # no close(): what a crash leaves behind
"""


def _pair(tmp_path: Path) -> tuple[Party, Party]:
    alice = new_party(tmp_path, "alice", mls.Ciphersuite.HYBRID)
    bob = new_party(tmp_path, "bob", mls.Ciphersuite.HYBRID)
    create_group(alice)
    add(alice, [bob], [])
    return alice, bob


def _crash_after(bob: Party, work: Path, messages: list[bytes]) -> list[str]:
    bob.client.close()
    work.mkdir(exist_ok=True)
    for old in work.glob("m*"):
        old.unlink()
    for i, m in enumerate(messages):
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
    texts: list[str] = json.loads(proc.stdout)
    bob.client = mls.Client.open(str(bob.path), bob.key)
    bob.group = bob.client.load_group(b"test-group")
    return texts


@pytest.mark.slow
def test_crash_keeps_deferred_messages_decryptable(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path)
    msgs = [alice.g.encrypt(f"m{i}".encode()) for i in range(5)]
    assert _crash_after(bob, tmp_path / "w", msgs) == [f"m{i}" for i in range(5)]
    # The stored ratchet is where it was before the five: they decrypt again.
    for i, m in enumerate(msgs):
        res = bob.g.process(m, defer_write=True)
        assert isinstance(res, mls.ApplicationMessage) and res.plaintext == f"m{i}".encode()
    # close() flushed them: now they are replays.
    bob.client.close()
    bob.client = mls.Client.open(str(bob.path), bob.key)
    bob.group = bob.client.load_group(b"test-group")
    with pytest.raises(errors.InvalidMessage):
        bob.g.process(msgs[0])
    nxt = alice.g.encrypt(b"next")
    assert bob.g.process(nxt, defer_write=True).plaintext == b"next"  # type: ignore[union-attr]


@pytest.mark.slow
def test_deferral_is_bounded(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path)
    # More than MAX_DEFERRED in a row: the (MAX_DEFERRED+1)th writes.
    msgs = [alice.g.encrypt(f"m{i}".encode()) for i in range(MAX_DEFERRED + 3)]
    _crash_after(bob, tmp_path / "w", msgs)
    for m in msgs[: MAX_DEFERRED + 1]:
        with pytest.raises(errors.InvalidMessage):
            bob.g.process(m)
    for i in range(MAX_DEFERRED + 1, MAX_DEFERRED + 3):
        assert bob.g.process(msgs[i], defer_write=True).plaintext == f"m{i}".encode()  # type: ignore[union-attr]


def test_default_writes_at_once(tmp_path: Path) -> None:
    """Without defer_write a crash never lets a decrypted message decrypt again."""
    alice, bob = _pair(tmp_path)
    bob.client.close()
    bob.client = mls.Client.open(str(bob.path), bob.key)
    bob.group = bob.client.load_group(b"test-group")
    m = alice.g.encrypt(b"durable")
    assert bob.g.process(m).plaintext == b"durable"  # type: ignore[union-attr]
    # Reopen without close(): nothing was deferred, the replay is refused.
    other = mls.Client.open(str(bob.path), bob.key)
    with pytest.raises(errors.InvalidMessage):
        other.load_group(b"test-group").process(m)


def test_send_and_flush_write_what_was_deferred(tmp_path: Path) -> None:
    alice, bob = _pair(tmp_path)
    for i in range(3):
        assert bob.g.process(alice.g.encrypt(b"x%d" % i), defer_write=True).plaintext == b"x%d" % i  # type: ignore[union-attr]
    bob.client.flush()
    bob.client.flush()  # nothing left: a no-op
    reply = bob.g.encrypt(b"reply")  # a send writes the entity too
    assert alice.g.process(reply).plaintext == b"reply"  # type: ignore[union-attr]
    # Replays stay refused in memory whatever is stored.
    m = alice.g.encrypt(b"once")
    bob.g.process(m, defer_write=True)
    with pytest.raises(errors.InvalidMessage):
        bob.g.process(m, defer_write=True)
    bob.client.close()
    bob.client.close()  # closing twice is fine
    with pytest.raises(errors.StorageFailure):
        bob.client.flush()
