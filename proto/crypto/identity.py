"""Device identity: Ed25519 keys, device-registration signatures, fingerprints, safety numbers.

A device is identified by its Ed25519 public key (32 raw bytes, the ``deviceId``
of docs/PROTOCOL.md). The private key never leaves the client's encrypted profile.

Safety numbers
--------------
:func:`safety_number` follows Signal's "numeric fingerprint" construction
(libsignal ``NumericFingerprintGenerator``, version 2 of its scheme), with our own
version tag so the numbers cannot be confused with Signal's:

1. For each party, ``h = SHA-512(version ‖ key ‖ user)`` where ``version`` is the
   two bytes ``b"\\x00\\x01"`` (our scheme, v1), ``key`` the 32-byte Ed25519
   public key and ``user`` the UTF-8 username. Then, 5200 times,
   ``h = SHA-512(h ‖ key)``. The iterations make finding a key whose number
   collides with a given one ~2^12 times more expensive per guess.
2. The first 30 bytes of ``h`` are read as six 5-byte big-endian integers; each,
   reduced modulo 100000, gives a 5-digit group: 30 digits per party.
3. The two 30-digit strings are sorted and concatenated, so both parties compute
   the same 60 digits regardless of who is "local". Shown as 12 groups of 5.

Each party's half carries ~100 bits (6 x log2(10^5)); an attacker must match one
half of a specific victim's number, i.e. a second-preimage on ~100 bits.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proto.errors import BadSignature, InvalidKey

__all__ = [
    "DEVICE_SIGNATURE_DOMAIN",
    "PUBLIC_KEY_BYTES",
    "SAFETY_NUMBER_ITERATIONS",
    "SIGNATURE_BYTES",
    "IdentityKey",
    "device_registration_message",
    "fingerprint",
    "safety_number",
    "safety_numbers_equal",
    "verify",
    "verify_device_registration",
]

PUBLIC_KEY_BYTES = 32
"""Length of an Ed25519 public key (and of a ``deviceId``)."""

PRIVATE_KEY_BYTES = 32
"""Length of a raw Ed25519 private key (the RFC 8032 seed)."""

SIGNATURE_BYTES = 64
"""Length of an Ed25519 signature."""

DEVICE_SIGNATURE_DOMAIN = b"qpc-device-v1"
"""Prefix of the message signed at ``registerDevice`` (docs/PROTOCOL.md)."""

SAFETY_NUMBER_ITERATIONS = 5200
"""SHA-512 iterations per party in :func:`safety_number` (as in Signal)."""

_SAFETY_NUMBER_VERSION = b"\x00\x01"
_FINGERPRINT_DOMAIN = b"qpc-fingerprint-v1\x00"


def _load_public(public_key: bytes) -> Ed25519PublicKey:
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidKey(f"Ed25519 public key must be {PUBLIC_KEY_BYTES} bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise InvalidKey("not a valid Ed25519 public key") from exc


class IdentityKey:
    """A device's Ed25519 identity key pair.

    Build with :meth:`generate` or :meth:`from_private_bytes`; ``repr`` never shows
    key material.
    """

    __slots__ = ("_private", "_public")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public = private_key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> IdentityKey:
        """Create a fresh random identity key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> IdentityKey:
        """Load a key from the 32 raw bytes returned by :meth:`private_bytes`.

        Raises:
            InvalidKey: ``data`` is not 32 bytes.
        """
        if len(data) != PRIVATE_KEY_BYTES:
            raise InvalidKey(f"Ed25519 private key must be {PRIVATE_KEY_BYTES} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        """The 32 raw private key bytes. Secret: store only encrypted."""
        return self._private.private_bytes_raw()

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key, which is also the ``deviceId``."""
        return self._public

    @property
    def device_id(self) -> bytes:
        """Alias of :attr:`public_key`: the device's id on the wire."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (callers add their own domain separation)."""
        return self._private.sign(message)

    def sign_device_registration(self, hybrid_public_key: bytes) -> bytes:
        """The ``registerDevice`` signature over ``b"qpc-device-v1" ‖ hybridKey``."""
        return self.sign(device_registration_message(hybrid_public_key))

    def fingerprint(self) -> str:
        """Human fingerprint of this device's public key (see :func:`fingerprint`)."""
        return fingerprint(self._public)

    def __repr__(self) -> str:
        return f"IdentityKey(public={self._public.hex()[:16]}…)"


def verify(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 signature.

    Raises:
        BadSignature: the signature does not verify, or the key or signature is
            malformed (a peer-supplied bad key is as untrustworthy as a bad signature).
    """
    if len(signature) != SIGNATURE_BYTES:
        raise BadSignature("Ed25519 signature must be 64 bytes")
    try:
        key = _load_public(public_key)
    except InvalidKey as exc:
        raise BadSignature(str(exc)) from exc
    try:
        key.verify(signature, message)
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify") from exc


def device_registration_message(hybrid_public_key: bytes) -> bytes:
    """The exact bytes signed at ``registerDevice``: ``b"qpc-device-v1" ‖ hybridKey``."""
    return DEVICE_SIGNATURE_DOMAIN + hybrid_public_key


DEVICE_CERT_DOMAIN = b"qpc-device-cert-v1\0"
"""Domain of a device certificate (docs/PROTOCOL.md "Linked devices")."""


def device_cert_message(user: str, device: bytes, issued_ms: int) -> bytes:
    """The bytes an account's device signs when it links ``device`` to ``user``:
    ``"qpc-device-cert-v1\0" ‖ user ‖ "\0" ‖ device ‖ issued_ms (u64 BE)``."""
    return DEVICE_CERT_DOMAIN + user.encode() + b"\0" + device + issued_ms.to_bytes(8, "big")


def verify_device_cert(
    issuer: bytes, user: str, device: bytes, issued_ms: int, signature: bytes
) -> None:
    """Check that ``issuer`` (a device of ``user``) certified ``device`` for ``user``.

    Raises:
        BadSignature: it does not verify.
    """
    if not 0 <= issued_ms < 1 << 64:
        raise BadSignature("bad certificate time")
    verify(issuer, signature, device_cert_message(user, device, issued_ms))


def verify_device_registration(
    device_id: bytes, hybrid_public_key: bytes, signature: bytes
) -> None:
    """Verify a device's signature over its X-Wing public key.

    Raises:
        BadSignature: it does not verify.
    """
    verify(device_id, signature, device_registration_message(hybrid_public_key))


def fingerprint(public_key: bytes) -> str:
    """A short human fingerprint of a public key: 32 hex digits in 8 groups of 4.

    ``SHA-256("qpc-fingerprint-v1\\0" ‖ key)`` truncated to 128 bits. For spotting a
    device in a list; comparing identities between people uses :func:`safety_number`.
    """
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN + public_key).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def _party_digits(public_key: bytes, user: str) -> str:
    _load_public(public_key)
    digest = hashlib.sha512(_SAFETY_NUMBER_VERSION + public_key + user.encode()).digest()
    for _ in range(SAFETY_NUMBER_ITERATIONS):
        digest = hashlib.sha512(digest + public_key).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def safety_number(key_a: bytes, user_a: str, key_b: bytes, user_b: str) -> str:
    """The 60-digit safety number of two parties' identity keys (order-independent).

    Returns 12 groups of 5 digits separated by spaces. See the module docstring
    for the construction.

    Raises:
        InvalidKey: a key is not a valid Ed25519 public key.
    """
    first, second = sorted((_party_digits(key_a, user_a), _party_digits(key_b, user_b)))
    digits = first + second
    return " ".join(digits[i : i + 5] for i in range(0, 60, 5))


def safety_numbers_equal(a: str, b: str) -> bool:
    """Compare two safety numbers ignoring whitespace (e.g. one typed by a user)."""
    return hmac.compare_digest("".join(a.split()).encode(), "".join(b.split()).encode())
