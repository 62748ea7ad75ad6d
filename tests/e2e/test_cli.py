"""Two users over the ``qpc`` CLI, each command a separate process."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode
from tests.e2e.helpers import Cli, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.network]


async def test_two_users_dm_both_ways(cli: Cli) -> None:
    alice = await cli.ok("alice", "register", "alice")
    assert alice["user"] == "alice"
    assert alice["key_stock"]["count"] >= 5 and alice["key_stock"]["has_last_resort"]
    await cli.ok("bob", "register", "bob")

    dm = await cli.ok("alice", "dm", "bob", "hi bob")
    channel = dm["channel"]["id"]
    assert dm["message"]["state"] == "sent"

    got = await cli.ok("bob", "recv")
    assert [c["id"] for c in got["joined"]] == [channel]
    assert [(m["sender"], m["text"]) for m in got["messages"]] == [("alice", "hi bob")]

    # bob answers in the same DM (found, not created again)
    back = await cli.ok("bob", "dm", "alice", "hi alice")
    assert back["channel"]["id"] == channel
    got = await cli.ok("alice", "recv")
    assert [(m["sender"], m["text"]) for m in got["messages"]] == [("bob", "hi alice")]

    hist = await cli.ok("alice", "history", channel)
    assert [(m["sender"], m["text"], m["outgoing"]) for m in hist] == [
        ("alice", "hi bob", True),
        ("bob", "hi alice", False),
    ]
    members = await cli.ok("bob", "members", channel)
    assert [m["user"] for m in members] == ["alice", "bob"]
    chans = await cli.ok("alice", "channels")
    assert chans[0]["name"] == "bob" and chans[0]["kind"] == "dm"
    # at rest (history, state, MLS storage, client.log): no plaintext anywhere
    for profile in ("alice", "bob"):
        files = [p for p in (cli.base / profile).rglob("*") if p.is_file()]
        assert any(p.name == "client.log" for p in files)
        for path in files:
            data = path.read_bytes()
            assert b"hi bob" not in data and b"hi alice" not in data, path.name


async def test_listen_prints_as_messages_arrive(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    channel = (await cli.ok("alice", "dm", "bob"))["channel"]["id"]
    await cli.ok("bob", "join")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        "--server",
        f"127.0.0.1:{cli.node.port}",
        "--profile",
        str(cli.base / "bob"),
        "--json",
        "listen",
        "--count",
        "2",
        "--timeout",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(cli.base),
    )
    assert proc.stdout is not None
    await cli.ok("alice", "send", channel, "one")
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    assert first["event"] == "message" and first["text"] == "one"
    await cli.ok("alice", "send", channel, "two")
    second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    assert second["text"] == "two"
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_failures_are_one_line_and_nonzero(cli: Cli) -> None:
    res = await cli.run("nobody", "whoami")
    assert res.rc == 1 and res.err.count("\n") == 1 and res.err.startswith("qpc: error:")
    await cli.ok("alice", "register", "alice")
    for args in (("send", "no-such-channel", "x"), ("dm", "ghost"), ("invite", "zz", "bob")):
        res = await cli.run("alice", *args)
        assert res.rc == 1, args
        assert res.err.startswith("qpc: error:") and res.err.count("\n") == 1, res.err
    res = await cli.run("alice", "register", "alice")  # taken (and profile has a user)
    assert res.rc == 1
    wrong = await cli.run("alice", "whoami", env={"QPC_PASSPHRASE": "wrong"})
    assert wrong.rc == 1 and "passphrase" in wrong.err.lower()


async def test_info_commands(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    health = await cli.ok("alice", "health")
    assert health["status"] == "ok"
    ping = await cli.ok("alice", "ping", "-c", "3")
    assert len(ping["rtts_ms"]) == 3 and ping["median_ms"] > 0
    who = await cli.ok("alice", "whoami")
    assert who["server_fingerprint"] == cli.node.fingerprint
    stock = await cli.ok("alice", "refresh-keypackages")
    assert stock["count"] >= 20 and stock["has_last_resort"]
    key = await cli.ok("alice", "check-key", "bob")
    assert key["devices"][0]["status"] == "new" and not key["changed"]
    again = await cli.ok("alice", "check-key", "bob")
    assert again["devices"][0]["status"] == "unverified"  # pinned, never compared
    assert again["devices"][0]["safety_number"] == key["devices"][0]["safety_number"]
    # bob logs in from a second device: alice is told loudly
    await cli.ok("bob2", "login", "bob")
    changed = await cli.run("alice", "check-key", "bob", json_out=False)
    assert changed.rc == 0 and "KEY CHANGED" in changed.out and "WARNING" in changed.out


async def test_channel_names_notify_levels_and_send_wording(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    await cli.ok("bob", "register", "bob")
    group = await cli.ok("alice", "create-group", "bob")  # a group named like the DM peer
    dm = (await cli.ok("alice", "dm", "bob"))["channel"]["id"]
    # "#bob" is the group, "@bob" the DM; one name everywhere (the TUI's too).
    sent = await cli.run("alice", "send", "@bob", "to the dm", json_out=False)
    assert sent.rc == 0 and sent.out.startswith("sent; id "), sent.out
    sent = await cli.ok("alice", "send", "#bob", "to the group")
    assert sent["channel"] == group["id"]
    ambiguous = await cli.run("alice", "send", "bob", "x")
    assert ambiguous.rc == 1 and "ambiguous" in ambiguous.err
    chans = await cli.run("alice", "channels", json_out=False)
    assert f"{dm}  dm     @bob" in chans.out and f"{group['id']}  group  #bob" in chans.out
    hist = await cli.run("alice", "history", "@bob", json_out=False)
    assert "@bob alice: to the dm" in hist.out
    # Notify levels: shown, set, kept in the profile the TUI reads.
    assert (await cli.ok("alice", "notify", "@bob"))["level"] == "all"
    muted = await cli.ok("alice", "notify", "#bob", "mute")
    assert muted == {"channel": group["id"], "label": "#bob", "level": "mute"}
    assert json.loads((cli.base / "alice" / "notify.json").read_text()) == {group["id"]: "mute"}
    assert (cli.base / "alice" / "notify.json").stat().st_mode & 0o777 == 0o600
    text = await cli.run("alice", "notify", "#bob", "mentions", json_out=False)
    assert text.out.strip() == "#bob: notify mentions"
    bad = await cli.run("alice", "notify", "#bob", "loud")
    assert bad.rc == 2
    assert (await cli.ok("alice", "notify", "#bob", "all"))["level"] == "all"
    assert json.loads((cli.base / "alice" / "notify.json").read_text()) == {}


async def test_verified_keys_and_a_change_after_verification_blocks_sending(cli: Cli) -> None:
    await cli.ok("alice", "register", "alice")
    who = await cli.ok("bob", "register", "bob")
    first = await cli.run("alice", "check-key", "bob", json_out=False)
    assert "not verified" in first.out and "VERIFIED" not in first.out
    # Device ids print in whoami's format.
    assert f"device:      {who['device_fingerprint']}  " in first.out
    marked = await cli.ok("alice", "check-key", "bob", "--verify")
    assert [d["status"] for d in marked["devices"]] == ["verified"]
    shown = await cli.run("alice", "check-key", "bob", json_out=False)
    assert "VERIFIED" in shown.out and "not verified" not in shown.out
    # bob adds a device: a DM now includes a key alice never accepted.
    await cli.ok("bob2", "login", "bob")
    await cli.ok("alice", "dm", "bob")
    refused = await cli.run("alice", "send", "@bob", "secret plans")
    assert refused.rc == 1
    assert "changed since you verified" in refused.err and refused.err.count("\n") == 1
    hist = await cli.ok("alice", "history", "@bob")
    assert hist == []  # nothing sent, nothing half-stored
    changed = await cli.run("alice", "check-key", "bob", json_out=False)
    assert "KEY CHANGED" in changed.out and "WARNING" in changed.out
    accepted = await cli.ok("alice", "check-key", "bob", "--accept")
    statuses = sorted(d["status"] for d in accepted["devices"])
    assert statuses == ["changed", "verified"]
    after = await cli.ok("alice", "check-key", "bob")
    assert sorted(d["status"] for d in after["devices"]) == ["unverified", "verified"]
    sent = await cli.ok("alice", "send", "@bob", "now it goes")
    assert sent["state"] == "sent"


async def test_health_and_ping_need_no_account_and_write_nothing(
    node: EmbeddedNode, tmp_path: Path
) -> None:
    """The first thing a person runs against a new node: no profile, none created."""
    profile = tmp_path / "nobody"
    base = [sys.executable, "-m", "tui.cli", "--profile", str(profile), "--json"]
    base += ["--server", f"127.0.0.1:{node.port}"]
    env = cli_env(tmp_path / "data")
    for args in (["health"], ["ping", "-c", "2"]):
        proc = await asyncio.create_subprocess_exec(
            *base, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        doc = json.loads(out)
        if args[0] == "health":
            assert doc["status"] == "ok" and doc["fingerprint"] == node.fingerprint
            assert doc["pinned"] is False
        else:
            assert len(doc["rtts_ms"]) == 2
    assert not profile.exists()
    assert not (tmp_path / "data").exists()  # no local node started either
