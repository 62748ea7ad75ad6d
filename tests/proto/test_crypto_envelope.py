"""Hybrid X-Wing HPKE envelope: round trips, tampering, forgery, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.crypto import envelope as env
from proto.crypto.envelope import (
    ContentType,
    HybridPrivateKey,
    HybridPublicKey,
    OpenedEnvelope,
    SealedEnvelope,
    open_envelope,
    seal,
)
from proto.crypto.identity import IdentityKey
from proto.errors import (
    BadSignature,
    CryptoError,
    DecryptionFailed,
    InvalidKey,
    LocalError,
    MalformedEnvelope,
    RemoteError,
)

ALICE = IdentityKey.generate()
BOB = IdentityKey.generate()
BOB_HYBRID = HybridPrivateKey.generate()
CHANNEL = b"group-0001"


def _seal(body: bytes = b"mls bytes", ctype: ContentType = ContentType.MLS_APPLICATION) -> bytes:
    return seal(
        sender=ALICE,
        recipient_key=BOB_HYBRID.public_key,
        recipient_id=BOB.device_id,
        channel_id=CHANNEL,
        content_type=ctype,
        body=body,
    ).data


def _open(data: bytes, channel: bytes = CHANNEL) -> OpenedEnvelope:
    return open_envelope(
        data, recipient_key=BOB_HYBRID, recipient_id=BOB.device_id, channel_id=channel
    )


def _seal_raw(plaintext: bytes, recipient_id: bytes = BOB.device_id) -> bytes:
    """HPKE-seal an arbitrary plaintext exactly as seal() would (to forge contents)."""
    ct = env._SUITE.encrypt(
        plaintext, BOB_HYBRID.public_key._key, info=env._info(recipient_id, CHANNEL)
    )
    return bytes([env.ENVELOPE_VERSION]) + ct


def _plaintext(
    *,
    version: int = env.PLAINTEXT_VERSION,
    ctype: int = ContentType.MLS_APPLICATION,
    sender: IdentityKey = ALICE,
    signer: IdentityKey = ALICE,
    body: bytes = b"body",
    signed_channel: bytes = CHANNEL,
    signed_recipient: bytes = BOB.device_id,
    pad: int | None = None,
    pad_fill: int = 0,
    body_len: int | None = None,
    trailer: bytes = b"",
) -> bytes:
    known = {c.value for c in ContentType}
    signed_type = ContentType(ctype) if ctype in known else ContentType.CONTROL
    msg = env.signed_message(signed_recipient, signed_channel, signed_type, body)
    sig = signer.sign(msg)
    header = env._HEADER.pack(
        version, ctype, sender.public_key, sig, len(body) if body_len is None else body_len
    )
    if pad is None:
        pad = -(env._HEADER.size + len(body) + 2) % env.PAD_BLOCK
    return header + body + struct.pack(">H", pad) + bytes([pad_fill]) * pad + trailer


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("ctype", list(ContentType))
@pytest.mark.parametrize("size", [0, 1, 100, 154, 155, 10 * 1024])
def test_round_trip(ctype: ContentType, size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    sealed = _seal(body, ctype)
    assert len(sealed) == env.sealed_size(size)
    opened = _open(sealed)
    assert opened == OpenedEnvelope(
        recipient_id=BOB.device_id,
        channel_id=CHANNEL,
        content_type=ctype,
        sender=ALICE.public_key,
        body=body,
    )


def test_padding_hides_small_size_differences() -> None:
    assert len(_seal(b"")) == len(_seal(b"x" * 100))
    assert (len(_seal(b"x" * 1000)) - 1 - 1120 - 16) % env.PAD_BLOCK == 0


def test_sealing_is_randomised() -> None:
    assert _seal(b"same") != _seal(b"same")


def test_hybrid_key_serialization() -> None:
    raw = BOB_HYBRID.private_bytes()
    assert len(raw) == env.HYBRID_PRIVATE_KEY_BYTES == 96
    again = HybridPrivateKey.from_private_bytes(raw)
    pub = again.public_key.to_bytes()
    assert len(pub) == env.HYBRID_PUBLIC_KEY_BYTES == 1216
    assert again.public_key == BOB_HYBRID.public_key
    assert HybridPublicKey.from_bytes(pub) == BOB_HYBRID.public_key
    assert raw.hex() not in repr(BOB_HYBRID)
    # A key reloaded from its bytes opens what was sealed to the original.
    opened = open_envelope(
        _seal(b"x"), recipient_key=again, recipient_id=BOB.device_id, channel_id=CHANNEL
    )
    assert opened.body == b"x"


@pytest.mark.parametrize("n", [0, 95, 97])
def test_hybrid_private_key_wrong_length(n: int) -> None:
    with pytest.raises(InvalidKey):
        HybridPrivateKey.from_private_bytes(bytes(n))


_MLKEM_PART = BOB_HYBRID.public_key.to_bytes()[:1184]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(1215),
        bytes(1217),
        b"\xff" * 1216,
        _MLKEM_PART + bytes(32),  # all-zero (low-order) X25519 point
        _MLKEM_PART + b"\x01" + bytes(31),  # the other trivial low-order point
    ],
)
def test_hybrid_public_key_invalid(data: bytes) -> None:
    with pytest.raises(InvalidKey):
        HybridPublicKey.from_bytes(data)


@pytest.mark.parametrize(
    ("recipient_id", "channel_id", "body"),
    [
        (b"short", CHANNEL, b""),
        (BOB.device_id, b"", b""),
        (BOB.device_id, b"c" * 65, b""),
        (BOB.device_id, CHANNEL, bytes(env.MAX_BODY_BYTES + 1)),
    ],
)
def test_seal_rejects_bad_arguments(recipient_id: bytes, channel_id: bytes, body: bytes) -> None:
    with pytest.raises(LocalError):
        seal(
            sender=ALICE,
            recipient_key=BOB_HYBRID.public_key,
            recipient_id=recipient_id,
            channel_id=channel_id,
            content_type=ContentType.CONTROL,
            body=body,
        )


# ------------------------------------------------------------------ wrong recipient / binding


def test_wrong_recipient_key_fails() -> None:
    other = HybridPrivateKey.generate()
    with pytest.raises(DecryptionFailed):
        open_envelope(_seal(), recipient_key=other, recipient_id=BOB.device_id, channel_id=CHANNEL)


def test_wrong_recipient_id_fails() -> None:
    with pytest.raises(DecryptionFailed):
        open_envelope(
            _seal(), recipient_key=BOB_HYBRID, recipient_id=ALICE.device_id, channel_id=CHANNEL
        )


def test_wrong_channel_fails() -> None:
    with pytest.raises(DecryptionFailed):
        _open(_seal(), channel=b"group-0002")


# ------------------------------------------------------------------ tampering


def test_every_flipped_byte_fails_cleanly() -> None:
    sealed = _seal(b"short mls message")
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x80
        with pytest.raises((MalformedEnvelope, DecryptionFailed)):
            _open(bytes(tampered))


def test_every_truncation_fails_cleanly() -> None:
    sealed = _seal(b"short mls message")
    for n in range(len(sealed)):
        with pytest.raises((MalformedEnvelope, DecryptionFailed)):
            _open(sealed[:n])
    with pytest.raises((MalformedEnvelope, DecryptionFailed)):
        _open(sealed + b"\x00")


def test_unknown_outer_version() -> None:
    sealed = bytearray(_seal())
    sealed[0] = 2
    with pytest.raises(MalformedEnvelope, match="version"):
        SealedEnvelope.from_bytes(bytes(sealed))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_garbage_fails_cleanly(data: bytes) -> None:
    with pytest.raises((MalformedEnvelope, DecryptionFailed)):
        _open(data)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1400, max_size=1400))
def test_garbage_with_right_version_and_size_fails_cleanly(data: bytes) -> None:
    with pytest.raises(DecryptionFailed):
        _open(b"\x01" + data)


# ------------------------------------------------------------------ forgery and strict parsing


def test_valid_forged_plaintext_helper_opens() -> None:
    opened = _open(_seal_raw(_plaintext()))
    assert opened.body == b"body"


def test_forged_sender_signature_rejected() -> None:
    mallory = IdentityKey.generate()
    # Mallory claims to be Alice but can only sign with her own key.
    with pytest.raises(BadSignature):
        _open(_seal_raw(_plaintext(sender=ALICE, signer=mallory)))


def test_signature_for_another_channel_rejected() -> None:
    with pytest.raises(BadSignature):
        _open(_seal_raw(_plaintext(signed_channel=b"elsewhere")))


def test_resealing_to_another_recipient_rejected() -> None:
    # Carol received a message Alice signed for Carol and re-seals it to Bob.
    carol = IdentityKey.generate()
    with pytest.raises(BadSignature):
        _open(_seal_raw(_plaintext(signed_recipient=carol.device_id)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": 2}, "version"),
        ({"ctype": 0}, "content type"),
        ({"ctype": 6}, "content type"),
        ({"pad_fill": 1}, "padding"),
        ({"pad": 0}, "length"),
        ({"trailer": bytes(env.PAD_BLOCK)}, "padding"),
        ({"body_len": 2**32 - 1}, "body length"),
        ({"body_len": 5}, "padding"),
    ],
)
def test_strict_plaintext_parsing(kwargs: dict[str, int | bytes], match: str) -> None:
    with pytest.raises(MalformedEnvelope, match=match):
        _open(_seal_raw(_plaintext(**kwargs)))  # type: ignore[arg-type]


def test_error_classes_are_remote_crypto_errors() -> None:
    for cls in (MalformedEnvelope, DecryptionFailed, BadSignature):
        assert issubclass(cls, CryptoError)
        assert issubclass(cls, RemoteError)


def test_seal_to_degenerate_key_is_invalid_key() -> None:
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    weak = HybridPublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(_MLKEM_PART),
        x25519.X25519PublicKey.from_public_bytes(bytes(32)),
    )
    with pytest.raises(InvalidKey):
        seal(
            sender=ALICE,
            recipient_key=weak,
            recipient_id=BOB.device_id,
            channel_id=CHANNEL,
            content_type=ContentType.CONTROL,
            body=b"",
        )
