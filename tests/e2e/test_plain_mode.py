"""``qpc --plain`` over a real node: one line per output, announcements, navigation."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.e2e.helpers import Cli, cli_env

pytestmark = [pytest.mark.network]

BOX = set("─│┌┐└┘├┤┬┴┼━┃╭╮╯╰═║")


class Plain:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def until(self, want: str) -> str:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            assert raw, f"qpc --plain ended; output so far: {self.lines}"
            line = raw.decode()
            assert "\x1b" not in line, f"escape sequence in plain output: {line!r}"
            assert not BOX & set(line), f"box drawing in plain output: {line!r}"
            self.lines.append(line.rstrip("\n"))
            if want in line:
                return self.lines[-1]

    async def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()


async def test_plain_mode_announces_and_navigates(cli: Cli) -> None:
    await cli.ok("a", "register", "alice")
    await cli.ok("b", "register", "bob")
    chan = (await cli.ok("a", "create-group", "team"))["id"]
    await cli.ok("a", "invite", chan, "bob")
    await cli.ok("b", "join")
    await cli.ok("a", "send", chan, "first")
    await cli.ok("a", "send", chan, "second")
    await cli.ok("b", "recv")

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        "--plain",
        "--server",
        f"127.0.0.1:{cli.node.port}",
        "--profile",
        str(cli.base / "b"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(cli.base, TERM="xterm-256color", COLUMNS="80", LINES="24"),
    )
    p = Plain(proc)
    try:
        assert "Signed in as bob" in await p.until("Plain mode")
        assert "2 message(s)" in await p.until("Channel #team")
        await p.type("/p")
        line = await p.until("1 of 2")
        assert line.startswith("1 of 2. alice, ") and line.endswith(": first")
        await p.type("/p")
        await p.until("Start of channel")
        await p.type("/n")
        assert (await p.until("2 of 2")).endswith(": second")
        await p.type("/n")
        await p.until("End of channel")
        # a new message is announced as one line, and navigation reaches it
        await cli.ok("a", "send", chan, "third")
        assert await p.until("New in") == "New in #team from alice: third"
        await p.type("/last")
        assert (await p.until("3 of 3")).endswith(": third")
        await p.type("hello from bob")
        await p.until("Sent")
        got = await cli.ok("a", "recv")
        assert [m["text"] for m in got["messages"]] == ["hello from bob"]
        await p.type("/who")
        assert await p.until("Members:") == "Members: alice, bob."
        await p.type("/bogus")
        await p.until("Unknown command /bogus")
        await p.type("/quit")
        await p.until("Goodbye.")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
