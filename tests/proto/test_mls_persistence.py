"""MLS state survives restarts (real subprocesses) and holds no plaintext secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proto import errors, mls
from tests.proto.mls_util import SUITE_IDS, SUITES, add, create_group, file_bytes, new_party, send

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: one step of Bob's life, then exits.
CHILD = r"""
import json, sys
from pathlib import Path
from proto import mls

step, path, key = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
suite, work = int(sys.argv[4]), Path(sys.argv[5])
out = {}
if step == "publish":
    client = mls.Client.create(path, key, b"bob", ciphersuite=suite)
    (work / "kp").write_bytes(client.key_package())
elif step == "join":
    client = mls.Client.open(path, key)
    group = client.join_from_welcome_parts(
        (work / "welcome_common").read_bytes(),
        (work / "welcome_secrets").read_bytes(),
        (work / "tree").read_bytes(),
    )
    msg = group.process((work / "m1").read_bytes())
    out = {"epoch": group.epoch, "plaintext": msg.plaintext.decode(),
           "from": msg.sender_identity.decode()}
    (work / "reply").write_bytes(group.encrypt(b"reply from a new process"))
elif step == "continue":
    client = mls.Client.open(path, key)
    group = client.load_group(b"persist")
    before = group.epoch
    commit = group.process((work / "commit").read_bytes())
    msg = group.process((work / "m2").read_bytes())
    out = {"before": before, "after": group.epoch, "kind": type(commit).__name__,
           "plaintext": msg.plaintext.decode(), "ids": [g.decode() for g in client.group_ids()]}
client.close()
print(json.dumps(out))
"""


def _child(step: str, path: Path, key: bytes, suite: int, work: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(path), key.hex(), str(int(suite)), str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_restart_between_keypackage_and_welcome(tmp_path: Path, suite: int) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bob_path, bob_key = tmp_path / "bob.sqlite", os.urandom(32)
    _child("publish", bob_path, bob_key, suite, work)

    alice = new_party(tmp_path, "alice", suite)
    group = alice.client.create_group(b"persist")
    out = group.add_members([(work / "kp").read_bytes()])
    group.merge_pending_commit()
    assert out.welcome is not None and out.ratchet_tree is not None
    common, secrets = out.welcome_parts()
    (work / "welcome_common").write_bytes(common)
    (
        (work / "welcome_secrets").write_bytes(
            secrets[mls.parse_key_package((work / "kp").read_bytes()).hash_ref]
        )
    )
    (work / "tree").write_bytes(out.ratchet_tree)
    (work / "m1").write_bytes(group.encrypt(b"hello across restarts"))

    joined = _child("join", bob_path, bob_key, suite, work)
    assert joined == {"epoch": 1, "plaintext": "hello across restarts", "from": "alice"}
    reply = group.process((work / "reply").read_bytes())
    assert isinstance(reply, mls.ApplicationMessage)
    assert reply.plaintext == b"reply from a new process"

    up = group.self_update()
    group.merge_pending_commit()
    (work / "commit").write_bytes(up.commit)
    (work / "m2").write_bytes(group.encrypt(b"after the update"))
    cont = _child("continue", bob_path, bob_key, suite, work)
    assert cont == {
        "before": 1,
        "after": 2,
        "kind": "CommitMerged",
        "plaintext": "after the update",
        "ids": ["persist"],
    }


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_reopen_in_process_continues_at_epoch(tmp_path: Path, suite: int) -> None:
    alice = new_party(tmp_path, "alice", suite)
    bob = new_party(tmp_path, "bob", suite)
    create_group(alice)
    add(alice, [bob], [])
    up = bob.g.self_update()
    bob.g.merge_pending_commit()
    alice.g.process(up.commit)
    alice.client.close()
    with pytest.raises(errors.StorageFailure):
        alice.g.encrypt(b"closed")
    with mls.Client.open(str(alice.path), alice.key) as reopened:
        assert reopened.identity == b"alice"
        group = reopened.load_group(b"test-group")
        assert group.epoch == 2
        alice.group = group
        send(alice, [bob], b"still here")
        send(bob, [alice], b"welcome back")


def test_storage_key_checks(tmp_path: Path) -> None:
    alice = new_party(tmp_path, "alice", mls.Ciphersuite.HYBRID)
    create_group(alice)
    alice.client.close()
    with pytest.raises(errors.StorageFailure):
        mls.Client.open(str(alice.path), os.urandom(32))
    with pytest.raises(errors.StorageFailure):
        mls.Client.open(str(alice.path), alice.key[:31])
    with pytest.raises(errors.StorageFailure):
        mls.Client.create(str(alice.path), alice.key, b"again")
    with pytest.raises(errors.StorageFailure):
        mls.Client.open(str(tmp_path / "missing.sqlite"), alice.key)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(errors.StorageFailure):
        mls.Client.open(str(garbage), alice.key)
    with pytest.raises(errors.UnsupportedCiphersuite):
        mls.Client.create(str(tmp_path / "x.sqlite"), alice.key, b"x", ciphersuite=3)
    # The right key still opens it: the failed attempts changed nothing.
    with mls.Client.open(str(alice.path), alice.key) as client:
        assert client.load_group(b"test-group").epoch == 0
        with pytest.raises(errors.UnsupportedCiphersuite):
            client.create_group(b"g2", ciphersuite=2)


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_state_file_holds_no_plaintext(tmp_path: Path, suite: int) -> None:
    # The signature key is imported deliberately (Client.create(signature_key=...))
    # so the test knows the raw private key bytes to look for.
    sk = Ed25519PrivateKey.generate()
    raw_private = sk.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = sk.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    identity = b"identity-marker-7f3a9c"
    group_id = b"group-id-marker-51be02"
    plaintext = b"plaintext-marker-c0ffee-do-not-store"
    key = os.urandom(32)
    path = tmp_path / "alice.sqlite"
    alice_client = mls.Client.create(
        str(path), key, identity, signature_key=raw_private, ciphersuite=suite
    )
    assert alice_client.signature_public_key == raw_public
    bob = new_party(tmp_path, "bob", suite)
    group = alice_client.create_group(group_id)
    alice_client.key_packages(3)
    alice_client.last_resort_key_package()
    out = group.add_members([bob.client.key_package()])
    group.merge_pending_commit()
    assert out.welcome is not None
    bob.group = bob.client.join_from_welcome(out.welcome, out.ratchet_tree)
    res = bob.g.process(group.encrypt(plaintext))
    assert isinstance(res, mls.ApplicationMessage)
    assert group.process(bob.g.encrypt(plaintext)).plaintext == plaintext  # type: ignore[union-attr]
    exported = group.export_secret("marker", b"", 32)
    authenticator = group.epoch_authenticator()

    for data in (file_bytes(path), file_bytes(bob.path)):
        assert len(data) > 10_000
        assert raw_private not in data
        assert plaintext not in data
        assert identity not in data
        assert group_id not in data
        assert exported not in data
        assert authenticator not in data
    data = file_bytes(path)
    assert raw_public not in data
    # The data also must not be readable after close (WAL checkpointed).
    alice_client.close()
    data = file_bytes(path)
    for marker in (raw_private, raw_public, identity, group_id, plaintext):
        assert marker not in data
