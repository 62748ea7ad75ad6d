"""The current build still reads the committed MLS vectors (tests/vectors/mls/).

The draft PQ ciphersuites' code points and OpenMLS's storage format have
moved between releases; these vectors were made by the pinned build
(``python3 -m tests.vectors.mls.generate``) and must keep working.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from proto import mls

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "mls"


@pytest.mark.parametrize("suite", list(mls.Ciphersuite), ids=lambda s: s.name.lower())
def test_current_build_reads_vectors(tmp_path: Path, suite: mls.Ciphersuite) -> None:
    src = VECTORS / suite.name.lower()
    manifest: dict[str, Any] = json.loads((src / "manifest.json").read_text())

    def read(name: str) -> bytes:
        return (src / name).read_bytes()

    assert manifest["ciphersuite"] == int(suite)
    assert manifest["openmls"] == mls.openmls_version()

    info = mls.parse_key_package(read("key_package.bin"))
    assert info.ciphersuite == int(suite)
    assert info.identity == b"bob"
    assert info.hash_ref.hex() == manifest["key_package_hash_ref"]
    assert info.signature_key.hex() == manifest["bob_signature_key"]

    framing = mls.message_info(read("application1.bin"))
    assert framing.kind == "private_message"
    assert framing.group_id == bytes.fromhex(manifest["group_id"])
    assert framing.epoch == manifest["application1"]["epoch"]
    assert mls.message_info(read("welcome.bin")).kind == "welcome"

    # Bob's stored state (private keys of the KeyPackage) is read with his key.
    state = tmp_path / "bob.sqlite"
    shutil.copyfile(src / "bob.sqlite", state)
    with mls.Client.open(str(state), bytes.fromhex(manifest["storage_key"])) as bob:
        assert bob.identity == b"bob"
        group = bob.join_from_welcome(read("welcome.bin"))
        assert group.epoch == manifest["welcome_epoch"]
        assert group.ciphersuite == int(suite)
        members = {m.identity: m.signature_key.hex() for m in group.members()}
        assert members == {
            b"alice": manifest["alice_signature_key"],
            b"bob": manifest["bob_signature_key"],
        }

        app1 = group.process(read("application1.bin"))
        assert isinstance(app1, mls.ApplicationMessage)
        assert app1.plaintext.decode() == manifest["application1"]["plaintext"]
        assert app1.sender_identity == b"alice"

        commit = group.process(read("commit.bin"))
        assert isinstance(commit, mls.CommitMerged)
        assert commit.epoch == manifest["commit_epoch"] + 1
        assert group.epoch_authenticator().hex() == manifest["epoch_authenticator"]
        exp = manifest["exporter"]
        secret = group.export_secret(exp["label"], bytes.fromhex(exp["context"]), exp["length"])
        assert secret.hex() == exp["value"]

        app2 = group.process(read("application2.bin"))
        assert isinstance(app2, mls.ApplicationMessage)
        assert app2.epoch == manifest["application2"]["epoch"]
        assert app2.plaintext.decode() == manifest["application2"]["plaintext"]
