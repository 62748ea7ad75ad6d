"""Welcomes without the ratchet tree, the sealed tree, and split Welcomes.

A commit that adds members returns a Welcome without the ratchet_tree
extension and ``CommitOutput.ratchet_tree``: the new epoch's tree sealed under
that epoch's MLS exporter. ``split_welcome`` / ``CommitOutput.welcome_parts``
cut a Welcome into the part every joiner shares and one small secrets part per
joiner (keyed by KeyPackageRef). Groups of tens of members here; 1,000 in
``bench/mls_welcome.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proto import errors, mls
from tests.proto.mls_util import SUITE_IDS, SUITES, Party, add, create_group, new_party, send


@pytest.fixture(params=SUITES, ids=SUITE_IDS)
def suite(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_split_welcome_for_many_joiners(tmp_path: Path, suite: int) -> None:
    alice = new_party(tmp_path, "alice", suite)
    create_group(alice)
    early = [new_party(tmp_path, f"e{i}", suite) for i in range(3)]
    add(alice, early, [])
    joiners = [new_party(tmp_path, f"j{i}", suite) for i in range(20)]
    kps = [j.client.key_package() for j in joiners]
    refs = [mls.parse_key_package(kp).hash_ref for kp in kps]
    out = alice.g.add_members(kps)
    assert out.welcome is not None and out.ratchet_tree is not None
    common, secrets = out.welcome_parts()
    assert (common, secrets) == mls.split_welcome(out.welcome)
    assert set(secrets) == set(refs)
    alice.g.merge_pending_commit()
    for p in early:
        assert isinstance(p.g.process(out.commit), mls.CommitMerged)
    # Each joiner gets the shared part, its own secrets and the tree.
    for j, ref in zip(joiners, refs, strict=True):
        j.group = j.client.join_from_welcome_parts(common, secrets[ref], out.ratchet_tree)
        assert j.g.epoch == alice.g.epoch
        assert len(j.g.members()) == 24
    everyone = [alice, *early, *joiners]
    send(joiners[7], [p for p in everyone if p is not joiners[7]], b"twenty-four of us")
    # Per joiner: a few hundred bytes (hybrid: one X-Wing ciphertext), and
    # the common part does not grow with the tree.
    limit = 1400 if suite == mls.Ciphersuite.HYBRID else 300
    assert max(len(s) for s in secrets.values()) < limit
    assert len(common) < len(out.ratchet_tree)
    assert len(out.welcome) == pytest.approx(
        len(common) - 1 + sum(len(s) for s in secrets.values()), abs=8
    )


def test_tree_fetched_later_from_any_member(tmp_path: Path, suite: int) -> None:
    alice, bob, carol = (new_party(tmp_path, n, suite) for n in ("alice", "bob", "carol"))
    create_group(alice)
    add(alice, [bob], [])
    out = alice.g.add_members([carol.client.key_package()])
    alice.g.merge_pending_commit()
    bob.g.process(out.commit)
    assert out.welcome is not None
    # Bob (not the committer) exports the same epoch's tree: it opens too.
    tree = bob.g.export_ratchet_tree()
    carol.group = carol.client.join_from_welcome(out.welcome, tree)
    send(carol, [alice, bob], b"tree from bob")


def test_wrong_or_missing_tree_is_refused_and_consumes_nothing(tmp_path: Path, suite: int) -> None:
    alice, bob = new_party(tmp_path, "alice", suite), new_party(tmp_path, "bob", suite)
    create_group(alice)
    out = alice.g.add_members([bob.client.key_package()])
    alice.g.merge_pending_commit()
    assert out.welcome is not None and out.ratchet_tree is not None
    # No tree at all.
    with pytest.raises(errors.InvalidMessage):
        bob.client.join_from_welcome(out.welcome)
    # The tree of another group.
    other = alice.client.create_group(b"other")
    current = alice.g.export_ratchet_tree()  # epoch 1 after the merge: right
    with pytest.raises(errors.InvalidMessage):
        bob.client.join_from_welcome(out.welcome, other.export_ratchet_tree())
    tampered = bytearray(out.ratchet_tree)
    tampered[-3] ^= 1
    with pytest.raises(errors.InvalidMessage):
        bob.client.join_from_welcome(out.welcome, bytes(tampered))
    with pytest.raises(errors.MalformedInput):
        bob.client.join_from_welcome(out.welcome, b"")
    # Nothing was consumed by the failures: the right tree still joins.
    bob.group = bob.client.join_from_welcome(out.welcome, current)
    send(alice, [bob], b"after refusals")


def test_secrets_of_another_joiner(tmp_path: Path, suite: int) -> None:
    alice = new_party(tmp_path, "alice", suite)
    bob, carol = new_party(tmp_path, "bob", suite), new_party(tmp_path, "carol", suite)
    create_group(alice)
    kb, kc = bob.client.key_package(), carol.client.key_package()
    out = alice.g.add_members([kb, kc])
    common, secrets = out.welcome_parts()
    with pytest.raises(errors.NoWelcomeForUs):
        bob.client.join_from_welcome_parts(
            common, secrets[mls.parse_key_package(kc).hash_ref], out.ratchet_tree
        )
    # A whole Welcome (with secrets) is not a common part.
    assert out.welcome is not None
    with pytest.raises(errors.MalformedInput):
        bob.client.join_from_welcome_parts(
            out.welcome, secrets[mls.parse_key_package(kb).hash_ref], out.ratchet_tree
        )


def test_tree_in_welcome_on_request(tmp_path: Path, suite: int) -> None:
    alice, bob = new_party(tmp_path, "alice", suite), new_party(tmp_path, "bob", suite)
    create_group(alice)
    out = alice.g.add_members([bob.client.key_package()], ratchet_tree_in_welcome=True)
    alice.g.merge_pending_commit()
    assert out.welcome is not None and out.group_info is not None
    bob.group = bob.client.join_from_welcome(out.welcome)
    send(bob, [alice], b"tree inside")
    # The next commit goes back to the default: no tree in the Welcome.
    carol = new_party(tmp_path, "carol", suite)
    out2 = alice.g.add_members([carol.client.key_package()])
    alice.g.merge_pending_commit()
    bob.g.process(out2.commit)
    assert out2.welcome is not None and out2.group_info is None
    assert len(out2.welcome) < len(out.welcome)
    carol.group = carol.client.join_from_welcome(out2.welcome, out2.ratchet_tree)
    send(carol, [alice, bob], b"tree outside")


def test_commit_without_welcome(tmp_path: Path) -> None:
    alice: Party = new_party(tmp_path, "alice", mls.Ciphersuite.CLASSICAL)
    create_group(alice)
    up = alice.g.self_update()
    # No Welcome, but the tree parts as for every commit (test_mls_tree_delta.py).
    assert up.welcome is None
    assert up.ratchet_tree is not None and up.tree_delta is not None
    with pytest.raises(errors.MalformedInput):
        up.welcome_parts()


def test_add_without_update_path(tmp_path: Path, suite: int) -> None:
    """``add_members(update_path=False)``: an add-only commit without an
    UpdatePath (RFC 9420 §12.4) at tens of members. Its size does not grow
    with the group (the Add proposal only), every member and the joiner
    reach the same epoch, and a later remove (always with a path) still
    locks the removed member out."""
    alice = new_party(tmp_path, "alice", suite)
    create_group(alice)
    members = [new_party(tmp_path, f"m{i}", suite) for i in range(30)]
    add(alice, members, [])
    with_path, without = new_party(tmp_path, "p", suite), new_party(tmp_path, "q", suite)
    # The same add built both ways (the first one's pending commit is dropped).
    probe = alice.g.add_members([with_path.client.key_package()])
    alice.g.clear_pending_commit()
    out = alice.g.add_members([without.client.key_package()], update_path=False)
    assert out.welcome is not None and out.ratchet_tree is not None
    kp_len = len(without.client.key_package())
    assert len(out.commit) < min(kp_len + 600, len(probe.commit))
    alice.g.merge_pending_commit()
    for p in members:
        assert isinstance(p.g.process(out.commit), mls.CommitMerged)
        assert p.g.epoch == alice.g.epoch
    common, secrets = out.welcome_parts()
    (part,) = secrets.values()
    without.group = without.client.join_from_welcome_parts(common, part, out.ratchet_tree)
    assert len(without.g.members()) == 32
    everyone = [alice, *members, without]
    send(without, [p for p in everyone if p is not without], b"added without a path")
    send(members[3], [p for p in everyone if p is not members[3]], b"and back")
    # a removal after a path-less add: the removed member cannot follow
    gone = members[0]
    rm = alice.g.remove_members([gone.g.own_leaf_index])
    alice.g.merge_pending_commit()
    for p in [*members[1:], without]:
        p.g.process(rm.commit)
    msg = send(alice, [*members[1:], without], b"after the removal")
    with pytest.raises(errors.WrongEpoch):
        gone.g.process(msg)
