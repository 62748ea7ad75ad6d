"""Linked devices over a real node: two devices of one account in a three-member group."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode
from proto.errors import Unauthenticated
from tests.e2e.helpers import PASSPHRASE, PASSWORD, Cli, engine_config, group_of
from tui.client.engine import Engine
from tui.client.linking import MAX_ATTEMPTS, LinkFailed, format_code

pytestmark = [pytest.mark.network]


async def _new_device(node: EmbeddedNode, base: Path, profile: str, user: str) -> Engine:
    engine = await Engine.open(engine_config(node, base / profile), PASSPHRASE, create=True)
    await engine.login(user, PASSWORD)
    return engine


def _wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


async def test_link_both_devices_receive_safety_number_unlink(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob", "carol"])
    engines += members
    alice, bob, carol = members
    laptop = await _new_device(node, tmp_path, "alice-laptop", "alice")
    engines.append(laptop)

    # Logged in with the password but not linked: in no channel.
    assert await laptop.sync() == []
    assert await laptop.channels() == ()

    code = alice.link_offer()
    existing, new = await asyncio.gather(alice.link_wait(30), laptop.link_join(code, 30))
    assert existing.device == laptop.device_id.hex() and existing.channels == (chan,)
    assert new.device == alice.device_id.hex()

    await laptop.sync()
    info = (await laptop.channels())[0]
    assert info.id == chan and info.name == "team"
    assert info.members == ("alice", "bob", "carol")
    await bob.sync()
    await carol.sync()
    devs = {m.user: set(m.devices) for m in await bob.members(chan)}
    assert devs["alice"] == {alice.device_id.hex(), laptop.device_id.hex()}

    # Both devices receive; each receives what the other sent for the account.
    await bob.send(chan, "hello both")
    assert [(m.sender, m.text) for m in await alice.sync()] == [("bob", "hello both")]
    assert [(m.sender, m.text) for m in await laptop.sync()] == [("bob", "hello both")]
    await laptop.send(chan, "from the laptop")
    assert [(m.sender, m.text) for m in await alice.sync()] == [("alice", "from the laptop")]
    assert [(m.sender, m.text) for m in await carol.sync()][-1] == ("alice", "from the laptop")
    await alice.send(chan, "from the desk")
    assert [(m.sender, m.text) for m in await laptop.sync()] == [("alice", "from the desk")]

    # The other members' safety numbers list the new device.
    check = await carol.check_key("alice")
    assert {d.device for d in check.devices} == {alice.device_id.hex(), laptop.device_id.hex()}
    new_entry = next(d for d in check.devices if d.device == laptop.device_id.hex())
    assert new_entry.status in {"new", "changed"} and new_entry.safety_number

    own = {d.device: d for d in await alice.devices()}
    assert own[laptop.device_id.hex()].channels == 1
    assert own[alice.device_id.hex()].this_device

    # Unlink: out of every channel and out of the account.
    removed = await alice.unlink(laptop.device_id.hex()[:12])
    assert removed == (chan,)
    await bob.sync()
    devs = {m.user: set(m.devices) for m in await bob.members(chan)}
    assert devs["alice"] == {alice.device_id.hex()}
    assert [d.device for d in (await bob.check_key("alice")).devices] == [alice.device_id.hex()]
    with pytest.raises(Unauthenticated):
        await (await laptop.rpc()).fetch(after_seq=0, limit=1)
    await bob.send(chan, "after unlink")
    assert [m.text for m in await alice.sync()] == ["after unlink"]
    assert "after unlink" not in [m.text for m in await laptop.history(chan)]


async def test_linked_device_is_certified_to_the_other_members(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    """bob verified alice, carol only pinned her: the laptop alice's device links
    carries each one's state ("linked by"); a device without a valid
    certificate stays ``changed`` and a verified member's send is refused."""
    from dataclasses import replace

    from proto.crypto.identity import device_cert_message
    from proto.errors import KeyChangedSinceVerified
    from tui.client.state import DeviceCertRecord

    members, chan = await group_of(node, tmp_path, ["alice", "bob", "carol"])
    engines += members
    alice, bob, carol = members
    assert (await bob.check_key("alice", verify=True)).devices[0].status == "verified"
    assert (await carol.check_key("alice")).devices[0].status == "new"
    laptop = await _new_device(node, tmp_path, "alice-laptop", "alice")
    engines.append(laptop)
    code = alice.link_offer()
    await asyncio.gather(alice.link_wait(30), laptop.link_join(code, 30))
    await bob.sync()
    await carol.sync()
    desk, lap = alice.device_id.hex(), laptop.device_id.hex()

    # The certificate arrived in the channel, signed by alice's desk device.
    cert = bob.state.device_certs[lap]
    assert cert.user == "alice" and cert.issuer == desk

    # Without it (missing) bob's client treats the laptop as a changed key.
    del bob.state.device_certs[lap]
    with pytest.raises(KeyChangedSinceVerified):
        await bob.send(chan, "refused")
    # A forged one (signed by the laptop itself, claiming the desk) is no better.
    forged = laptop.session.identity.sign(
        device_cert_message("alice", bytes.fromhex(lap), cert.issued_ms)
    )
    bob.state.device_certs[lap] = replace(cert, signature=forged.hex())
    with pytest.raises(KeyChangedSinceVerified):
        await bob.send(chan, "refused")
    check = {d.device: d for d in (await bob.check_key("alice")).devices}
    assert check[lap].status == "changed" and not check[lap].linked_by

    # With the real certificate: verified, linked by the desk; bob can send.
    bob.state.device_certs[lap] = DeviceCertRecord(
        user=cert.user, issuer=cert.issuer, issued_ms=cert.issued_ms, signature=cert.signature
    )
    await bob.send(chan, "to both devices")
    check = {d.device: d for d in (await bob.check_key("alice")).devices}
    assert check[lap].status == "verified" and check[lap].linked_by == desk
    assert check[desk].status == "verified" and not check[desk].linked_by
    assert lap in bob.state.verified["alice"]
    assert [m.text for m in await laptop.sync()] == ["to both devices"]

    # carol pinned without verifying: the laptop is pinned, still unverified.
    check = {d.device: d for d in (await carol.check_key("alice")).devices}
    assert check[lap].status == "unverified" and check[lap].linked_by == desk
    assert not check[lap].previous_device

    # A device that logs in to alice's account but is never linked has no
    # certificate: a changed key for the members who pinned alice.
    rogue = await _new_device(node, tmp_path, "alice-rogue", "alice")
    engines.append(rogue)
    check = {d.device: d for d in (await bob.check_key("alice")).devices}
    assert check[rogue.device_id.hex()].status == "changed"
    assert not check[rogue.device_id.hex()].linked_by


async def test_wrong_code_fails_and_is_rate_limited(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob"])
    engines += members
    alice, bob = members
    laptop = await _new_device(node, tmp_path, "alice-laptop", "alice")
    engines.append(laptop)

    code = alice.link_offer()
    waiting = asyncio.ensure_future(alice.link_wait(60))
    for _ in range(MAX_ATTEMPTS):
        with pytest.raises(LinkFailed, match="wrong code"):
            await laptop.link_join(format_code(_wrong(code)), 30)
    # The offer is used up: even the right code is refused now.
    with pytest.raises(LinkFailed, match="too many attempts"):
        await laptop.link_join(code, 30)
    with pytest.raises(LinkFailed, match="attempts used"):
        await waiting
    with pytest.raises(LinkFailed, match="digits"):
        await laptop.link_join("12345", 5)
    await laptop.sync()
    assert await laptop.channels() == ()
    devs = {m.user: set(m.devices) for m in await bob.members(chan)}
    assert devs["alice"] == {alice.device_id.hex()}


async def test_cli_link_devices_unlink(node: EmbeddedNode, cli: Cli) -> None:
    await cli.ok("a", "register", "alice")
    await cli.ok("a", "create-group", "team")
    await cli.ok("b", "login", "alice")
    offer = await asyncio.create_subprocess_exec(
        *_argv(cli, "a", "link", "--timeout", "60"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(cli),
    )
    assert offer.stdout is not None
    first = await asyncio.wait_for(offer.stdout.readline(), 60)
    if not first:
        _, err = await offer.communicate()
        pytest.fail(f"qpc link failed: {err.decode()}")
    code = __import__("json").loads(first)["code"]
    wrong = await cli.run("b", "link", _wrong(code.replace("-", "")))
    assert wrong.rc == 1 and "wrong code" in wrong.err
    joined = await cli.ok("b", "link", code)
    assert joined["role"] == "new"
    out, err = await asyncio.wait_for(offer.communicate(), 60)
    assert offer.returncode == 0, err.decode()
    done = __import__("json").loads(out)
    assert done["role"] == "existing" and len(done["channels"]) == 1
    sync = await cli.ok("b", "join")
    assert [c["name"] for c in sync["joined"]] == ["team"]
    devices = await cli.ok("a", "devices")
    assert sorted(d["channels"] for d in devices) == [1, 1]
    other = next(d["device"] for d in devices if not d["this_device"])
    await cli.ok("a", "unlink", other[:16])
    assert len(await cli.ok("a", "devices")) == 1


def _argv(cli: Cli, profile: str, *args: str) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "tui.cli",
        "--server",
        f"127.0.0.1:{cli.node.port}",
        "--profile",
        str(cli.base / profile),
        "--json",
        *args,
    ]


def _env(cli: Cli) -> dict[str, str]:
    from tests.e2e.helpers import cli_env

    return cli_env(cli.base)
