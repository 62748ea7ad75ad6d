"""Sealed sender, bad input and secrets at rest, against a real node."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from node.embedded import EmbeddedNode
from proto.crypto import envelope as env_mod
from proto.crypto.envelope import ContentType, HybridPublicKey, seal
from proto.crypto.identity import IdentityKey
from proto.rpc_client import RpcClient
from tests.e2e.helpers import group_of, new_user
from tui.client.engine import Engine

pytestmark = [pytest.mark.network]


def _forged(
    sender: bytes, key: HybridPublicKey, recipient: bytes, channel: bytes, body: bytes
) -> bytes:
    """An envelope claiming ``sender`` but signed by some other key."""
    ctype = ContentType.MLS_APPLICATION
    signature = IdentityKey.generate().sign(env_mod.signed_message(recipient, channel, ctype, body))
    header = env_mod._HEADER.pack(
        env_mod.PLAINTEXT_VERSION, int(ctype), sender, signature, len(body)
    )
    pad = env_mod._padding(env_mod._MIN_PLAINTEXT + len(body))
    plain = b"".join((header, body, env_mod._PAD_LEN.pack(pad), bytes(pad)))
    ct = env_mod._SUITE.encrypt(plain, key._key, info=env_mod._info(recipient, channel))
    return bytes([env_mod.ENVELOPE_VERSION]) + ct


async def test_sealed_sender_rows_hold_no_sender_and_forgery_is_rejected(
    node: EmbeddedNode,
    tmp_path: Path,
    engines: list[Engine],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob"])
    engines += members
    alice, bob = members
    await alice.sync()  # learns bob's access key from his hello
    assert alice.state.devices[bob.device_id.hex()].access_key == bob.state.access_key
    assert bob.state.devices[alice.device_id.hex()].access_key == alice.state.access_key

    # A group message goes to the channel log once, without a session token:
    # the epoch's post key authorises it, so the node learns no sender.
    calls: list[dict[str, Any]] = []
    original_post = RpcClient.post_channel

    async def spy(self: RpcClient, **kw: Any) -> Any:
        calls.append(kw)
        return await original_post(self, **kw)

    monkeypatch.setattr(RpcClient, "post_channel", spy)
    await bob.send(chan, "sealed hello")
    assert len(calls) == 1 and calls[0]["auth"] == b"" and len(calls[0]["post_key"]) == 32
    assert calls[0]["recipient_ids"] == alice.device_id  # packed: 32 B per device

    with sqlite3.connect(tmp_path / "node" / "node.db") as db:
        for table in ("messages", "channel_payloads"):
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            assert not any("sender" in c for c in cols)
        rows = db.execute("SELECT * FROM messages").fetchall()
        rows += db.execute("SELECT * FROM channel_payloads").fetchall()
    assert len(rows) == 2  # alice's inbox entry and the one stored message
    blob = b"".join(v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r)
    for secret in (bob.device_id, b"bob", bytes.fromhex(bob.state.token), b"sealed hello"):
        assert secret not in blob
    assert [m.text for m in await alice.sync()] == ["sealed hello"]

    # A forged sender signature inside a well-sealed envelope.
    caplog.set_level(logging.WARNING, logger="tui.client")
    body = bob.mls.load_group(bytes.fromhex(chan)).encrypt(b'{"t":"msg","text":"forged","ts":1}')
    forged = _forged(
        bob.device_id, alice.hybrid.public_key, alice.device_id, bytes.fromhex(chan), body
    )
    await (await bob.rpc()).enqueue(
        recipient=alice.device_id, channel_id=bytes.fromhex(chan), payload=forged
    )
    assert await alice.sync() == []
    assert "BadSignature" in caplog.text
    await bob.send(chan, "still works")
    assert [m.text for m in await alice.sync()] == ["still works"]


async def test_bad_input_is_rejected_and_the_channel_keeps_working(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tui.client")
    alice = await new_user(node, tmp_path, "alice")
    bob = await new_user(node, tmp_path, "bob")
    carol = await new_user(node, tmp_path, "carol")
    mallory = await new_user(node, tmp_path, "mallory")
    engines += [alice, bob, carol, mallory]
    chan = (await alice.create_group("team")).id
    cid = bytes.fromhex(chan)
    await alice.invite(chan, ["bob"])
    bob_rpc = await bob.rpc()
    welcome = (await bob_rpc.fetch(after_seq=0, limit=10)).envelopes[0]
    await bob.sync()
    await alice.sync()
    mrpc = await mallory.rpc()

    async def deliver(payload: bytes, to: Engine = bob) -> None:
        await mrpc.enqueue(recipient=to.device_id, channel_id=cid, payload=payload)

    real = alice.mls.load_group(cid).encrypt(b'{"t":"msg","text":"x","ts":1}')
    # 1. tampered envelope
    good = seal(
        sender=alice.identity,
        recipient_key=bob.hybrid.public_key,
        recipient_id=bob.device_id,
        channel_id=cid,
        content_type=ContentType.MLS_APPLICATION,
        body=real,
    ).data
    tampered = bytearray(good)
    tampered[-40] ^= 1
    await deliver(bytes(tampered))
    # 2. an envelope sealed for another device, dropped into bob's inbox
    for_carol = seal(
        sender=alice.identity,
        recipient_key=carol.hybrid.public_key,
        recipient_id=carol.device_id,
        channel_id=cid,
        content_type=ContentType.MLS_APPLICATION,
        body=real,
    ).data
    await deliver(for_carol)
    # 3. the Welcome replayed
    await deliver(welcome.data)
    # 4. a commit from a non-member (mallory's own group under the same id and epoch)
    fake = mallory.mls.create_group(cid)
    target = bob.mls.load_group(cid).epoch
    commit = b""
    while fake.epoch <= target:
        commit = fake.self_update().commit
        if fake.epoch < target:
            fake.merge_pending_commit()
        else:
            break
    await deliver(
        seal(
            sender=mallory.identity,
            recipient_key=bob.hybrid.public_key,
            recipient_id=bob.device_id,
            channel_id=cid,
            content_type=ContentType.MLS_COMMIT,
            body=commit,
        ).data
    )
    assert await bob.sync() == []
    text = caplog.text
    assert text.count("rejected: envelope rejected (DecryptionFailed)") == 2
    assert "rejected: Welcome for a channel we are already in" in text
    assert "rejected: MLS message rejected" in text
    # the channel still works both ways, at the same epoch
    await alice.send(chan, "after the noise")
    assert [m.text for m in await bob.sync()] == ["after the noise"]
    await bob.send(chan, "reply")
    assert [m.text for m in await alice.sync()] == ["reply"]
    assert bob.mls.load_group(cid).epoch == alice.mls.load_group(cid).epoch


async def test_nothing_secret_at_rest(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob"])
    alice, bob = members
    marker = "the-plaintext-marker-4711"
    await alice.send(chan, marker)
    await bob.sync()
    await bob.send(chan, marker + "-reply")
    await alice.sync()
    secrets = {}
    for e in members:
        secrets[e.user] = [
            e.identity.private_bytes(),
            e.hybrid.private_bytes(),
            bytes.fromhex(e.state.token),
            bytes.fromhex(e.state.access_key),
            e.profile.mls_storage_key,
        ]
    for e in members:
        await e.close()
    needles = [marker.encode(), marker.encode("utf-16-le")]
    for e in members:
        files = [p for p in (tmp_path / e.user).rglob("*") if p.is_file()]
        assert any(p.name == "mls.db" for p in files) and any(p.name == "client.db" for p in files)
        for path in files:
            data = path.read_bytes()
            for needle in needles + secrets[e.user]:
                assert needle not in data, f"{path.name} leaks a secret"
                assert needle.hex().encode() not in data, f"{path.name} leaks a secret (hex)"
