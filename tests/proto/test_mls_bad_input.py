"""Hostile and broken input: every parse entry point fails with a clean MlsError."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import errors, mls
from tests.proto.mls_util import Party, add, create_group, new_party, send

SUITE = mls.Ciphersuite.HYBRID


class World:
    """Alice and Bob in a group, Eve outside it, plus one valid message of each kind."""

    def __init__(self, tmp_path: Path) -> None:
        self.alice = new_party(tmp_path, "alice", SUITE)
        self.bob = new_party(tmp_path, "bob", SUITE)
        self.eve = new_party(tmp_path, "eve", SUITE)
        create_group(self.alice)
        out = add(self.alice, [self.bob], [])
        assert out.welcome is not None
        # A Welcome for Eve (never joined: each try rolls back), split, so the
        # tree and the parts reach their own checks.
        side = self.alice.client.create_group(b"eve-side")
        for_eve = side.add_members([self.eve.client.key_package()])
        assert for_eve.welcome is not None and for_eve.ratchet_tree is not None
        self.eve_welcome = for_eve.welcome
        self.eve_tree = for_eve.ratchet_tree
        self.eve_common, parts = for_eve.welcome_parts()
        (self.eve_secrets,) = parts.values()
        self.samples: dict[str, bytes] = {
            "key_package": self.eve.client.key_package(),
            "welcome": out.welcome,
            "welcome_common": self.eve_common,
            "welcome_secrets": self.eve_secrets,
            "ratchet_tree": self.eve_tree,
            "group_info": self.alice.g.export_group_info(),
            "commit": out.commit,
            "application": self.alice.g.encrypt(b"sample"),
        }

    def entry_points(self) -> dict[str, Callable[[bytes], object]]:
        bob, eve = self.bob, self.eve
        return {
            "parse_key_package": mls.parse_key_package,
            "message_info": mls.message_info,
            "join_from_welcome": eve.client.join_from_welcome,
            "split_welcome": mls.split_welcome,
            "join_tree": lambda data: eve.client.join_from_welcome(self.eve_welcome, data),
            "join_parts_common": lambda data: eve.client.join_from_welcome_parts(
                data, self.eve_secrets, self.eve_tree
            ),
            "join_parts_secrets": lambda data: eve.client.join_from_welcome_parts(
                self.eve_common, data, self.eve_tree
            ),
            "join_parts_tree": lambda data: eve.client.join_from_welcome_parts(
                self.eve_common, self.eve_secrets, data
            ),
            "join_by_external_commit": eve.client.join_by_external_commit,
            "process": bob.g.process,
            "add_members": lambda data: bob.g.add_members([data]),
        }

    def still_works(self) -> None:
        send(self.alice, [self.bob], b"still fine")
        send(self.bob, [self.alice], b"yes")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("mls-bad-input"))


def _broken_inputs(samples: dict[str, bytes]) -> list[bytes]:
    inputs = [b"", b"\x00", b"\x00\x01", b"\xff" * 64, b"\x00\x01\x00\x03" + b"\x00" * 8]
    for sample in samples.values():
        for cut in (1, 2, 3, 4, 8, len(sample) // 2, len(sample) - 1):
            inputs.append(sample[:cut])
        inputs.append(sample + b"\x00")
    return inputs


def test_broken_bytes_to_every_entry_point(world: World) -> None:
    for name, fn in world.entry_points().items():
        for data in _broken_inputs(world.samples):
            with pytest.raises(errors.MlsError):
                fn(data)
        assert name
    world.still_works()


def test_oversized_input(world: World) -> None:
    huge = bytes(mls.MAX_MESSAGE_BYTES + 1)
    for fn in world.entry_points().values():
        with pytest.raises(errors.MalformedInput):
            fn(huge)


def test_wrong_kind_of_message(world: World) -> None:
    s = world.samples
    points = world.entry_points()
    wrong = {
        "parse_key_package": [s["welcome"], s["application"], s["group_info"]],
        "join_from_welcome": [s["key_package"], s["commit"], s["application"]],
        "split_welcome": [s["key_package"], s["commit"], s["group_info"]],
        "join_parts_common": [s["welcome"], s["key_package"], s["application"]],
        "join_parts_secrets": [s["welcome"], s["welcome_common"]],
        "join_tree": [s["welcome"], s["welcome_secrets"]],
        "join_by_external_commit": [s["welcome"], s["key_package"]],
        "process": [s["welcome"], s["key_package"], s["group_info"]],
        "add_members": [s["welcome"], s["application"]],
    }
    for name, inputs in wrong.items():
        for data in inputs:
            with pytest.raises(errors.MalformedInput):
                points[name](data)


def test_tampered_messages(world: World) -> None:
    app = world.alice.g.encrypt(b"tamper")
    for pos in (len(app) - 1, len(app) - 20, len(app) // 2):
        bad = bytearray(app)
        bad[pos] ^= 0x01
        with pytest.raises(errors.MlsError):
            world.bob.g.process(bytes(bad))
    kp = bytearray(world.eve.client.key_package())
    kp[-5] ^= 0x40  # inside the KeyPackage signature
    with pytest.raises(errors.InvalidMessage):
        mls.parse_key_package(bytes(kp))
    # The untampered message still decrypts: failures consumed nothing.
    res = world.bob.g.process(app)
    assert isinstance(res, mls.ApplicationMessage) and res.plaintext == b"tamper"


def test_replayed_message(world: World) -> None:
    msg = world.alice.g.encrypt(b"once")
    assert isinstance(world.bob.g.process(msg), mls.ApplicationMessage)
    with pytest.raises(errors.InvalidMessage):
        world.bob.g.process(msg)
    world.still_works()


def test_replayed_and_past_epoch_commit(tmp_path: Path) -> None:
    alice, bob = new_party(tmp_path, "a", SUITE), new_party(tmp_path, "b", SUITE)
    create_group(alice)
    add(alice, [bob], [])
    old = alice.g.encrypt(b"old epoch")
    up = alice.g.self_update()
    alice.g.merge_pending_commit()
    bob.g.process(up.commit)
    with pytest.raises(errors.WrongEpoch):
        bob.g.process(up.commit)
    for _ in range(mls.MAX_PAST_EPOCHS + 1):
        up = alice.g.self_update()
        alice.g.merge_pending_commit()
        bob.g.process(up.commit)
    with pytest.raises(errors.WrongEpoch):
        bob.g.process(old)
    # A future-epoch message (Bob has not seen the commit yet) is WrongEpoch too.
    up = alice.g.self_update()
    alice.g.merge_pending_commit()
    future = alice.g.encrypt(b"from the future")
    with pytest.raises(errors.WrongEpoch):
        bob.g.process(future)
    bob.g.process(up.commit)
    assert bob.g.process(future).plaintext == b"from the future"  # type: ignore[union-attr]


def test_welcome_for_someone_else(world: World, tmp_path: Path) -> None:
    carol = new_party(tmp_path, "carol", SUITE)
    mallory = new_party(tmp_path, "mallory", SUITE)
    g = world.alice.client.create_group(b"side")
    out = g.add_members([carol.client.key_package()])
    assert out.welcome is not None
    with pytest.raises(errors.NoWelcomeForUs):
        mallory.client.join_from_welcome(out.welcome, out.ratchet_tree)
    assert carol.client.join_from_welcome(out.welcome, out.ratchet_tree).epoch == 1


def test_message_for_another_group(world: World, tmp_path: Path) -> None:
    other: Party = new_party(tmp_path, "other", SUITE)
    other.group = other.client.create_group(b"elsewhere")
    with pytest.raises(errors.InvalidMessage):
        world.bob.g.process(other.g.encrypt(b"wrong group"))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(world: World, data: bytes) -> None:
    for fn in world.entry_points().values():
        with pytest.raises(errors.MlsError):
            fn(data)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(
        [
            "key_package",
            "welcome",
            "welcome_common",
            "welcome_secrets",
            "ratchet_tree",
            "group_info",
            "commit",
            "application",
        ]
    ),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=4
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_fuzz_mutated_messages(
    world: World, kind: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(world.samples[kind])
    for pos, xor in edits:
        data[pos % len(data)] ^= xor
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    mutated = bytes(data)
    for name, fn in world.entry_points().items():
        # Either a clean MlsError or (if the flip hit an unauthenticated spot
        # that does not matter) success; never any other exception or a crash.
        try:
            fn(mutated)
        except errors.MlsError:
            continue
        if name == "add_members":
            world.bob.g.clear_pending_commit()
        elif name == "join_by_external_commit" or name.startswith("join_"):
            for gid in world.eve.client.group_ids():
                world.eve.client.delete_group(gid)
