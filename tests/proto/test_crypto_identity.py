"""Device identity: signatures, device registration, fingerprints, safety numbers."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from proto.crypto import identity as ident
from proto.crypto.identity import IdentityKey
from proto.errors import BadSignature, CryptoError, InvalidKey


def test_sign_verify_round_trip() -> None:
    key = IdentityKey.generate()
    sig = key.sign(b"hello")
    assert len(sig) == ident.SIGNATURE_BYTES
    ident.verify(key.public_key, sig, b"hello")
    with pytest.raises(BadSignature):
        ident.verify(key.public_key, sig, b"hellO")
    other = IdentityKey.generate()
    with pytest.raises(BadSignature):
        ident.verify(other.public_key, sig, b"hello")


@pytest.mark.parametrize("i", [0, 31, 32, 63])
def test_flipped_signature_byte_is_rejected(i: int) -> None:
    key = IdentityKey.generate()
    sig = bytearray(key.sign(b"m"))
    sig[i] ^= 0x01
    with pytest.raises(BadSignature):
        ident.verify(key.public_key, bytes(sig), b"m")


def test_malformed_key_or_signature_is_bad_signature() -> None:
    key = IdentityKey.generate()
    sig = key.sign(b"m")
    with pytest.raises(BadSignature):
        ident.verify(key.public_key[:31], sig, b"m")
    with pytest.raises(BadSignature):
        ident.verify(key.public_key, sig[:63], b"m")
    with pytest.raises(BadSignature):
        ident.verify(key.public_key, sig + b"\x00", b"m")


def test_private_bytes_round_trip_and_repr_hides_key() -> None:
    key = IdentityKey.generate()
    raw = key.private_bytes()
    assert len(raw) == 32
    again = IdentityKey.from_private_bytes(raw)
    assert again.public_key == key.public_key == key.device_id
    assert raw.hex() not in repr(key)
    with pytest.raises(InvalidKey):
        IdentityKey.from_private_bytes(raw[:31])
    assert issubclass(InvalidKey, CryptoError)


def test_device_registration_signature_matches_protocol() -> None:
    key = IdentityKey.generate()
    hybrid = bytes(range(256)) * 4 + bytes(192)  # any 1216 bytes
    sig = key.sign_device_registration(hybrid)
    # docs/PROTOCOL.md: Ed25519 by deviceId over b"qpc-device-v1" ‖ hybridKey.
    Ed25519PublicKey.from_public_bytes(key.device_id).verify(sig, b"qpc-device-v1" + hybrid)
    ident.verify_device_registration(key.device_id, hybrid, sig)
    with pytest.raises(BadSignature):
        ident.verify_device_registration(key.device_id, hybrid[:-1] + b"\x01", sig)


def test_fingerprint_format() -> None:
    key = IdentityKey.generate()
    fp = key.fingerprint()
    assert re.fullmatch(r"([0-9a-f]{4} ){7}[0-9a-f]{4}", fp)
    assert fp == ident.fingerprint(key.public_key)
    assert fp != IdentityKey.generate().fingerprint()
    expected = hashlib.sha256(b"qpc-fingerprint-v1\x00" + key.public_key).hexdigest()[:32]
    assert fp.replace(" ", "") == expected


def _reference_half(key: bytes, user: str) -> str:
    """Independent re-implementation of the construction documented in identity.py."""
    h = hashlib.sha512(b"\x00\x01" + key + user.encode()).digest()
    for _ in range(5200):
        h = hashlib.sha512(h + key).digest()
    return "".join(
        str(int.from_bytes(h[i * 5 : i * 5 + 5], "big") % 100000).zfill(5) for i in range(6)
    )


def test_safety_number_is_symmetric_and_documented() -> None:
    a, b = IdentityKey.generate(), IdentityKey.generate()
    n1 = ident.safety_number(a.public_key, "alice", b.public_key, "bob")
    n2 = ident.safety_number(b.public_key, "bob", a.public_key, "alice")
    assert n1 == n2
    assert re.fullmatch(r"(\d{5} ){11}\d{5}", n1)
    halves = sorted([_reference_half(a.public_key, "alice"), _reference_half(b.public_key, "bob")])
    assert n1.replace(" ", "") == "".join(halves)


def test_safety_number_known_answer() -> None:
    a = IdentityKey.from_private_bytes(bytes(range(32)))
    b = IdentityKey.from_private_bytes(bytes(range(32, 64)))
    got = ident.safety_number(a.public_key, "alice", b.public_key, "bob")
    halves = sorted([_reference_half(a.public_key, "alice"), _reference_half(b.public_key, "bob")])
    assert got.replace(" ", "") == "".join(halves)
    # Pinned so an accidental change of the construction is caught.
    assert got == SAFETY_NUMBER_VECTOR


SAFETY_NUMBER_VECTOR = "25552 77902 00236 73466 17938 31104 41731 60301 95170 74626 18154 38996"


def test_safety_number_changes_with_key_or_user() -> None:
    a, b, c = IdentityKey.generate(), IdentityKey.generate(), IdentityKey.generate()
    base = ident.safety_number(a.public_key, "alice", b.public_key, "bob")
    assert base != ident.safety_number(a.public_key, "alice", c.public_key, "bob")
    assert base != ident.safety_number(a.public_key, "alice", b.public_key, "bobby")
    assert ident.safety_numbers_equal(base, base.replace(" ", ""))
    assert not ident.safety_numbers_equal(base, base[:-1] + ("0" if base[-1] != "0" else "1"))


def test_safety_number_rejects_bad_key() -> None:
    a = IdentityKey.generate()
    with pytest.raises(InvalidKey):
        ident.safety_number(a.public_key, "a", b"\x00" * 31, "b")


@given(st.binary(max_size=80), st.binary(max_size=80), st.binary(max_size=80))
def test_verify_garbage_only_raises_bad_signature(key: bytes, sig: bytes, msg: bytes) -> None:
    with pytest.raises(BadSignature):
        ident.verify(key, sig, msg)
