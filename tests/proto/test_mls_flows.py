"""Group flows through the real OpenMLS binding, in both ciphersuites."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto import errors, mls
from tests.proto.mls_util import SUITE_IDS, SUITES, Party, add, create_group, new_party, send

pytestmark = pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)


def _pair(tmp_path: Path, suite: int) -> tuple[Party, Party]:
    alice = new_party(tmp_path, "alice", suite)
    bob = new_party(tmp_path, "bob", suite)
    create_group(alice)
    add(alice, [bob], [])
    return alice, bob


def _pending(group: mls.Group) -> bool:
    # A function call, so mypy does not narrow the property across mutations.
    return group.has_pending_commit


def test_two_party(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    assert alice.g.ciphersuite == suite == bob.g.ciphersuite
    assert alice.g.epoch == bob.g.epoch == 1
    assert bob.g.group_id == b"test-group"
    send(alice, [bob], b"hello bob")
    send(bob, [alice], b"hello alice")
    send(alice, [bob], b"again")
    members = alice.g.members()
    assert [(m.leaf_index, m.identity) for m in members] == [(0, b"alice"), (1, b"bob")]
    assert members[1].signature_key == bob.client.signature_public_key
    assert [m.identity for m in bob.g.members()] == [b"alice", b"bob"]
    assert alice.g.epoch_authenticator() == bob.g.epoch_authenticator()
    assert alice.g.export_secret("qpc test", b"ctx", 32) == bob.g.export_secret(
        "qpc test", b"ctx", 32
    )
    assert alice.g.export_secret("qpc test", b"ctx", 32) != alice.g.export_secret(
        "other", b"ctx", 32
    )


def test_three_party_add_remove_update(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    carol = new_party(tmp_path, "carol", suite)
    # Bob adds Carol: the commit fans out to Alice, the Welcome to Carol.
    out = add(bob, [carol], [alice])
    assert out.epoch == 1
    assert alice.g.epoch == bob.g.epoch == carol.g.epoch == 2
    send(carol, [alice, bob], b"hi from carol")
    send(alice, [bob, carol], b"hi carol")
    send(bob, [alice, carol], b"welcome")

    # Self-update changes the epoch and everyone follows.
    before = alice.g.epoch_authenticator()
    up = carol.g.self_update()
    assert up.welcome is None
    carol.g.merge_pending_commit()
    for p in (alice, bob):
        res = p.g.process(up.commit)
        assert isinstance(res, mls.CommitMerged)
        assert res.sender_leaf == carol.g.own_leaf_index
        assert res.epoch == 3
    assert alice.g.epoch == bob.g.epoch == carol.g.epoch == 3
    assert alice.g.epoch_authenticator() == carol.g.epoch_authenticator() != before
    send(bob, [alice, carol], b"after update")

    # Alice removes Bob; Bob learns he was removed and cannot read anything after.
    bob_leaf = bob.g.own_leaf_index
    rm = alice.g.remove_members([bob_leaf])
    alice.g.merge_pending_commit()
    res = carol.g.process(rm.commit)
    assert isinstance(res, mls.CommitMerged) and res.removed == [bob_leaf]
    res = bob.g.process(rm.commit)
    assert isinstance(res, mls.CommitMerged) and res.self_removed
    assert not bob.g.is_active
    secret = send(alice, [carol], b"bob must not read this")
    with pytest.raises(errors.MlsError):
        bob.g.process(secret)
    with pytest.raises(errors.NotAMember):
        bob.g.encrypt(b"still here?")
    # Not even a stale copy of Bob's state from before the removal can read it.
    assert [m.identity for m in carol.g.members()] == [b"alice", b"carol"]
    assert alice.g.epoch_authenticator() == carol.g.epoch_authenticator()


def test_removed_member_stale_state_cannot_decrypt(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    carol = new_party(tmp_path, "carol", suite)
    add(alice, [carol], [bob])
    # Bob never processes his removal (a stale or malicious client).
    rm = alice.g.remove_members([bob.g.own_leaf_index])
    alice.g.merge_pending_commit()
    carol.g.process(rm.commit)
    msg = send(alice, [carol], b"secret after removal")
    with pytest.raises(errors.WrongEpoch):
        bob.g.process(msg)


def test_add_many_at_once(tmp_path: Path, suite: int) -> None:
    alice = new_party(tmp_path, "alice", suite)
    others = [new_party(tmp_path, f"m{i}", suite) for i in range(4)]
    create_group(alice)
    out = add(alice, others, [])
    assert out.group_info is None  # only with ratchet_tree_in_welcome=True; see export_group_info
    everyone = [alice, *others]
    for p in everyone:
        assert p.g.epoch == 1
        assert len(p.g.members()) == 5
    send(others[2], [p for p in everyone if p is not others[2]], b"five of us")


def test_leave_and_commit_proposals(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    carol = new_party(tmp_path, "carol", suite)
    add(alice, [carol], [bob])
    proposal = bob.g.leave()
    for p in (alice, carol):
        res = p.g.process(proposal)
        assert isinstance(res, mls.ProposalStored)
        assert res.kind == "remove" and res.sender_identity == b"bob"
    assert alice.g.pending_proposal_count == 1
    out = alice.g.commit_pending_proposals()
    alice.g.merge_pending_commit()
    assert isinstance(carol.g.process(out.commit), mls.CommitMerged)
    res = bob.g.process(out.commit)
    assert isinstance(res, mls.CommitMerged) and res.self_removed
    assert [m.identity for m in alice.g.members()] == [b"alice", b"carol"]
    send(carol, [alice], b"bye bob")


def test_external_join(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    dave = new_party(tmp_path, "dave", suite)
    group_info = alice.g.export_group_info()
    dave.group, out = dave.client.join_by_external_commit(group_info)
    assert out.epoch == 1
    dave.g.merge_pending_commit()  # nothing pending: a no-op
    for p in (alice, bob):
        res = p.g.process(out.commit)
        assert isinstance(res, mls.CommitMerged)
        assert res.sender_leaf is None
        assert [m.identity for m in res.added] == [b"dave"]
    assert alice.g.epoch == dave.g.epoch == 2
    send(dave, [alice, bob], b"joined from outside")
    send(bob, [alice, dave], b"hello dave")


def test_pending_commit_merge_or_clear(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    carol = new_party(tmp_path, "carol", suite)
    # Both commit in epoch 1; the node accepts Bob's and rejects Alice's.
    mine = alice.g.self_update()
    assert _pending(alice.g)
    with pytest.raises(errors.PendingCommit):
        alice.g.add_members([carol.client.key_package()])
    theirs = bob.g.self_update()
    bob.g.merge_pending_commit()
    alice.g.clear_pending_commit()
    assert not _pending(alice.g)
    res = alice.g.process(theirs.commit)
    assert isinstance(res, mls.CommitMerged) and res.epoch == 2
    # Alice's rejected commit must not be merged anywhere.
    with pytest.raises(errors.MlsError):
        bob.g.process(mine.commit)
    send(alice, [bob], b"still in sync")
    # Retrying in the new epoch works.
    add(alice, [carol], [bob])
    send(carol, [alice, bob], b"in")


def test_incoming_commit_while_pending(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    alice.g.self_update()  # pending, but the node takes Bob's first
    theirs = bob.g.self_update()
    bob.g.merge_pending_commit()
    res = alice.g.process(theirs.commit)
    assert isinstance(res, mls.CommitMerged)
    assert not _pending(alice.g)
    send(bob, [alice], b"ok")


def test_own_messages_echoed(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    app = alice.g.encrypt(b"echo")
    res = alice.g.process(app)
    assert isinstance(res, mls.OwnMessage) and res.content_type == "application"
    up = alice.g.self_update()
    alice.g.merge_pending_commit()
    res = alice.g.process(up.commit)
    assert isinstance(res, mls.OwnMessage) and res.content_type == "commit" and res.epoch == 1
    bob.g.process(up.commit)
    proposal = bob.g.leave()
    assert isinstance(bob.g.process(proposal), mls.OwnMessage)
    # Bob still reads the echo of Alice's old message from the past epoch.
    assert isinstance(bob.g.process(app), mls.ApplicationMessage)


def test_late_messages_within_past_epochs(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    late = alice.g.encrypt(b"sent before the commits")
    for _ in range(mls.MAX_PAST_EPOCHS):
        up = alice.g.self_update()
        alice.g.merge_pending_commit()
        bob.g.process(up.commit)
    res = bob.g.process(late)
    assert isinstance(res, mls.ApplicationMessage) and res.epoch == 1
    assert res.plaintext == b"sent before the commits"
    too_late = alice.g.encrypt(b"too late")
    for _ in range(mls.MAX_PAST_EPOCHS + 1):
        up = alice.g.self_update()
        alice.g.merge_pending_commit()
        bob.g.process(up.commit)
    with pytest.raises(errors.WrongEpoch):
        bob.g.process(too_late)


def test_key_packages(tmp_path: Path, suite: int) -> None:
    bob = new_party(tmp_path, "bob", suite)
    batch = bob.client.key_packages(5)
    infos = [mls.parse_key_package(kp) for kp in batch]
    assert len({i.hash_ref for i in infos}) == 5
    for info in infos:
        assert info.ciphersuite == suite
        assert info.identity == b"bob"
        assert info.signature_key == bob.client.signature_public_key
        assert not info.last_resort
    last = mls.parse_key_package(bob.client.last_resort_key_package())
    assert last.last_resort
    other = mls.Ciphersuite.CLASSICAL if suite == mls.Ciphersuite.HYBRID else mls.Ciphersuite.HYBRID
    assert mls.parse_key_package(bob.client.key_package(other)).ciphersuite == other
    framing = mls.message_info(batch[0])
    assert framing.kind == "key_package" and framing.group_id is None


def test_last_resort_key_package_is_reusable(tmp_path: Path, suite: int) -> None:
    alice = new_party(tmp_path, "alice", suite)
    bob = new_party(tmp_path, "bob", suite)
    last = bob.client.last_resort_key_package()
    ordinary = bob.client.key_package()
    for gid in (b"one", b"two"):
        group = alice.client.create_group(gid)
        out = group.add_members([last])
        group.merge_pending_commit()
        assert out.welcome is not None
        assert bob.client.join_from_welcome(out.welcome, out.ratchet_tree).group_id == gid
    # An ordinary KeyPackage is consumed by its first join.
    g3 = alice.client.create_group(b"three")
    o3 = g3.add_members([ordinary])
    g4 = alice.client.create_group(b"four")
    o4 = g4.add_members([ordinary])
    assert o3.welcome is not None and o4.welcome is not None
    bob.client.join_from_welcome(o3.welcome, o3.ratchet_tree)
    with pytest.raises(errors.NoWelcomeForUs):
        bob.client.join_from_welcome(o4.welcome, o4.ratchet_tree)


def test_group_store(tmp_path: Path, suite: int) -> None:
    alice, _bob = _pair(tmp_path, suite)
    alice.client.create_group(b"second")
    assert alice.client.group_ids() == [b"second", b"test-group"]
    again = alice.client.load_group(b"test-group")
    assert again.epoch == 1
    with pytest.raises(errors.UnknownGroup):
        alice.client.load_group(b"nope")
    with pytest.raises(errors.StorageFailure):
        alice.client.create_group(b"second")
    alice.client.delete_group(b"second")
    assert alice.client.group_ids() == [b"test-group"]
    with pytest.raises(errors.UnknownGroup):
        alice.client.load_group(b"second")
    alice.g.delete()
    with pytest.raises(errors.UnknownGroup):
        _ = alice.g.epoch
    assert alice.client.group_ids() == []


def test_message_info(tmp_path: Path, suite: int) -> None:
    alice, bob = _pair(tmp_path, suite)
    app = alice.g.encrypt(b"x")
    info = mls.message_info(app)
    assert (info.kind, info.group_id, info.epoch, info.content_type) == (
        "private_message",
        b"test-group",
        1,
        "application",
    )
    up = bob.g.self_update()
    assert mls.message_info(up.commit).content_type == "commit"
    assert up.group_info is None  # no tree in Welcomes: export_group_info() instead
    assert mls.message_info(bob.g.export_group_info()).kind == "group_info"
