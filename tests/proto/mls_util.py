"""Helpers shared by the MLS tests (tests/proto/test_mls_*.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from proto import mls

SUITES = [mls.Ciphersuite.HYBRID, mls.Ciphersuite.CLASSICAL]
SUITE_IDS = ["hybrid", "classical"]


@dataclass
class Party:
    """One member under test: its client, storage key and (once joined) group."""

    name: str
    client: mls.Client
    key: bytes
    path: Path
    group: mls.Group | None = field(default=None)

    @property
    def g(self) -> mls.Group:
        assert self.group is not None, f"{self.name} has no group"
        return self.group


def new_party(tmp_path: Path, name: str, suite: int, **kw: bytes) -> Party:
    """A fresh client in its own state file under ``tmp_path``."""
    key = os.urandom(mls.STORAGE_KEY_BYTES)
    path = tmp_path / f"{name}.mls.sqlite"
    client = mls.Client.create(str(path), key, name.encode(), ciphersuite=suite, **kw)
    return Party(name, client, key, path)


def create_group(creator: Party, group_id: bytes = b"test-group") -> mls.Group:
    creator.group = creator.client.create_group(group_id)
    return creator.group


def add(committer: Party, newcomers: list[Party], others: list[Party]) -> mls.CommitOutput:
    """``committer`` adds ``newcomers``; the node 'accepts'; everyone follows."""
    kps = [p.client.key_package() for p in newcomers]
    out = committer.g.add_members(kps)
    committer.g.merge_pending_commit()
    for p in others:
        res = p.g.process(out.commit)
        assert isinstance(res, mls.CommitMerged)
    assert out.welcome is not None
    for p in newcomers:
        p.group = p.client.join_from_welcome(out.welcome, out.ratchet_tree)
    return out


def send(sender: Party, receivers: list[Party], text: bytes) -> bytes:
    """Encrypt from ``sender``, check every receiver decrypts it."""
    msg = sender.g.encrypt(text)
    for r in receivers:
        res = r.g.process(msg)
        assert isinstance(res, mls.ApplicationMessage)
        assert res.plaintext == text
        assert res.sender_identity == sender.client.identity
        assert res.sender_leaf == sender.g.own_leaf_index
    return msg


def file_bytes(path: Path) -> bytes:
    """The state file and its SQLite side files (WAL, shm), concatenated."""
    data = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(str(path) + suffix)
        if p.exists():
            data += p.read_bytes()
    return data
