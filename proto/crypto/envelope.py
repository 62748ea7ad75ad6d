"""The hybrid envelope that seals every payload to one recipient device.

HPKE (RFC 9180) base mode, single shot, with KEM ``MLKEM768_X25519`` (X-Wing:
ML-KEM-768 combined with X25519, secure if either holds), KDF HKDF-SHA256 and
AEAD ChaCha20-Poly1305, all from ``cryptography``. The node sees only the
recipient, the channel id and the (padded) size; the sender is inside.

Sealed bytes (``SealedEnvelope.data``)::

    u8      suite/format version = 1
    1120 B  HPKE encapsulated key (X-Wing ciphertext)
    n B     ChaCha20-Poly1305 ciphertext of the plaintext below, with 16 B tag

HPKE ``info`` = ``"qpc-envelope-v1\\0" ‖ u8 len ‖ recipientDeviceId ‖ u8 len ‖ channelId``,
so an envelope moved to another device or channel fails to decrypt.

Plaintext (version 1, all integers big-endian, nothing may follow it)::

    u8      plaintext version = 1
    u8      content type (:class:`ContentType`)
    32 B    sender device Ed25519 public key
    64 B    Ed25519 signature (see below)
    u32     body length, <= MAX_BODY_BYTES
    body    the MLS message (or control payload)
    u16     padding length, < PAD_BLOCK
    zeros   padding, so the plaintext is a multiple of PAD_BLOCK bytes

The signature covers ``"qpc-envelope-sig-v1\\0" ‖ u8 len ‖ recipientDeviceId ‖
u8 len ‖ channelId ‖ u8 contentType ‖ u32 len ‖ body``: a recipient cannot
re-seal a sender's message to somebody else as if the sender had sent it there.
The opened envelope proves that the holder of ``sender`` signed it; whether that
key belongs to a group member is the caller's (and MLS's) business.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from proto.crypto.identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    IdentityKey,
    verify,
)
from proto.errors import DecryptionFailed, InvalidKey, LocalError, MalformedEnvelope

__all__ = [
    "HYBRID_PRIVATE_KEY_BYTES",
    "HYBRID_PUBLIC_KEY_BYTES",
    "MAX_BODY_BYTES",
    "PAD_BLOCK",
    "ContentType",
    "HybridPrivateKey",
    "HybridPublicKey",
    "OpenedEnvelope",
    "SealedEnvelope",
    "open_envelope",
    "seal",
    "sealed_size",
    "signed_message",
]

ENVELOPE_VERSION = 1
"""Outer format version: X-Wing + HKDF-SHA256 + ChaCha20-Poly1305."""

PLAINTEXT_VERSION = 1
"""Version of the plaintext structure inside the HPKE ciphertext."""

MAX_BODY_BYTES = 1 << 20
"""Hard upper bound on the body; the node's payload limit is usually lower."""

PAD_BLOCK = 256
"""Plaintexts are zero-padded to a multiple of this many bytes to blur sizes."""

MAX_CHANNEL_ID_BYTES = 64
"""Channel ids are 1-64 bytes (docs/PROTOCOL.md)."""

_MLKEM_PUBLIC_BYTES = 1184
_MLKEM_SEED_BYTES = 64
_X25519_BYTES = 32
HYBRID_PUBLIC_KEY_BYTES = _MLKEM_PUBLIC_BYTES + _X25519_BYTES
"""X-Wing public key: ML-KEM-768 encapsulation key ‖ X25519 public key (1216 B)."""
HYBRID_PRIVATE_KEY_BYTES = _MLKEM_SEED_BYTES + _X25519_BYTES
"""Our private encoding: ML-KEM-768 seed (d ‖ z) ‖ X25519 private key (96 B)."""

_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_ENC_BYTES = hpke.KEM.MLKEM768_X25519.enc_length()
_TAG_BYTES = 16
_INFO_DOMAIN = b"qpc-envelope-v1\x00"
_SIG_DOMAIN = b"qpc-envelope-sig-v1\x00"
_HEADER = struct.Struct(f">BB{PUBLIC_KEY_BYTES}s{SIGNATURE_BYTES}sI")
_PAD_LEN = struct.Struct(">H")
_MIN_PLAINTEXT = _HEADER.size + _PAD_LEN.size
_MAX_PLAINTEXT = _HEADER.size + MAX_BODY_BYTES + _PAD_LEN.size + PAD_BLOCK
_MIN_SEALED = 1 + _ENC_BYTES + _MIN_PLAINTEXT + _TAG_BYTES
_MAX_SEALED = 1 + _ENC_BYTES + _MAX_PLAINTEXT + _TAG_BYTES


class ContentType(enum.IntEnum):
    """What the envelope body is."""

    MLS_APPLICATION = 1
    """An MLS PrivateMessage carrying application data."""
    MLS_COMMIT = 2
    """An MLS commit."""
    MLS_WELCOME = 3
    """An MLS Welcome for a new member."""
    MLS_PROPOSAL = 4
    """A standalone MLS proposal."""
    CONTROL = 5
    """A client-to-client control message outside MLS (e.g. access-key rotation)."""


class HybridPublicKey:
    """A device's X-Wing (ML-KEM-768 + X25519) public key, the ``hybridKey`` on the wire."""

    __slots__ = ("_key", "_raw")

    def __init__(self, mlkem_key: mlkem.MLKEM768PublicKey, x25519_key: x25519.X25519PublicKey):
        self._raw = mlkem_key.public_bytes_raw() + x25519_key.public_bytes_raw()
        self._key = hpke.MLKEM768X25519PublicKey(mlkem_key, x25519_key)

    @classmethod
    def from_bytes(cls, data: bytes) -> HybridPublicKey:
        """Parse the 1216-byte encoding.

        Raises:
            InvalidKey: wrong length or an invalid ML-KEM encapsulation key.
        """
        if len(data) != HYBRID_PUBLIC_KEY_BYTES:
            raise InvalidKey(f"X-Wing public key must be {HYBRID_PUBLIC_KEY_BYTES} bytes")
        try:
            mk = mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM_PUBLIC_BYTES])
            xk = x25519.X25519PublicKey.from_public_bytes(data[_MLKEM_PUBLIC_BYTES:])
            # Reject low-order X25519 points now rather than failing at every seal.
            x25519.X25519PrivateKey.generate().exchange(xk)
        except ValueError as exc:
            raise InvalidKey("not a valid X-Wing public key") from exc
        return cls(mk, xk)

    def to_bytes(self) -> bytes:
        """The 1216-byte encoding (ML-KEM-768 key ‖ X25519 key)."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridPublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"HybridPublicKey({self._raw[-8:].hex()}…)"


class HybridPrivateKey:
    """A device's X-Wing private key. ``repr`` never shows key material.

    cryptography builds the X-Wing key from its two components, so the private
    encoding is the ML-KEM-768 64-byte seed followed by the X25519 private key
    (not the 32-byte X-Wing seed of draft-connolly-cfrg-xwing-kem).
    """

    __slots__ = ("_key", "_mlkem", "_public", "_x25519")

    def __init__(self, mlkem_key: mlkem.MLKEM768PrivateKey, x25519_key: x25519.X25519PrivateKey):
        self._mlkem = mlkem_key
        self._x25519 = x25519_key
        self._key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
        self._public = HybridPublicKey(mlkem_key.public_key(), x25519_key.public_key())

    @classmethod
    def generate(cls) -> HybridPrivateKey:
        """Create a fresh random X-Wing key pair."""
        return cls(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> HybridPrivateKey:
        """Load from the 96 bytes returned by :meth:`private_bytes`.

        Raises:
            InvalidKey: wrong length.
        """
        if len(data) != HYBRID_PRIVATE_KEY_BYTES:
            raise InvalidKey(f"X-Wing private key must be {HYBRID_PRIVATE_KEY_BYTES} bytes")
        try:
            mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(data[:_MLKEM_SEED_BYTES])
            xk = x25519.X25519PrivateKey.from_private_bytes(data[_MLKEM_SEED_BYTES:])
        except ValueError as exc:
            raise InvalidKey("not a valid X-Wing private key") from exc
        return cls(mk, xk)

    def private_bytes(self) -> bytes:
        """The 96-byte private encoding. Secret: store only encrypted."""
        return self._mlkem.private_bytes_raw() + self._x25519.private_bytes_raw()

    @property
    def public_key(self) -> HybridPublicKey:
        """The matching public key."""
        return self._public

    def __repr__(self) -> str:
        return f"HybridPrivateKey(public={self._public!r})"


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """Sealed bytes as received from the wire, checked for version and size only.

    Build with :meth:`from_bytes` for untrusted input; :func:`open_envelope` turns
    it into an :class:`OpenedEnvelope`.
    """

    data: bytes
    """The whole sealed envelope (version ‖ enc ‖ ciphertext)."""

    def __post_init__(self) -> None:
        n = len(self.data)
        if n < _MIN_SEALED or n > _MAX_SEALED:
            raise MalformedEnvelope(f"sealed envelope of {n} bytes is out of bounds")
        if self.data[0] != ENVELOPE_VERSION:
            raise MalformedEnvelope(f"unsupported envelope version {self.data[0]}")

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedEnvelope:
        """Wrap untrusted bytes. Raises :class:`MalformedEnvelope` if malformed."""
        return cls(bytes(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedEnvelope:
    """A decrypted envelope whose sender signature verified."""

    recipient_id: bytes
    """Our device id, as bound into the HPKE info and the signature."""
    channel_id: bytes
    """The channel (MLS group id) the sender sealed it for."""
    content_type: ContentType
    """What :attr:`body` holds."""
    sender: bytes
    """The sender device's Ed25519 public key; the signature verified under it."""
    body: bytes
    """The MLS message (or control payload)."""


def _check_ids(recipient_id: bytes, channel_id: bytes, exc: type[Exception]) -> None:
    if len(recipient_id) != PUBLIC_KEY_BYTES:
        raise exc(f"recipient device id must be {PUBLIC_KEY_BYTES} bytes")
    if not 1 <= len(channel_id) <= MAX_CHANNEL_ID_BYTES:
        raise exc(f"channel id must be 1-{MAX_CHANNEL_ID_BYTES} bytes")


def _info(recipient_id: bytes, channel_id: bytes) -> bytes:
    return (
        _INFO_DOMAIN
        + bytes([len(recipient_id)])
        + recipient_id
        + bytes([len(channel_id)])
        + channel_id
    )


def signed_message(
    recipient_id: bytes, channel_id: bytes, content_type: ContentType, body: bytes
) -> bytes:
    """The exact bytes the sender signs (see the module docstring)."""
    return (
        _SIG_DOMAIN
        + bytes([len(recipient_id)])
        + recipient_id
        + bytes([len(channel_id)])
        + channel_id
        + bytes([int(content_type)])
        + struct.pack(">I", len(body))
        + body
    )


def _padding(unpadded: int) -> int:
    return -unpadded % PAD_BLOCK


def sealed_size(body_len: int) -> int:
    """Size of the sealed envelope for a body of ``body_len`` bytes."""
    plain = _MIN_PLAINTEXT + body_len
    return 1 + _ENC_BYTES + plain + _padding(plain) + _TAG_BYTES


def seal(
    *,
    sender: IdentityKey,
    recipient_key: HybridPublicKey,
    recipient_id: bytes,
    channel_id: bytes,
    content_type: ContentType,
    body: bytes,
) -> SealedEnvelope:
    """Sign and seal ``body`` for one recipient device.

    Args:
        sender: our device identity key (signs; its public key goes inside).
        recipient_key: the recipient device's X-Wing public key.
        recipient_id: the recipient's device id (its Ed25519 public key).
        channel_id: the channel the message belongs to (1-64 bytes).
        content_type: what ``body`` is.
        body: the MLS message, at most :data:`MAX_BODY_BYTES`.

    Raises:
        LocalError: an argument is out of range.
        InvalidKey: the recipient key is degenerate (cannot happen for keys
            parsed with :meth:`HybridPublicKey.from_bytes`).
    """
    _check_ids(recipient_id, channel_id, LocalError)
    if len(body) > MAX_BODY_BYTES:
        raise LocalError(f"envelope body exceeds {MAX_BODY_BYTES} bytes")
    content_type = ContentType(content_type)
    signature = sender.sign(signed_message(recipient_id, channel_id, content_type, body))
    header = _HEADER.pack(
        PLAINTEXT_VERSION, int(content_type), sender.public_key, signature, len(body)
    )
    pad = _padding(_MIN_PLAINTEXT + len(body))
    plaintext = b"".join((header, body, _PAD_LEN.pack(pad), bytes(pad)))
    try:
        ciphertext = _SUITE.encrypt(
            plaintext, recipient_key._key, info=_info(recipient_id, channel_id)
        )
    except ValueError as exc:
        raise InvalidKey("cannot seal to this X-Wing public key") from exc
    return SealedEnvelope(bytes([ENVELOPE_VERSION]) + ciphertext)


def _parse_plaintext(plaintext: bytes) -> tuple[ContentType, bytes, bytes, bytes]:
    n = len(plaintext)
    if n < _MIN_PLAINTEXT or n % PAD_BLOCK:
        raise MalformedEnvelope("envelope plaintext has a bad length")
    version, ctype, sender, signature, body_len = _HEADER.unpack_from(plaintext)
    if version != PLAINTEXT_VERSION:
        raise MalformedEnvelope(f"unsupported envelope plaintext version {version}")
    try:
        content_type = ContentType(ctype)
    except ValueError:
        raise MalformedEnvelope(f"unknown content type {ctype}") from None
    if body_len > MAX_BODY_BYTES or _HEADER.size + body_len + _PAD_LEN.size > n:
        raise MalformedEnvelope("envelope body length out of bounds")
    body_end = _HEADER.size + body_len
    (pad,) = _PAD_LEN.unpack_from(plaintext, body_end)
    pad_start = body_end + _PAD_LEN.size
    if pad_start + pad != n or pad >= PAD_BLOCK:
        raise MalformedEnvelope("envelope padding length mismatch")
    if any(plaintext[pad_start:]):
        raise MalformedEnvelope("envelope padding is not zero")
    return content_type, sender, signature, plaintext[_HEADER.size : body_end]


def open_envelope(
    sealed: SealedEnvelope | bytes,
    *,
    recipient_key: HybridPrivateKey,
    recipient_id: bytes,
    channel_id: bytes,
) -> OpenedEnvelope:
    """Decrypt, parse strictly and verify a sealed envelope addressed to us.

    Args:
        sealed: the envelope (raw bytes are wrapped with :meth:`SealedEnvelope.from_bytes`).
        recipient_key: our device's X-Wing private key.
        recipient_id: our device id.
        channel_id: the channel id the node delivered it under.

    Raises:
        MalformedEnvelope: bad version, size, lengths, padding or content type.
        DecryptionFailed: not sealed to this key, device and channel, or tampered.
        BadSignature: the sender signature does not verify.
    """
    if not isinstance(sealed, SealedEnvelope):
        sealed = SealedEnvelope.from_bytes(sealed)
    _check_ids(recipient_id, channel_id, MalformedEnvelope)
    try:
        plaintext = _SUITE.decrypt(
            memoryview(sealed.data)[1:],
            recipient_key._key,
            info=_info(recipient_id, channel_id),
        )
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("envelope could not be decrypted") from exc
    content_type, sender, signature, body = _parse_plaintext(plaintext)
    verify(sender, signature, signed_message(recipient_id, channel_id, content_type, body))
    return OpenedEnvelope(
        recipient_id=recipient_id,
        channel_id=channel_id,
        content_type=content_type,
        sender=sender,
        body=body,
    )
