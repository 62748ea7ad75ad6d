"""``qpc demo``: the TUI logged in to a live group with scripted peers who answer.

Everything is real: a throwaway embedded node in a temporary directory, and
three engines (you, bob and carol) with their own encrypted profiles. Bob and
carol run in the background of the same process and answer what you write.
The directory, node included, is removed when the TUI exits; the node runs
in the TUI's process group, so a hang-up (SIGHUP to the terminal's
foreground group) ends it even if the TUI dies before its clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shutil
import tempfile
from pathlib import Path

from proto import files
from proto.crypto.atrest import FAST_TEST_PARAMS
from tui.client.api import ClientEngine, Health, MessageReceived, PingResult
from tui.client.core import PINS_FILE, EngineConfig
from tui.client.engine import Engine
from tui.client.localnode import LocalNode, ensure_local_node, stop_local_node
from tui.factory import EngineFactoryImpl
from tui.session import LoginForm, ServerKey

__all__ = ["DemoFactory"]

log = logging.getLogger("tui.demo")

_PASSPHRASE = "demo passphrase"  # noqa: S105 (throwaway demo profiles)
_GREETINGS = (
    ("bob", "Welcome to the demo! Everything here is end-to-end encrypted with MLS."),
    ("carol", "The node only sees sealed envelopes. Try writing something."),
)
_REPLIES = {
    "bob": (
        "Got it. Delivered through the node, decrypted only here.",
        "Press F4 to see the round-trip times to the node.",
        "Ctrl+O starts a direct message, Ctrl+P lists every command.",
        "F6 shows our safety numbers, compare them in person.",
    ),
    "carol": (
        "Hi! Each of us has our own device keys.",
        "F5 toggles the member list.",
        "If I left, a new epoch would lock me out of what you write next.",
    ),
}


class DemoFactory:
    """Engine factory for ``qpc demo`` (implements :class:`tui.session.EngineFactory`)."""

    def __init__(self, base: Path | None = None) -> None:
        """Use ``base`` as the throwaway directory (default: a new temporary one)."""
        self._owns_base = base is None
        self.base = base or Path(tempfile.mkdtemp(prefix="qpc-demo-"))
        self.node: LocalNode | None = None
        self.engines: list[Engine] = []
        self._tasks: list[asyncio.Task[None]] = []
        # If the scripted start fails, the welcome screen is shown: logging in
        # from there uses a plain profile on the demo's own embedded node.
        self._welcome = EngineFactoryImpl(
            EngineConfig(
                profile_dir=self.base / "profiles" / "welcome",
                kdf=FAST_TEST_PARAMS,
                data_dir=self.base,
            )
        )

    @property
    def default_server(self) -> str:
        """The demo never shows the welcome screen."""
        return ""

    @property
    def default_user(self) -> str:
        """You are "you"."""
        return "you"

    @property
    def profile_exists(self) -> bool:
        """The demo's profiles are made fresh."""
        return False

    @property
    def profile_dir(self) -> Path | None:
        """Your throwaway demo profile."""
        return self.base / "profiles" / "you"

    async def _engine(self, name: str) -> Engine:
        assert self.node is not None
        config = EngineConfig(
            profile_dir=self.base / "profiles" / name,
            server=self.node.address,
            kdf=FAST_TEST_PARAMS,
            data_dir=self.base,
        )
        engine = await Engine.open(config, _PASSPHRASE, create=True)
        self.engines.append(engine)
        pins = {self.node.address: self.node.fingerprint}
        files.write_private(config.profile_dir / PINS_FILE, json.dumps(pins).encode())
        await engine.register(name, f"{name} demo password")
        return engine

    async def resume(self) -> ClientEngine:
        """Start the node, register three users, build the group, start the peers."""
        # In our process group: a hang-up of the terminal ends the node too,
        # even if this process dies before its clean-up.
        self.node = await asyncio.to_thread(ensure_local_node, self.base, detach=False)
        you = await self._engine("you")
        bob = await self._engine("bob")
        carol = await self._engine("carol")
        channel = await you.create_group("demo")
        await you.invite(channel.id, ["bob", "carol"])
        for peer in (bob, carol):
            await peer.sync()
        for (_name, text), peer in zip(_GREETINGS, (bob, carol), strict=True):
            await peer.send(channel.id, text)
        for name, peer in (("bob", bob), ("carol", carol)):
            task = asyncio.get_running_loop().create_task(self._answer(name, peer))
            self._tasks.append(task)
        return you

    async def _answer(self, name: str, peer: Engine) -> None:
        replies = itertools.cycle(_REPLIES[name])
        delay = 0.6 if name == "bob" else 1.4
        try:
            async for event in peer.events():
                if not isinstance(event, MessageReceived):
                    continue
                message = event.message
                if message.outgoing or message.system or message.sender != "you":
                    continue
                await asyncio.sleep(delay)
                await peer.send(message.channel, next(replies))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("demo peer %s stopped", name)

    async def probe(self, server: str) -> ServerKey:
        """Only reached from the welcome screen (the scripted start failed)."""
        return await self._welcome.probe(server)

    async def health(self, server: str) -> Health:
        """Only reached from the welcome screen: the demo's own node."""
        return await self._welcome.health(server)

    async def ping(self, server: str) -> PingResult:
        """Only reached from the welcome screen: the demo's own node."""
        return await self._welcome.ping(server)

    async def open(self, form: LoginForm, *, trust_fingerprint: str) -> ClientEngine:
        """Only reached from the welcome screen: a plain profile in the demo directory."""
        return await self._welcome.open(form, trust_fingerprint=trust_fingerprint)

    async def close(self) -> None:
        """Stop the peers, close their engines, stop the node, delete everything."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for engine in self.engines[1:]:  # the app closes "you"
            with contextlib.suppress(Exception):
                await engine.close()
        await self._welcome.close()
        await asyncio.to_thread(stop_local_node, self.base)
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)
