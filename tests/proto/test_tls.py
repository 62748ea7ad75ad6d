"""Node TLS identity and client key trust: TOFU pins, explicit fingerprints, CA mode."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proto import tls
from proto.errors import ConfigError, FingerprintMismatch, TransportError
from proto.rpc_client import ClientConfig, RpcClient
from proto.rpc_server import RpcServer, ServerConfig
from tests.proto import samples
from tests.proto.handler import FakeHandler


def test_identity_created_once_and_reused(tmp_path: Path) -> None:
    first = tls.load_or_create_server_identity(tmp_path / "tls")
    second = tls.load_or_create_server_identity(tmp_path / "tls")
    assert first == second
    assert stat.S_IMODE(first.key_file.stat().st_mode) == 0o600
    assert first.fingerprint == tls.spki_fingerprint(first.cert_file.read_bytes())
    other = tls.load_or_create_server_identity(tmp_path / "other")
    assert other.fingerprint != first.fingerprint


def test_identity_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        tls.load_or_create_server_identity(None)
    with pytest.raises(ConfigError):
        tls.load_or_create_server_identity(tmp_path, cert_file=tmp_path / "c.pem")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / tls.CERT_NAME).write_bytes(b"x")
    with pytest.raises(ConfigError):
        tls.load_or_create_server_identity(tmp_path / "half")


def test_fingerprint_formats() -> None:
    fp = "ab" * 32
    assert tls.normalize_fingerprint("SHA256:" + ":".join(["AB"] * 32)) == fp
    assert tls.format_fingerprint(fp).split() == ["abab"] * 16
    with pytest.raises(ConfigError):
        tls.normalize_fingerprint("abc")


def test_trust_config_needs_exactly_one_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        tls.TrustConfig().validate()
    with pytest.raises(ConfigError):
        tls.TrustConfig(insecure=True, pin_store=tmp_path / "p").validate()
    with pytest.raises(ConfigError):
        RpcClient(ClientConfig())


async def start(tmp_path: Path, name: str, port: int = 0, **kw: object) -> RpcServer:
    cfg = ServerConfig(host="127.0.0.1", port=port, tls_dir=tmp_path / name, **kw)  # type: ignore[arg-type]
    srv = RpcServer(FakeHandler(), cfg)
    await srv.start()
    return srv


def client(port: int, trust: tls.TrustConfig, **kw: object) -> RpcClient:
    return RpcClient(ClientConfig(host="127.0.0.1", port=port, trust=trust, **kw))  # type: ignore[arg-type]


@pytest.mark.network
async def test_tofu_pins_then_refuses_changed_key(tmp_path: Path) -> None:
    pins = tmp_path / "profile" / "pins.json"
    trust = tls.TrustConfig(pin_store=pins)
    srv = await start(tmp_path, "a")
    port, old_fp = srv.port, srv.fingerprint
    async with client(port, trust) as cl:
        assert await cl.health() == samples.RESULTS["health"]
        assert cl.fingerprint == old_fp
    assert tls.PinStore(pins).get(f"127.0.0.1:{port}") == old_fp
    async with client(port, trust) as cl:  # same key again: fine
        await cl.health()
    await srv.close()

    impostor = await start(tmp_path, "b", port=port)  # same address, new key
    try:
        with pytest.raises(FingerprintMismatch) as info:
            async with client(port, trust):
                pass
        assert info.value.expected == old_fp
        assert info.value.actual == impostor.fingerprint
        assert old_fp in str(info.value) and impostor.fingerprint in str(info.value)
        assert tls.PinStore(pins).get(f"127.0.0.1:{port}") == old_fp  # pin unchanged
        # The user explicitly accepts the new key: it replaces the pin.
        async with client(port, tls.TrustConfig(pin_store=pins, trust_new_key=True)) as cl:
            await cl.health()
        assert tls.PinStore(pins).get(f"127.0.0.1:{port}") == impostor.fingerprint
    finally:
        await impostor.close()


@pytest.mark.network
async def test_explicit_fingerprint(tmp_path: Path) -> None:
    srv = await start(tmp_path, "a")
    try:
        pretty = tls.format_fingerprint(srv.fingerprint).upper()
        async with client(srv.port, tls.TrustConfig(fingerprint=pretty)) as cl:
            assert await cl.health() == samples.RESULTS["health"]
        wrong = tls.TrustConfig(fingerprint="00" * 32)
        with pytest.raises(FingerprintMismatch):
            async with client(srv.port, wrong):
                pass
        assert srv.active_calls == 0
    finally:
        await srv.close()


def make_ca_and_leaf(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a localhost certificate it signed: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.mark.network
async def test_ca_verified_mode(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_leaf(tmp_path)
    srv = RpcServer(
        FakeHandler(), ServerConfig(host="127.0.0.1", port=0, cert_file=cert, key_file=key)
    )
    await srv.start()
    try:
        good = tls.TrustConfig(verify_ca=True, ca_file=ca)
        async with client(srv.port, good, server_name="localhost") as cl:
            assert await cl.health() == samples.RESULTS["health"]
        (tmp_path / "other").mkdir()
        other_ca, _, _ = make_ca_and_leaf(tmp_path / "other")
        bad = tls.TrustConfig(verify_ca=True, ca_file=other_ca)
        with pytest.raises(TransportError):
            async with client(srv.port, bad, server_name="localhost", reconnect=False):
                pass
    finally:
        await srv.close()
