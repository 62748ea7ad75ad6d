"""``qpc serve-web`` in a real headless Chromium: the page loads, registers, chats with ``qpc``.

Chromium is driven over the DevTools protocol (aiohttp websocket): keys go
in with ``Input.*``; the screen is read from the websocket frames the page
receives (the terminal output of the session's TUI), so the test needs no
OCR of the canvas. Slow: marked ``slow`` and ``network``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ssh.helpers import ROOT, server_env
from tui.client.localnode import read_local_node

aiohttp = pytest.importorskip("aiohttp")
pytest.importorskip("textual_serve")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.network,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium"),
]

_ESC = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
SCREENSHOT_ENV = "QPC_WEB_SCREENSHOT"
"""Where to save the page's screenshot (``docs/screenshots/web.png`` to update the docs)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One Chromium page over CDP; collects what the page's websocket receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = 0
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.screen = ""
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            doc = json.loads(msg.data)
            if "id" in doc and doc["id"] in self.waiting:
                self.waiting.pop(doc["id"]).set_result(doc.get("result"))
            elif doc.get("method") == "Network.webSocketFrameReceived":
                resp = doc["params"]["response"]
                if resp["opcode"] == 2:
                    data = base64.b64decode(resp["payloadData"]).decode("utf-8", "replace")
                    self.screen += _ESC.sub("", data)

    async def call(self, method: str, **params: Any) -> Any:
        self.ids += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[self.ids] = fut
        await self.ws.send_str(json.dumps({"id": self.ids, "method": method, "params": params}))
        return await asyncio.wait_for(fut, 30)

    async def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in self.screen:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{text!r} not shown; last: {self.screen[-500:]!r}")
            await asyncio.sleep(0.1)

    async def type(self, text: str) -> None:
        await self.call("Input.insertText", text=text)

    async def key(self, key: str, code: str, vk: int, modifiers: int = 0) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            await self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=vk,
                modifiers=modifiers,
            )


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    profile = tmp_path / "chromium"
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--window-size=1000,700",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json") as r:
                pages = [t for t in await r.json() if t["type"] == "page"]
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                b = Browser(ws)
                await b.call("Network.enable")
                await b.call("Page.enable")
                yield b
                b.reader.cancel()
    finally:
        proc.terminate()
        await proc.wait()


def _cli(node: str, profile: Path, *args: str) -> str:
    env = server_env(QPC_PASSPHRASE="bob passphrase", QPC_PASSWORD="bob password")
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--server", node, "--profile", str(profile), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_browser_registers_and_chats_with_a_plain_client(
    browser: Browser, tmp_path: Path
) -> None:
    port = _free_port()
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "tui.cli", "serve-web", "--listen", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*argv, "--state-dir", str(state)],
        env=server_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("listening: http://127.0.0.1:")
        await browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        await browser.wait_for("Passphrase (encrypts")
        assert "hosted: this client runs on" in browser.screen
        await browser.call(
            "Runtime.evaluate", expression="document.querySelector('textarea').focus()"
        )
        await browser.type("alice")
        await browser.key("Tab", "Tab", 9)
        await browser.type("alice password")
        await browser.key("Tab", "Tab", 9)
        await browser.type("alice passphrase")
        await browser.key("r", "KeyR", 82, modifiers=2)  # Ctrl+R: register
        await browser.wait_for("● connected")
        # Its own profile, created for this browser session.
        (session,) = (state / "web").glob("session-*")
        assert session.stat().st_mode & 0o777 == 0o700

        node = read_local_node(state)
        assert node is not None
        bob = tmp_path / "bob"
        _cli(node.address, bob, "register", "bob")
        await browser.key("o", "KeyO", 79, modifiers=2)  # Ctrl+O: direct message
        await browser.wait_for("bob", timeout=30)
        await browser.type("bob")
        await browser.key("Enter", "Enter", 13)
        await browser.wait_for("@bob")
        await browser.type("hello from the browser")
        await browser.key("Enter", "Enter", 13)
        out = _cli(node.address, bob, "recv")
        for _ in range(30):
            if "hello from the browser" in out:
                break
            await asyncio.sleep(0.5)
            out = _cli(node.address, bob, "recv")
        assert "hello from the browser" in out
        _cli(node.address, bob, "dm", "alice", "hi browser, bob here")
        await browser.wait_for("hi browser, bob here")
        shot = await browser.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        (Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "web.png")).write_bytes(png)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
    # Nothing of the session outlives the server: no TUI process, no node.
    leftover = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    left = {
        pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for pid in leftover.stdout.split()
        if Path(f"/proc/{pid}").exists()
    }
    assert left == {}, "processes left after the server stopped"
