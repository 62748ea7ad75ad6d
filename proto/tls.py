"""TLS identity of a node and server-key trust on the client (TOFU pinning).

Node side: :func:`load_or_create_server_identity` loads a configured cert/key,
or creates a self-signed ECDSA P-256 certificate once in the node's data dir and
reuses it on every start (so its fingerprint stays stable).

Client side: the server is identified by the SHA-256 of its certificate's
SubjectPublicKeyInfo (:func:`spki_fingerprint`). :class:`TrustConfig` selects
one of: an explicit expected fingerprint, trust-on-first-use with a
:class:`PinStore` file, CA verification, or (tests only) no verification.
:func:`check_server_key` enforces it and raises
:class:`proto.errors.FingerprintMismatch` with both fingerprints on a change.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proto import files
from proto.errors import ConfigError, FingerprintMismatch

CERT_NAME = "node-cert.pem"
"""File name of the generated certificate inside the TLS directory."""
KEY_NAME = "node-key.pem"
"""File name of the generated private key inside the TLS directory."""


def spki_fingerprint(cert: x509.Certificate | bytes) -> str:
    """Lower-case hex SHA-256 of the certificate's SubjectPublicKeyInfo.

    ``cert`` may be a parsed certificate, or PEM / DER bytes.
    """
    if isinstance(cert, bytes):
        cert = (
            x509.load_pem_x509_certificate(cert)
            if cert.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(cert)
        )
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD…``, ``ab cd…`` or ``sha256:abcd…``; return 64 lower-case hex chars.

    Raises:
        ConfigError: not a SHA-256 fingerprint.
    """
    s = text.strip().lower().removeprefix("sha256:")
    s = "".join(ch for ch in s if ch not in ": ")
    if len(s) != 64 or any(ch not in "0123456789abcdef" for ch in s):
        raise ConfigError(f"not a SHA-256 fingerprint: {text!r}")
    return s


def format_fingerprint(fingerprint: str) -> str:
    """Group a fingerprint for humans: ``ab12 cd34 …`` (16 groups of 4)."""
    fp = normalize_fingerprint(fingerprint)
    return " ".join(fp[i : i + 4] for i in range(0, 64, 4))


# ------------------------------------------------------------------ node side


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerIdentity:
    """Certificate and key files of a node, and the key's fingerprint."""

    cert_file: Path
    """PEM certificate (chain) file."""
    key_file: Path
    """PEM private key file."""
    fingerprint: str
    """SPKI SHA-256 of the leaf certificate (hex)."""


def generate_self_signed(hostnames: tuple[str, ...] = ("localhost",)) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key and a 10-year self-signed certificate, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] or "qpc-node")])
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load_or_create_server_identity(
    tls_dir: Path | None,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    hostnames: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
) -> ServerIdentity:
    """The node's TLS identity.

    With ``cert_file`` and ``key_file`` those are used as given. Otherwise a
    self-signed certificate is created in ``tls_dir`` on first use (key file
    mode 0600) and reused afterwards.

    Raises:
        ConfigError: only one of cert/key given or present, no directory, or
            files that cannot be read.
    """
    if (cert_file is None) != (key_file is None):
        raise ConfigError("give both a TLS certificate and its key, or neither")
    if cert_file is None or key_file is None:
        if tls_dir is None:
            raise ConfigError("no TLS certificate configured and no data directory to create one")
        cert_file, key_file = tls_dir / CERT_NAME, tls_dir / KEY_NAME
        if not cert_file.exists() and not key_file.exists():
            files.private_dir(tls_dir)
            cert_pem, key_pem = generate_self_signed(hostnames)
            files.write_private(key_file, key_pem, exclusive=True)
            files.write_private(cert_file, cert_pem, exclusive=True)
        elif not (cert_file.exists() and key_file.exists()):
            raise ConfigError(f"{tls_dir} holds only one of {CERT_NAME}/{KEY_NAME}; refusing")
    try:
        fingerprint = spki_fingerprint(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read TLS certificate {cert_file}: {exc}") from None
    return ServerIdentity(cert_file=cert_file, key_file=key_file, fingerprint=fingerprint)


# ---------------------------------------------------------------- client side


class PinStore:
    """TOFU pins in a small JSON file: ``{"host:port": "<hex spki sha256>"}``.

    The caller owns the file (e.g. in the profile directory). Writes are atomic.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read pin store {self.path}: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ConfigError(f"pin store {self.path} is not a JSON object of strings")
        return data

    def get(self, server: str) -> str | None:
        """The pinned fingerprint of ``server`` (``host:port``), if any."""
        return self._load().get(server)

    def set(self, server: str, fingerprint: str) -> None:
        """Pin ``server`` to ``fingerprint`` (replacing any previous pin)."""
        pins = self._load()
        pins[server] = normalize_fingerprint(fingerprint)
        files.private_dir(self.path.parent)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pins-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(pins, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def all(self) -> dict[str, str]:
        """Every pin."""
        return self._load()


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustConfig:
    """How a client decides to trust a node's TLS key (checked in this order).

    * ``verify_ca``: normal WebPKI/CA verification of the certificate chain and
      host name (``ca_file`` or the system/certifi bundle).
    * ``fingerprint``: the server's SPKI SHA-256 must equal it.
    * ``pin_store``: trust on first use; afterwards the pinned key is required,
      unless ``trust_new_key`` (then the new key replaces the pin).
    * ``insecure``: accept any key (tests and benchmarks only).
    """

    verify_ca: bool = False
    """Verify the certificate chain against CAs instead of pinning."""
    ca_file: Path | None = None
    """CA bundle for ``verify_ca`` (None: the default bundle)."""
    fingerprint: str | None = None
    """Expected SPKI SHA-256 (any format :func:`normalize_fingerprint` accepts)."""
    pin_store: Path | None = None
    """TOFU pin file (see :class:`PinStore`)."""
    trust_new_key: bool = False
    """Accept and re-pin a changed key (user said so explicitly)."""
    insecure: bool = False
    """Accept any server key. Never use outside tests and benchmarks."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless exactly one way of trusting is configured."""
        modes = [
            self.verify_ca,
            self.fingerprint is not None,
            self.pin_store is not None,
            self.insecure,
        ]
        if sum(modes) != 1:
            raise ConfigError(
                "configure exactly one of verify_ca, fingerprint, pin_store or insecure"
            )
        if self.fingerprint is not None:
            normalize_fingerprint(self.fingerprint)


def check_server_key(trust: TrustConfig, server: str, cert: x509.Certificate) -> str:
    """Apply ``trust`` to the certificate a server presented; return its fingerprint.

    With ``verify_ca`` the TLS layer has already verified the chain; this only
    computes the fingerprint.

    Raises:
        FingerprintMismatch: the key differs from the expected or pinned one.
    """
    actual = spki_fingerprint(cert)
    if trust.fingerprint is not None:
        expected = normalize_fingerprint(trust.fingerprint)
        if actual != expected:
            raise FingerprintMismatch(expected, actual)
    elif trust.pin_store is not None:
        store = PinStore(trust.pin_store)
        pinned = store.get(server)
        if pinned is None or (pinned != actual and trust.trust_new_key):
            store.set(server, actual)
        elif pinned != actual:
            raise FingerprintMismatch(pinned, actual)
    return actual
