"""The receive path's sans-I/O core, driven without a node or a socket.

Real envelopes (X-Wing seal) and real OpenMLS groups; the test plays the
shell: it performs the MLS transaction an :class:`ApplyMls` asks for and
feeds the result back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from proto import mls
from proto.codec import Envelope
from proto.crypto.envelope import ContentType, HybridPrivateKey, OpenedEnvelope, seal
from proto.crypto.identity import IdentityKey
from proto.errors import MlsError
from tests.proto.test_appdata import future_record
from tui.client import api, appdata, receive
from tui.client.profile import MessageChange
from tui.client.state import EngineState

CHANNEL = b"c" * 16


@dataclass
class Device:
    ident: IdentityKey
    hybrid: HybridPrivateKey
    client: mls.Client

    @property
    def id(self) -> bytes:
        return self.ident.public_key


def _device(tmp_path: Path, name: str) -> Device:
    ident = IdentityKey.generate()
    client = mls.Client.create(
        str(tmp_path / f"{name}.db"),
        os.urandom(32),
        name.encode(),
        signature_key=ident.private_bytes(),
    )
    return Device(ident=ident, hybrid=HybridPrivateKey.generate(), client=client)


def _envelope(sender: Device, to: Device, seq: int, ctype: ContentType, body: bytes) -> Envelope:
    sealed = seal(
        sender=sender.ident,
        recipient_key=to.hybrid.public_key,
        recipient_id=to.id,
        channel_id=CHANNEL,
        content_type=ctype,
        body=body,
    )
    return Envelope(seq=seq, channel_id=CHANNEL, data=sealed.data)


def _pair(tmp_path: Path) -> tuple[Device, Device, mls.Group]:
    """Alice creates the channel and adds Bob; Bob joins (as the shell would)."""
    alice, bob = _device(tmp_path, "alice"), _device(tmp_path, "bob")
    group = alice.client.create_group(CHANNEL)
    out = group.add_members([bob.client.key_package()])
    group.merge_pending_commit()
    assert out.welcome is not None
    bob.client.join_from_welcome(out.welcome, out.ratchet_tree)
    return alice, bob, group


def _step(state: EngineState, bob: Device, env: Envelope) -> receive.Step:
    epochs = {g: bob.client.load_group(g).epoch for g in bob.client.group_ids()}
    before = state.to_json()
    step = receive.on_envelope(state, env, device_id=bob.id, hybrid=bob.hybrid, epochs=epochs)
    assert state.to_json() == before  # the core never changes the state it reads
    return step


def _apply(bob: Device, step: receive.Step) -> receive.Step:
    """The shell's job for one ApplyMls: run the MLS transaction, feed the result back."""
    (fx,) = step.effects
    assert isinstance(fx, receive.ApplyMls)
    group = bob.client.load_group(fx.opened.channel_id)
    before = receive.GroupView.of(group)
    try:
        result: receive.ProcessResult | MlsError = group.process(fx.opened.body)
    except MlsError as exc:
        result = exc
    return receive.on_processed(fx.opened, before, result, now_ms=1)


def _text(ts: int, text: str) -> bytes:
    return appdata.encode(appdata.ChatText(text=text, ts=ts))


def test_a_chat_message_becomes_a_store_effect(tmp_path: Path) -> None:
    alice, bob, group = _pair(tmp_path)
    state = EngineState(cursor=4)
    env = _envelope(alice, bob, 5, ContentType.MLS_APPLICATION, group.encrypt(_text(7, "hi")))
    step = _apply(bob, _step(state, bob, env))
    assert step.events == ()
    learn, store, unread = step.effects
    assert learn == receive.LearnDevice(device=alice.id, user="alice")
    assert isinstance(store, receive.StoreMessage)
    assert (store.message.text, store.message.sender, store.message.timestamp_ms) == (
        "hi",
        alice.id,
        7,
    )
    assert unread == receive.AddUnread(channel=CHANNEL)
    # The same envelope again (seq at the cursor once saved): nothing to do.
    assert _step(EngineState(cursor=5), bob, env) == receive.Step()
    # Processed again by MLS anyway: refused as a replay, with a warning only.
    replay = _apply(bob, _step(state, bob, env))
    assert replay.effects == ()
    assert isinstance(replay.events[0], api.SecurityWarning)


def test_hello_and_meta_are_state_effects(tmp_path: Path) -> None:
    alice, bob, group = _pair(tmp_path)
    hello = appdata.encode(appdata.Hello(access_key=bytes(range(32))))
    step = _apply(
        bob,
        _step(
            EngineState(),
            bob,
            _envelope(alice, bob, 1, ContentType.MLS_APPLICATION, group.encrypt(hello)),
        ),
    )
    assert step.effects == (
        receive.LearnDevice(device=alice.id, user="alice", access_key=bytes(range(32))),
    )
    meta = appdata.encode(
        appdata.Meta(name="team", kind="group", access_keys={"ab" * 32: "cd" * 32})
    )
    step = _apply(
        bob,
        _step(
            EngineState(),
            bob,
            _envelope(alice, bob, 2, ContentType.MLS_APPLICATION, group.encrypt(meta)),
        ),
    )
    assert receive.SetChannelMeta(channel=CHANNEL, name="team", kind="group") in step.effects


def test_future_epoch_is_held_then_released_after_the_commit(tmp_path: Path) -> None:
    alice, bob, group = _pair(tmp_path)
    commit = group.self_update()
    group.merge_pending_commit()
    early = _envelope(alice, bob, 3, ContentType.MLS_APPLICATION, group.encrypt(_text(1, "x")))
    state = EngineState()
    step = _step(state, bob, early)
    (hold,) = step.effects
    assert isinstance(hold, receive.Hold) and hold.held.seq == 3
    view = receive.GroupView.of(bob.client.load_group(CHANNEL))
    assert receive.releasable([hold.held], view, device_id=bob.id) is None
    committed = _apply(
        bob, _step(state, bob, _envelope(alice, bob, 2, ContentType.MLS_COMMIT, commit.commit))
    )
    assert committed.effects == (receive.CommitSeen(channel=CHANNEL, added=(), removed_self=False),)
    view = receive.GroupView.of(bob.client.load_group(CHANNEL))
    release = receive.releasable([hold.held], view, device_id=bob.id)
    assert release is not None
    text = _apply(bob, receive.Step(effects=(receive.ApplyMls(opened=release.opened),)))
    assert any(
        isinstance(fx, receive.StoreMessage) and fx.message.text == "x" for fx in text.effects
    )


def test_rejections_are_warnings_without_effects(tmp_path: Path) -> None:
    alice, bob, group = _pair(tmp_path)
    carol = _device(tmp_path, "carol")
    body = group.encrypt(_text(1, "x"))
    cases = [
        _envelope(alice, carol, 1, ContentType.MLS_APPLICATION, body),  # for another device
        Envelope(seq=2, channel_id=CHANNEL, data=b"garbage"),
        _envelope(alice, bob, 3, ContentType.MLS_WELCOME, b"w"),  # channel we are in
    ]
    for env in cases:
        step = _step(EngineState(), bob, env)
        assert step.effects == ()
        (warning,) = step.events
        assert isinstance(warning, api.SecurityWarning) and warning.channel == CHANNEL.hex()
    # Sealed by Carol (not a member) but carrying Alice's MLS message.
    forged = _apply(
        bob, _step(EngineState(), bob, _envelope(carol, bob, 4, ContentType.MLS_APPLICATION, body))
    )
    assert forged.effects == ()
    (warning,) = forged.events
    assert isinstance(warning, api.SecurityWarning) and "signer" in warning.reason


def test_welcome_checks(tmp_path: Path) -> None:
    alice, bob = _device(tmp_path, "alice"), _device(tmp_path, "bob")
    carol = _device(tmp_path, "carol")
    group = alice.client.create_group(CHANNEL)
    out = group.add_members([bob.client.key_package()], ratchet_tree_in_welcome=True)
    group.merge_pending_commit()
    assert out.welcome is not None
    env = _envelope(carol, bob, 1, ContentType.MLS_WELCOME, out.welcome)
    (join,) = _step(EngineState(), bob, env).effects
    assert isinstance(join, receive.JoinWelcome)
    joined = receive.GroupView.of(bob.client.join_from_welcome(join.opened.body))
    # Sealed by Carol, who is not in the group: the shell is told to delete it.
    step = receive.on_joined(join.opened, joined)
    assert step.effects == (receive.DeleteGroup(channel=CHANNEL),)
    opened = OpenedEnvelope(
        recipient_id=bob.id,
        channel_id=CHANNEL,
        content_type=ContentType.MLS_WELCOME,
        sender=alice.id,
        body=out.welcome,
    )
    ok = receive.on_joined(opened, joined)
    assert ok.effects[-1] == receive.Joined(channel=CHANNEL, inviter=alice.id, inviter_user="alice")
    # Now a member: the same Welcome again is a replay.
    good = _envelope(alice, bob, 2, ContentType.MLS_WELCOME, out.welcome)
    (warning,) = _step(EngineState(), bob, good).events
    assert isinstance(warning, api.SecurityWarning) and "replay" in warning.reason


def test_new_kinds_become_effects_and_a_future_kind_a_placeholder(tmp_path: Path) -> None:
    alice, bob, group = _pair(tmp_path)
    mid = bytes(range(16))

    def step_of(seq: int, item: bytes) -> receive.Step:
        env = _envelope(alice, bob, seq, ContentType.MLS_APPLICATION, group.encrypt(item))
        return _apply(bob, _step(EngineState(), bob, env))

    text = appdata.ChatText(text="hi", ts=3, nonce=b"\5" * 16, reply_to=mid, action=True)
    _, store, _ = step_of(1, appdata.encode(text)).effects
    assert isinstance(store, receive.StoreMessage)
    assert store.message.msg_id == appdata.message_id(alice.id, b"\5" * 16)
    assert (store.message.reply_to, store.message.action) == (mid, True)
    _, change = step_of(2, appdata.encode(appdata.Edit(target=mid, text="x", ts=4))).effects
    assert change == receive.ApplyChange(
        change=MessageChange(channel_id=CHANNEL, target=mid, actor="alice", kind="edit", text="x")
    )
    _, topic = step_of(3, appdata.encode(appdata.Topic(text="plans"))).effects
    assert topic == receive.SetTopic(channel=CHANNEL, topic="plans", by="alice")
    _, typing = step_of(4, appdata.encode(appdata.Typing())).effects
    assert typing == receive.SawTyping(channel=CHANNEL, user="alice")
    _, seen = step_of(5, appdata.encode(appdata.Receipt(up_to=mid))).effects
    assert seen == receive.SawReceipt(channel=CHANNEL, user="alice", up_to=mid)
    # a record of a kind from the future (union member 10): a placeholder line, no failure
    future = future_record()
    step = step_of(6, future)
    assert step.events == ()
    _, placeholder = step.effects
    assert isinstance(placeholder, receive.StoreMessage)
    assert placeholder.message.text == receive.UNKNOWN_PLACEHOLDER


def test_a_device_certificate_is_checked_against_its_sender(tmp_path: Path) -> None:
    from proto.crypto.identity import device_cert_message

    alice, bob, group = _pair(tmp_path)
    laptop = IdentityKey.generate().public_key

    def step_of(seq: int, cert: appdata.DeviceCert) -> receive.Step:
        data = group.encrypt(appdata.encode(cert))
        env = _envelope(alice, bob, seq, ContentType.MLS_APPLICATION, data)
        return _apply(bob, _step(EngineState(), bob, env))

    good = alice.ident.sign(device_cert_message("alice", laptop, 7))
    _, certify = step_of(1, appdata.DeviceCert(device=laptop, issued_ms=7, signature=good)).effects
    assert certify == receive.CertifyDevice(
        user="alice", issuer=alice.id, device=laptop, issued_ms=7, signature=good
    )
    # Signed by another key, or for another time: a warning, nothing stored.
    forged = IdentityKey.generate().sign(device_cert_message("alice", laptop, 7))
    for seq, item in (
        (2, appdata.DeviceCert(device=laptop, issued_ms=7, signature=forged)),
        (3, appdata.DeviceCert(device=laptop, issued_ms=8, signature=good)),
    ):
        step = step_of(seq, item)
        assert step.effects == ()
        assert [type(e).__name__ for e in step.events] == ["SecurityWarning"]
