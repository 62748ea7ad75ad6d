"""At-rest keys: Argon2id passphrase key, verifier, root-key wrap, AEAD records, subkeys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto.crypto import atrest
from proto.crypto.atrest import (
    DEFAULT_PARAMS,
    FAST_TEST_PARAMS,
    KdfParams,
    MasterKey,
    RecordCipher,
    StorageKeys,
    derive_subkey,
    new_salt,
)
from proto.errors import DecryptionFailed, LocalError, ProfileError, WrongPassphrase

SALT = bytes(range(16))


def test_default_params_are_documented_values() -> None:
    assert KdfParams(memory_kib=65536, iterations=3, lanes=1) == DEFAULT_PARAMS
    assert KdfParams.from_dict(DEFAULT_PARAMS.to_dict()) == DEFAULT_PARAMS


def test_derive_is_deterministic_and_salted() -> None:
    a = MasterKey.derive("pass", SALT, FAST_TEST_PARAMS)
    assert a == MasterKey.derive(b"pass", SALT, FAST_TEST_PARAMS)
    assert len(a.key) == 32
    assert a != MasterKey.derive("pass", new_salt(), FAST_TEST_PARAMS)
    assert a != MasterKey.derive("pass", SALT, KdfParams(memory_kib=128, iterations=1))
    assert a.key.hex() not in repr(a)


def test_passphrase_is_nfkc_normalised() -> None:
    composed = MasterKey.derive("caf\u00e9", SALT, FAST_TEST_PARAMS)
    decomposed = MasterKey.derive("cafe\u0301", SALT, FAST_TEST_PARAMS)
    assert composed == decomposed


def test_short_salt_rejected() -> None:
    with pytest.raises(LocalError):
        MasterKey.derive("p", b"12345678", FAST_TEST_PARAMS)


def test_verifier_recognises_passphrase() -> None:
    right = MasterKey.derive("right", SALT, FAST_TEST_PARAMS)
    verifier = right.verifier()
    right.check(verifier)
    with pytest.raises(WrongPassphrase):
        MasterKey.derive("wrong", SALT, FAST_TEST_PARAMS).check(verifier)


def test_wrap_unwrap_root_key() -> None:
    master = MasterKey.derive("p", SALT, FAST_TEST_PARAMS)
    root = bytes(range(32))
    wrapped = master.wrap(root)
    assert root not in wrapped
    assert master.unwrap(wrapped) == root
    with pytest.raises(DecryptionFailed):
        MasterKey.derive("q", SALT, FAST_TEST_PARAMS).unwrap(wrapped)
    with pytest.raises(DecryptionFailed):
        master.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]))


def test_record_round_trip_and_binding() -> None:
    cipher = RecordCipher(bytes(32))
    blob = cipher.encrypt(b"secret", table="t", column="c", row=7)
    assert b"secret" not in blob
    assert cipher.decrypt(blob, table="t", column="c", row=7) == b"secret"
    assert blob != cipher.encrypt(b"secret", table="t", column="c", row=7)  # random nonce
    cells: list[tuple[str, str, bytes | str | int]] = [
        ("u", "c", 7),
        ("t", "d", 7),
        ("t", "c", 8),
        ("t", "c", "7"),
    ]
    for table, column, row in cells:
        with pytest.raises(DecryptionFailed):
            cipher.decrypt(blob, table=table, column=column, row=row)
    with pytest.raises(DecryptionFailed):
        RecordCipher(bytes([1]) * 32).decrypt(blob, table="t", column="c", row=7)


def test_record_ad_is_unambiguous() -> None:
    assert atrest.record_ad("ab", "c", b"") != atrest.record_ad("a", "bc", b"")
    assert atrest.record_ad("t", "c", 1) != atrest.record_ad("t", "c", "1")
    assert atrest.record_ad("t", "c", b"1") != atrest.record_ad("t", "c", "1")


def test_every_flipped_record_byte_fails() -> None:
    cipher = RecordCipher(bytes(32))
    blob = cipher.encrypt(b"x" * 20, table="t", column="c", row=b"r")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionFailed):
            cipher.decrypt(bytes(bad), table="t", column="c", row=b"r")


@given(st.binary(max_size=100))
def test_record_garbage_fails_cleanly(blob: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        RecordCipher(bytes(32)).decrypt(blob, table="t", column="c", row=0)


def test_subkeys_are_independent() -> None:
    root = bytes(range(32))
    keys = {derive_subkey(root, p) for p in ("db-records", "db-index", "mls-storage", "verifier")}
    assert len(keys) == 4
    assert all(len(k) == 32 for k in keys)
    storage = StorageKeys.from_root(root)
    assert storage.mls_storage_key == derive_subkey(root, atrest.PURPOSE_MLS_STORAGE)
    assert storage.index_key == derive_subkey(root, atrest.PURPOSE_DB_INDEX)
    assert storage.mls_storage_key != StorageKeys.from_root(bytes(32)).mls_storage_key
    assert storage.blind_index("channel", b"a") == storage.blind_index("channel", b"a")
    assert storage.blind_index("channel", b"a") != storage.blind_index("user", b"a")
    assert root.hex() not in repr(storage)
    with pytest.raises(LocalError):
        derive_subkey(b"short", "x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lanes": 0},
        {"lanes": 17},
        {"memory_kib": 7},
        {"memory_kib": 4 * 1024 * 1024 + 1},
        {"iterations": 0},
        {"iterations": 65},
    ],
)
def test_kdf_params_bounds(kwargs: dict[str, int]) -> None:
    with pytest.raises(LocalError):
        KdfParams(**kwargs)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"alg": "scrypt", "memory_kib": 64, "iterations": 1, "lanes": 1},
        {"alg": "argon2id", "memory_kib": "64", "iterations": 1, "lanes": 1},
        {"alg": "argon2id", "memory_kib": 64, "iterations": 1},
        {"alg": "argon2id", "memory_kib": 64, "iterations": 0, "lanes": 1},
        {"alg": "argon2id", "memory_kib": 64, "iterations": True, "lanes": 1},
    ],
)
def test_kdf_params_from_bad_dict(data: object) -> None:
    with pytest.raises(ProfileError):
        KdfParams.from_dict(data)
