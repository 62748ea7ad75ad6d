"""Regenerate the committed MLS test vectors (run by hand, never by the tests).

    python3 -m tests.vectors.mls.generate

For each ciphersuite it writes ``<suite>/``: Bob's encrypted state file taken
right after he published his KeyPackage (``bob.sqlite``), the KeyPackage,
Alice's Welcome, two application messages and a commit, and ``manifest.json``
with Bob's storage key and the values the current build must reproduce
(plaintexts, epochs, epoch authenticator, an exporter secret).

``tests/proto/test_mls_vectors.py`` checks that the current build still reads
all of it. Regenerate only on a deliberate, documented format change: a
failing vector test means the pinned OpenMLS build no longer speaks the
format that clients in the field have stored and sent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from proto import mls

HERE = Path(__file__).resolve().parent
# Long-lived KeyPackage so the vectors do not expire (validation checks lifetimes).
LIFETIME = 99 * 365 * 24 * 3600
GROUP_ID = b"qpc-vector-group"
EXPORT = ("qpc vector exporter", b"context", 32)


def generate(suite: mls.Ciphersuite, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bob_key = os.urandom(mls.STORAGE_KEY_BYTES)
        bob = mls.Client.create(str(work / "bob.sqlite"), bob_key, b"bob", ciphersuite=suite)
        key_package = bob.key_package(lifetime_seconds=LIFETIME)
        bob.close()
        shutil.copyfile(work / "bob.sqlite", out / "bob.sqlite")

        alice = mls.Client.create(
            str(work / "alice.sqlite"), os.urandom(32), b"alice", ciphersuite=suite
        )
        group = alice.create_group(GROUP_ID)
        # Self-update first: Alice's leaf then carries no lifetime to expire.
        group.self_update()
        group.merge_pending_commit()
        added = group.add_members([key_package])
        group.merge_pending_commit()
        assert added.welcome is not None
        app1 = group.encrypt(b"vector message one")
        epoch_app1 = group.epoch
        update = group.self_update()
        group.merge_pending_commit()
        app2 = group.encrypt(b"vector message two")
        label, context, length = EXPORT

        files = {
            "key_package.bin": key_package,
            "welcome.bin": added.welcome,
            "application1.bin": app1,
            "commit.bin": update.commit,
            "application2.bin": app2,
        }
        for name, data in files.items():
            (out / name).write_bytes(data)
        manifest = {
            "openmls": mls.openmls_version(),
            "ciphersuite": int(suite),
            "storage_key": bob_key.hex(),
            "group_id": GROUP_ID.hex(),
            "key_package_hash_ref": mls.parse_key_package(key_package).hash_ref.hex(),
            "bob_signature_key": mls.parse_key_package(key_package).signature_key.hex(),
            "alice_signature_key": alice.signature_public_key.hex(),
            "welcome_epoch": added.epoch + 1,
            "application1": {"epoch": epoch_app1, "plaintext": "vector message one"},
            "commit_epoch": update.epoch,
            "application2": {"epoch": group.epoch, "plaintext": "vector message two"},
            "epoch_authenticator": group.epoch_authenticator().hex(),
            "exporter": {
                "label": label,
                "context": context.hex(),
                "length": length,
                "value": group.export_secret(label, context, length).hex(),
            },
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        alice.close()


def main() -> None:
    for suite in mls.Ciphersuite:
        generate(suite, HERE / suite.name.lower())
        print(f"wrote {HERE / suite.name.lower()}")


if __name__ == "__main__":
    main()
