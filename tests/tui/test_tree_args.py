"""Which tree part a commit sends (tui/client/channels.py ``tree_args``), on
real OpenMLS commits (docs/PROTOCOL.md, "Tree deltas")."""

from __future__ import annotations

from pathlib import Path

from proto import mls
from tests.proto.mls_util import create_group, new_party
from tui.client.channels import tree_args


def test_delta_unless_whole_is_asked_for_or_large(tmp_path: Path) -> None:
    alice = new_party(tmp_path, "alice", mls.Ciphersuite.CLASSICAL)
    group = create_group(alice)
    # a big invite into a one-member group: the delta is most of the tree
    kps = [new_party(tmp_path, f"m{i}", mls.Ciphersuite.CLASSICAL).client.key_package()
           for i in range(8)]  # fmt: skip
    big = group.add_members(kps, update_path=False)
    big_delta = big.tree_delta
    assert big_delta is not None and big.ratchet_tree is not None
    assert 2 * len(big_delta) >= len(big.ratchet_tree)
    assert tree_args(big, whole=False, large=1000) == {"ratchet_tree": big.ratchet_tree}
    assert tree_args(big, whole=False) == {"tree_delta": big_delta}  # small: no matter
    group.merge_pending_commit()
    # one more member: a small delta, unless the node asked for the whole tree
    one = group.add_members(
        [new_party(tmp_path, "n", mls.Ciphersuite.CLASSICAL).client.key_package()],
        update_path=False,
    )
    one_delta = one.tree_delta
    assert one_delta is not None and one.ratchet_tree is not None
    assert len(one_delta) < len(one.ratchet_tree) // 2
    assert tree_args(one, whole=False) == {"tree_delta": one_delta}
    assert tree_args(one, whole=False, large=10) == {"tree_delta": one_delta}
    assert tree_args(one, whole=True) == {"ratchet_tree": one.ratchet_tree}
    group.clear_pending_commit()
