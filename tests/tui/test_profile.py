"""Encrypted client profile: create/open, secrets, history, wrong passphrase, nothing in clear."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from proto.crypto.atrest import DEFAULT_PARAMS, FAST_TEST_PARAMS
from proto.crypto.envelope import HybridPrivateKey
from proto.crypto.identity import IdentityKey
from proto.errors import DecryptionFailed, ProfileError, WrongPassphrase
from tui.client import profile as prof
from tui.client.profile import ChatMessage, Profile

PASS = "correct horse battery staple"
CHANNEL = b"\x01channel-one"


def _msg(text: str, channel: bytes = CHANNEL, ts: int = 1) -> ChatMessage:
    return ChatMessage(
        channel_id=channel,
        sender=b"\x02" * 32,
        sender_name="alice",
        timestamp_ms=ts,
        text=text,
    )


def _snapshot(path: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


async def _create(path: Path) -> Profile:
    return await Profile.create(path, PASS, kdf=FAST_TEST_PARAMS)


async def test_create_then_open(tmp_path: Path) -> None:
    path = tmp_path / "p"
    async with await _create(path) as p:
        await p.put_secret("server", b"example.org:7000")
        key = p.mls_storage_key
        assert len(key) == 32
    assert Profile.exists(path)
    async with await Profile.open(path, PASS) as p:
        assert await p.get_secret("server") == b"example.org:7000"
        assert await p.get_secret("missing") is None
        assert p.mls_storage_key == key
        assert p.mls_state_path == path / prof.MLS_DB
        await p.delete_secret("server")
        assert await p.get_secret("server") is None


async def test_profiles_have_independent_keys(tmp_path: Path) -> None:
    async with await _create(tmp_path / "a") as a, await _create(tmp_path / "b") as b:
        assert a.mls_storage_key != b.mls_storage_key


async def test_device_keys_round_trip(tmp_path: Path) -> None:
    ident, hybrid = IdentityKey.generate(), HybridPrivateKey.generate()
    async with await _create(tmp_path) as p:
        assert await p.get_identity() is None
        assert await p.get_hybrid_key() is None
        await p.put_identity(ident)
        await p.put_hybrid_key(hybrid)
    async with await Profile.open(tmp_path, PASS) as p:
        got_ident = await p.get_identity()
        got_hybrid = await p.get_hybrid_key()
    assert got_ident is not None and got_ident.public_key == ident.public_key
    assert got_hybrid is not None and got_hybrid.public_key == hybrid.public_key


async def test_message_history(tmp_path: Path) -> None:
    async with await _create(tmp_path) as p:
        ids = [await p.append_message(_msg(f"m{i}", ts=i)) for i in range(5)]
        await p.append_message(_msg("elsewhere", channel=b"other"))
        msgs = await p.list_messages(CHANNEL)
        assert [m.text for m in msgs] == [f"m{i}" for i in range(5)]
        assert [m.local_id for m in msgs] == ids
        assert msgs[0] == ChatMessage(
            channel_id=CHANNEL,
            sender=b"\x02" * 32,
            sender_name="alice",
            timestamp_ms=0,
            text="m0",
            local_id=ids[0],
        )
        last_two = await p.list_messages(CHANNEL, limit=2)
        assert [m.text for m in last_two] == ["m3", "m4"]
        page = await p.list_messages(CHANNEL, limit=2, before_id=last_two[0].local_id)
        assert [m.text for m in page] == ["m1", "m2"]
        assert [m.text for m in await p.list_messages(b"other")] == ["elsewhere"]
        assert await p.list_messages(b"none") == []


async def test_wrong_passphrase_leaves_files_identical(tmp_path: Path) -> None:
    async with await _create(tmp_path) as p:
        await p.put_secret("s", b"v")
        await p.append_message(_msg("hello"))
    before = _snapshot(tmp_path)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        await Profile.open(tmp_path, "not the passphrase")
    assert _snapshot(tmp_path) == before


async def test_create_refuses_existing_and_open_refuses_missing(tmp_path: Path) -> None:
    await (await _create(tmp_path)).close()
    with pytest.raises(ProfileError, match="already exists"):
        await _create(tmp_path)
    with pytest.raises(ProfileError, match="no profile"):
        await Profile.open(tmp_path / "nothing", PASS)
    with pytest.raises(ProfileError):
        await Profile.create(tmp_path / "x", "", kdf=FAST_TEST_PARAMS)


async def test_file_modes(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "profile"
    async with await _create(path) as p:
        await p.put_secret("s", b"v")
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        files = [f for f in path.iterdir() if f.is_file()]
        assert {f.name for f in files} >= {prof.META_FILE, prof.CLIENT_DB}
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


async def test_nothing_in_clear_on_disk(tmp_path: Path) -> None:
    ident, hybrid = IdentityKey.generate(), HybridPrivateKey.generate()
    plaintext = "the eagle lands at midnight"
    channel = b"secret-channel-id-1234"
    async with await _create(tmp_path) as p:
        await p.put_identity(ident)
        await p.put_hybrid_key(hybrid)
        await p.append_message(_msg(plaintext, channel=channel))
        mls_key = p.mls_storage_key
        # Check the live files too (WAL not yet checkpointed), then after close.
        needles = [
            plaintext.encode(),
            channel,
            b"alice",
            ident.private_bytes(),
            hybrid.private_bytes(),
            hybrid.private_bytes()[:32],
            hybrid.private_bytes()[64:],
            mls_key,
        ]
        needles += [n.hex().encode() for n in needles] + [base64.b64encode(n) for n in needles]
        _assert_absent(tmp_path, needles)
    _assert_absent(tmp_path, needles)


def _assert_absent(path: Path, needles: list[bytes]) -> None:
    blobs = {f.name: f.read_bytes() for f in path.rglob("*") if f.is_file()}
    assert blobs
    for name, blob in blobs.items():
        for needle in needles:
            assert needle not in blob, f"{needle!r} found in {name}"


async def test_tampered_rows_fail_to_decrypt(tmp_path: Path) -> None:
    async with await _create(tmp_path) as p:
        await p.put_secret("a", b"value-a")
        await p.put_secret("b", b"value-b")
        await p.append_message(_msg("one"))
        await p.append_message(_msg("two"))
    db = sqlite3.connect(tmp_path / prof.CLIENT_DB)
    with db:
        # Swap secret values and message records between rows.
        va = db.execute("SELECT value FROM secrets WHERE name='a'").fetchone()[0]
        vb = db.execute("SELECT value FROM secrets WHERE name='b'").fetchone()[0]
        db.execute("UPDATE secrets SET value=? WHERE name='a'", (vb,))
        db.execute("UPDATE secrets SET value=? WHERE name='b'", (va,))
        r1, r2 = [r[0] for r in db.execute("SELECT record FROM messages ORDER BY id")]
        db.execute("UPDATE messages SET record=? WHERE id=1", (r2,))
        db.execute("UPDATE messages SET record=? WHERE id=2", (r1,))
    db.close()
    async with await Profile.open(tmp_path, PASS) as p:
        with pytest.raises(DecryptionFailed):
            await p.get_secret("a")
        with pytest.raises(DecryptionFailed):
            await p.list_messages(CHANNEL)


async def test_change_passphrase(tmp_path: Path) -> None:
    async with await _create(tmp_path) as p:
        await p.append_message(_msg("kept"))
        with pytest.raises(WrongPassphrase):
            await p.change_passphrase("nope", "new")
        await p.change_passphrase(PASS, "new passphrase")
    with pytest.raises(WrongPassphrase):
        await Profile.open(tmp_path, PASS)
    async with await Profile.open(tmp_path, "new passphrase") as p:
        assert [m.text for m in await p.list_messages(CHANNEL)] == ["kept"]
    assert not any(f.name.endswith(".tmp") for f in tmp_path.iterdir())


async def test_default_kdf_params_recorded(tmp_path: Path) -> None:
    await (await Profile.create(tmp_path, PASS)).close()
    meta = json.loads((tmp_path / prof.META_FILE).read_text())
    assert meta["kdf"] == DEFAULT_PARAMS.to_dict()
    assert len(base64.b64decode(meta["salt"])) == 16


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: b"not json",
        lambda m: json.dumps({**m, "format": 99}).encode(),
        lambda m: json.dumps({**m, "salt": "***"}).encode(),
        lambda m: json.dumps({k: v for k, v in m.items() if k != "verifier"}).encode(),
        lambda m: json.dumps({**m, "kdf": {"alg": "md5"}}).encode(),
    ],
)
async def test_damaged_metadata_is_profile_error(tmp_path: Path, damage: object) -> None:
    await (await _create(tmp_path)).close()
    meta_path = tmp_path / prof.META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_bytes(damage(meta))  # type: ignore[operator]
    with pytest.raises(ProfileError):
        await Profile.open(tmp_path, PASS)


async def test_damaged_wrapped_root_is_profile_error(tmp_path: Path) -> None:
    await (await _create(tmp_path)).close()
    meta_path = tmp_path / prof.META_FILE
    meta = json.loads(meta_path.read_text())
    wrapped = bytearray(base64.b64decode(meta["wrapped_root"]))
    wrapped[-1] ^= 1
    meta["wrapped_root"] = base64.b64encode(bytes(wrapped)).decode()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ProfileError, match="damaged"):
        await Profile.open(tmp_path, PASS)


async def test_closed_profile_refuses_use(tmp_path: Path) -> None:
    p = await _create(tmp_path)
    await p.close()
    await p.close()
    with pytest.raises(ProfileError, match="closed"):
        await p.get_secret("x")


def test_default_profile_dir_is_per_user() -> None:
    d = prof.default_profile_dir("work")
    assert d.name == "work" and d.parent.name == "profiles"
    assert os.path.isabs(d)


async def test_garbage_database_is_profile_error(tmp_path: Path) -> None:
    await (await _create(tmp_path)).close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / (prof.CLIENT_DB + suffix)).unlink(missing_ok=True)
    (tmp_path / prof.CLIENT_DB).write_bytes(b"this is not a database" * 100)
    with pytest.raises(ProfileError, match="database"):
        await Profile.open(tmp_path, PASS)


async def test_short_salt_in_metadata_is_profile_error(tmp_path: Path) -> None:
    await (await _create(tmp_path)).close()
    meta_path = tmp_path / prof.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["salt"] = base64.b64encode(b"12345678").decode()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ProfileError, match="salt"):
        await Profile.open(tmp_path, PASS)
