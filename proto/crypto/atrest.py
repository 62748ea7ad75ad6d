"""Keys and AEAD records for data at rest on the client.

Key hierarchy (all keys 32 bytes)::

    passphrase --Argon2id(salt, KdfParams)--> passphrase key  (MasterKey)
        HKDF "verifier"  -> verifier, stored in the profile metadata
        HKDF "key-wrap"  -> wraps the random root key (stored wrapped in the metadata)
    root key (random, survives passphrase changes)
        HKDF "db-records"  -> RecordCipher for values in the client database
        HKDF "db-index"    -> HMAC key for blind indexes (e.g. channel ids)
        HKDF "mls-storage" -> key handed to the MLS binding's storage codec

HKDF is HKDF-SHA256 with no salt and ``info = "qpc-atrest-v1\\0" ‖ purpose``.

Argon2id parameters default to 64 MiB memory, 3 passes, 1 lane (the second
recommended option of RFC 9106 §4 uses 64 MiB/3 passes/4 lanes; one lane because
cryptography computes lanes serially anyway). Tests pass
:data:`FAST_TEST_PARAMS`; production code never should.

A wrong passphrase is caught by comparing the verifier (constant time) before
any data is touched. The verifier is an HKDF output of the Argon2id key, so it
helps an offline guesser no more than any ciphertext would.

Records are ``u8 version ‖ 12 B random nonce ‖ ChaCha20-Poly1305 ciphertext``
with associated data binding table, column and row, so a value copied to another
row or column fails to decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import unicodedata
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proto.errors import DecryptionFailed, LocalError, ProfileError, WrongPassphrase

__all__ = [
    "DEFAULT_PARAMS",
    "FAST_TEST_PARAMS",
    "KEY_BYTES",
    "PURPOSE_DB_INDEX",
    "PURPOSE_DB_RECORDS",
    "PURPOSE_MLS_STORAGE",
    "SALT_BYTES",
    "KdfParams",
    "MasterKey",
    "RecordCipher",
    "StorageKeys",
    "derive_subkey",
    "new_salt",
    "normalize_passphrase",
    "record_ad",
]

KEY_BYTES = 32
"""Length of every symmetric key here."""
SALT_BYTES = 16
"""Length of the Argon2id salt stored in the profile."""
PURPOSE_DB_RECORDS = "db-records"
"""HKDF purpose of the client database's record key."""
PURPOSE_DB_INDEX = "db-index"
"""HKDF purpose of the blind-index HMAC key."""
PURPOSE_MLS_STORAGE = "mls-storage"
"""HKDF purpose of the 32-byte key for the MLS storage codec."""

_HKDF_PREFIX = b"qpc-atrest-v1\x00"
_RECORD_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAP_AD = b"qpc-atrest-v1\x00root-key"


@dataclass(frozen=True, slots=True, kw_only=True)
class KdfParams:
    """Argon2id cost parameters, stored in the profile next to the salt."""

    memory_kib: int = 64 * 1024
    """Memory in KiB (default 64 MiB)."""
    iterations: int = 3
    """Number of passes over memory."""
    lanes: int = 1
    """Degree of parallelism."""

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= 16:
            raise LocalError("argon2 lanes must be 1-16")
        if not 8 * self.lanes <= self.memory_kib <= 4 * 1024 * 1024:
            raise LocalError("argon2 memory must be 8*lanes KiB to 4 GiB")
        if not 1 <= self.iterations <= 64:
            raise LocalError("argon2 iterations must be 1-64")

    def to_dict(self) -> dict[str, int | str]:
        """A JSON-ready form (with the algorithm name)."""
        return {
            "alg": "argon2id",
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
        }

    @classmethod
    def from_dict(cls, data: object) -> KdfParams:
        """Parse :meth:`to_dict` output.

        Raises:
            ProfileError: missing or invalid fields.
        """
        if not isinstance(data, dict) or data.get("alg") != "argon2id":
            raise ProfileError("profile metadata: unsupported passphrase KDF")
        values = [data.get(k) for k in ("memory_kib", "iterations", "lanes")]
        if not all(type(v) is int for v in values):
            raise ProfileError("profile metadata: bad KDF parameters")
        try:
            return cls(
                memory_kib=data["memory_kib"], iterations=data["iterations"], lanes=data["lanes"]
            )
        except LocalError as exc:
            raise ProfileError(f"profile metadata: {exc}") from exc


DEFAULT_PARAMS = KdfParams()
"""64 MiB, 3 passes, 1 lane."""

FAST_TEST_PARAMS = KdfParams(memory_kib=64, iterations=1, lanes=1)
"""Cheap parameters for tests only; they give no protection against guessing."""


def new_salt() -> bytes:
    """A fresh random salt for :meth:`MasterKey.derive`."""
    return os.urandom(SALT_BYTES)


def normalize_passphrase(passphrase: str | bytes) -> bytes:
    """NFKC-normalise a text passphrase and encode it as UTF-8 (bytes pass through)."""
    if isinstance(passphrase, bytes):
        return passphrase
    return unicodedata.normalize("NFKC", passphrase).encode()


def derive_subkey(key: bytes, purpose: str, length: int = KEY_BYTES) -> bytes:
    """An independent subkey: HKDF-SHA256(key, info = "qpc-atrest-v1\\0" ‖ purpose)."""
    if len(key) != KEY_BYTES:
        raise LocalError(f"key must be {KEY_BYTES} bytes")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=None,
        info=_HKDF_PREFIX + purpose.encode(),
    ).derive(key)


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key derived from the passphrase; it only verifies and wraps the root key."""

    key: bytes = field(repr=False)
    """32 secret bytes from Argon2id."""

    @classmethod
    def derive(cls, passphrase: str | bytes, salt: bytes, params: KdfParams) -> MasterKey:
        """Run Argon2id. CPU- and memory-heavy and blocking: call it in a thread.

        Raises:
            LocalError: the salt is shorter than :data:`SALT_BYTES`.
        """
        if len(salt) < SALT_BYTES:
            raise LocalError(f"salt must be at least {SALT_BYTES} bytes")
        kdf = Argon2id(
            salt=salt,
            length=KEY_BYTES,
            iterations=params.iterations,
            lanes=params.lanes,
            memory_cost=params.memory_kib,
        )
        return cls(kdf.derive(normalize_passphrase(passphrase)))

    def verifier(self) -> bytes:
        """The value stored in the profile to recognise this passphrase."""
        return derive_subkey(self.key, "verifier")

    def check(self, verifier: bytes) -> None:
        """Compare with a stored verifier in constant time.

        Raises:
            WrongPassphrase: it does not match.
        """
        if not hmac.compare_digest(self.verifier(), verifier):
            raise WrongPassphrase("wrong passphrase")

    def wrap(self, root_key: bytes) -> bytes:
        """Encrypt the root key for storage in the profile metadata."""
        nonce = os.urandom(_NONCE_BYTES)
        aead = ChaCha20Poly1305(derive_subkey(self.key, "key-wrap"))
        return bytes([_RECORD_VERSION]) + nonce + aead.encrypt(nonce, root_key, _WRAP_AD)

    def unwrap(self, wrapped: bytes) -> bytes:
        """Decrypt a root key made by :meth:`wrap`.

        Raises:
            DecryptionFailed: the wrapped key is damaged or belongs to another passphrase.
        """
        aead = ChaCha20Poly1305(derive_subkey(self.key, "key-wrap"))
        return _open(aead, wrapped, _WRAP_AD)


def _open(aead: ChaCha20Poly1305, blob: bytes, ad: bytes) -> bytes:
    if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[0] != _RECORD_VERSION:
        raise DecryptionFailed("encrypted record is malformed")
    try:
        return aead.decrypt(blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :], ad)
    except InvalidTag as exc:
        raise DecryptionFailed("encrypted record failed to authenticate") from exc


def _field(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        tag, raw = b"b", value
    elif isinstance(value, str):
        tag, raw = b"s", value.encode()
    else:
        tag, raw = b"i", str(value).encode()
    return tag + struct.pack(">I", len(raw)) + raw


def record_ad(table: str, column: str, row: bytes | str | int) -> bytes:
    """Associated data binding a record to its table, column and row (unambiguous)."""
    return b"qpc-record-v1\x00" + _field(table) + _field(column) + _field(row)


class RecordCipher:
    """ChaCha20-Poly1305 for database values with a random nonce per record."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise LocalError(f"record key must be {KEY_BYTES} bytes")
        self._aead = ChaCha20Poly1305(key)

    def encrypt(
        self, plaintext: bytes, *, table: str, column: str, row: bytes | str | int
    ) -> bytes:
        """Encrypt a value for one (table, column, row) cell."""
        nonce = os.urandom(_NONCE_BYTES)
        ad = record_ad(table, column, row)
        return bytes([_RECORD_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, ad)

    def decrypt(self, blob: bytes, *, table: str, column: str, row: bytes | str | int) -> bytes:
        """Decrypt a value written by :meth:`encrypt` for the same cell.

        Raises:
            DecryptionFailed: tampered, truncated, or from another cell or key.
        """
        return _open(self._aead, blob, record_ad(table, column, row))

    def __repr__(self) -> str:
        return "RecordCipher(<key hidden>)"


@dataclass(frozen=True, slots=True)
class StorageKeys:
    """The keys derived from a profile's root key."""

    records: RecordCipher = field(repr=False)
    """Encrypts database values."""
    index_key: bytes = field(repr=False)
    """HMAC key for blind indexes (see :meth:`blind_index`)."""
    mls_storage_key: bytes = field(repr=False)
    """32 bytes for the MLS binding's encrypting storage codec."""

    @classmethod
    def from_root(cls, root_key: bytes) -> StorageKeys:
        """Derive every subkey from the 32-byte root key."""
        return cls(
            RecordCipher(derive_subkey(root_key, PURPOSE_DB_RECORDS)),
            derive_subkey(root_key, PURPOSE_DB_INDEX),
            derive_subkey(root_key, PURPOSE_MLS_STORAGE),
        )

    def blind_index(self, kind: str, value: bytes) -> bytes:
        """A keyed lookup tag: equal inputs match, but the tag reveals nothing without the key."""
        return hmac.new(self.index_key, _field(kind) + _field(value), hashlib.sha256).digest()
