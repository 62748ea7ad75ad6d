"""Authorisation: tokens, devices, and who may read which inbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode, start_embedded_node
from proto.crypto import opaque
from proto.errors import (
    AlreadyExists,
    Expired,
    LoginFailed,
    PermissionDenied,
    Unauthenticated,
)
from tests.node.helpers import connected, login, make_account, node_config, register

pytestmark = pytest.mark.network


async def test_device_reads_and_acks_only_its_own_inbox(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    bob = await make_account(node, "bob")
    try:
        await alice.client.enqueue(recipient=bob.device_id, channel_id=b"c", payload=b"for bob")
        # the inbox is chosen by the token, never by a parameter: alice sees only hers
        assert (await alice.client.fetch(after_seq=0, limit=10)).envelopes == ()
        await alice.client.ack(upto_seq=10)  # acks alice's (empty) inbox only
        got = await bob.client.fetch(after_seq=0, limit=10)
        assert [e.data for e in got.envelopes] == [b"for bob"]
        async with alice.client.fetch_wait(after_seq=0, timeout_ms=100) as sub:
            assert [p.envelopes async for p in sub] == [(), ()]
        # bob's token used by a client that never logged in as bob still reads bob's inbox
        # only because it holds bob's token; a forged token reads nothing
        async with connected(node, token=os.urandom(32)) as forged:
            with pytest.raises(Unauthenticated):
                await forged.fetch(after_seq=0, limit=10)
            with pytest.raises(Unauthenticated):
                await forged.ack(upto_seq=10)
            with pytest.raises(Unauthenticated):
                async with forged.fetch_wait(after_seq=0) as sub:
                    await anext(sub)
            with pytest.raises(Unauthenticated):
                await forged.whoami()
        async with connected(node, token=b"short") as bad:
            with pytest.raises(Unauthenticated):
                await bad.whoami()
        async with connected(node) as anon:
            with pytest.raises(Unauthenticated):
                await anon.fetch(after_seq=0, limit=10)
            with pytest.raises(Unauthenticated):
                await anon.list_devices(username="bob")
        assert len((await bob.client.fetch(after_seq=0, limit=10)).envelopes) == 1
    finally:
        await alice.client.close()
        await bob.client.close()


async def test_unregistered_device_cannot_use_device_calls(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice", device=False)
    try:
        who = await alice.client.whoami()
        assert not who.device_registered
        for call in (
            alice.client.fetch(after_seq=0, limit=1),
            alice.client.ack(upto_seq=1),
            alice.client.key_package_count(),
            alice.client.upload_key_packages(packages=[b"kp"]),
        ):
            with pytest.raises(PermissionDenied):
                await call
    finally:
        await alice.client.close()


async def test_device_id_of_another_account_refused(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice")
    try:
        async with connected(node) as c:
            await register(c, "mallory", "pw")
            with pytest.raises(PermissionDenied):
                await login(c, "mallory", "pw", alice.device_id)
    finally:
        await alice.client.close()


async def test_device_id_belongs_to_one_account(node: EmbeddedNode) -> None:
    from proto.crypto.identity import IdentityKey

    shared = IdentityKey.generate()
    hybrid = os.urandom(1216)
    async with connected(node) as a, connected(node) as b:
        await register(a, "alice", "pw-a")
        await register(b, "bob", "pw-b")
        # both log in with the same (not yet registered) device id
        a.token = await login(a, "alice", "pw-a", shared.public_key)
        b.token = await login(b, "bob", "pw-b", shared.public_key)
        sig = shared.sign_device_registration(hybrid)
        await a.register_device(hybrid_key=hybrid, signature=sig)
        with pytest.raises(AlreadyExists):
            await b.register_device(hybrid_key=hybrid, signature=sig)
        assert not (await b.whoami()).device_registered
        assert (await a.whoami()).device_registered
        # re-registering (key rotation) by the owner is fine
        hybrid2 = os.urandom(1216)
        await a.register_device(
            hybrid_key=hybrid2, signature=shared.sign_device_registration(hybrid2)
        )
        assert (await a.fetch_hybrid_key(device_id=shared.public_key)).hybrid_key == hybrid2


async def test_unknown_user_login_looks_like_wrong_password(node: EmbeddedNode) -> None:
    alice = await make_account(node, "alice", device=False)
    await alice.client.close()
    async with connected(node) as c:
        shapes = []
        errors: list[object] = []
        for name, password in (("alice", "wrong password"), ("nosuchuser", "whatever")):
            start = opaque.client_login_start(password)
            resp = await c.login_start(username=name, request=start.request)
            shapes.append((len(resp.login_id), len(resp.response)))
            with pytest.raises(LoginFailed) as client_side:
                opaque.client_login_finish(password, start.state, resp.response)
            errors.append(type(client_side.value))
            # a finalization that cannot be valid gets the same answer for both
            with pytest.raises(LoginFailed) as server_side:
                await c.login_finish(
                    login_id=resp.login_id, finalization=bytes(64), device_id=os.urandom(32)
                )
            errors.append((server_side.value.code, server_side.value.message))
        assert shapes[0] == shapes[1]
        assert errors[0] == errors[2] and errors[1] == errors[3]
        # the unknown user's response is stable across attempts (as for a real account)
        r1 = await c.login_start(
            username="nosuchuser", request=opaque.client_login_start("a").request
        )
        r2 = await c.login_start(
            username="nosuchuser", request=opaque.client_login_start("b").request
        )
        assert len(r1.response) == len(r2.response) == shapes[0][1]
        # an unknown or reused login id is refused the same way
        with pytest.raises(LoginFailed):
            await c.login_finish(
                login_id=os.urandom(16), finalization=bytes(64), device_id=os.urandom(32)
            )


async def test_expired_token_refused(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    handle = await start_embedded_node(
        node_config(tmp_path, session_ttl_s=60), wall_clock=lambda: now[0]
    )
    try:
        alice = await make_account(handle, "alice")
        try:
            assert (await alice.client.whoami()).username == "alice"
            now[0] += 61
            with pytest.raises(Expired):
                await alice.client.whoami()
            with pytest.raises(Expired):
                await alice.client.fetch(after_seq=0, limit=1)
            # a fresh login works again
            alice.client.token = await login(alice.client, "alice", alice.password, alice.device_id)
            assert (await alice.client.whoami()).username == "alice"
        finally:
            await alice.client.close()
    finally:
        await handle.stop()


async def test_unlink_device_only_another_device_of_the_own_account(node: EmbeddedNode) -> None:
    from proto.errors import NotFound

    alice = await make_account(node, "alice")
    bob = await make_account(node, "bob")
    try:
        with pytest.raises(PermissionDenied):
            await alice.client.unlink_device(device_id=alice.device_id)
        with pytest.raises(NotFound):
            await alice.client.unlink_device(device_id=bob.device_id)
        with pytest.raises(NotFound):
            await alice.client.unlink_device(device_id=os.urandom(32))
        assert [d.device_id for d in (await alice.client.list_devices(username="bob")).devices] == [
            bob.device_id
        ]
        async with connected(node) as anon:
            with pytest.raises(Unauthenticated):
                await anon.unlink_device(device_id=bob.device_id)
    finally:
        await alice.client.close()
        await bob.client.close()
