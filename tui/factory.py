"""The engine factory of the real TUI, over :class:`tui.client.engine.Engine`.

It probes a server's key before trusting it (the welcome screen shows the
fingerprint), pins it in the profile's pin store once the user agrees, and
opens or creates the profile with the passphrase from the form. It holds a
lease on the embedded node while the TUI uses it and stops that node when it
closes as the node's last client of any kind (``tui.client.localnode``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from tui.client.api import ClientEngine, Health, PingResult
from tui.client.core import EMBEDDED, EngineConfig
from tui.client.engine import Engine
from tui.client.localnode import NodeLease
from tui.client.probe import node_health, node_ping, pin_server, probe_server
from tui.client.profile import Profile
from tui.session import LoginForm, ServerKey

__all__ = ["EngineFactoryImpl"]


class EngineFactoryImpl:
    """Builds real engines for the TUI (implements :class:`tui.session.EngineFactory`)."""

    def __init__(self, base: EngineConfig, *, passphrase: str | None = None) -> None:
        """``base`` comes from the CLI options; ``passphrase`` (env/fd) allows resuming."""
        self.base = base
        self._passphrase = passphrase
        self._lease = NodeLease(base.data_dir)

    def _use_local_node(self) -> None:
        """Hold a lease while this TUI uses the embedded node (see :meth:`close`)."""
        self._lease.acquire()

    @property
    def default_server(self) -> str:
        """The ``--server`` given, else "" (the embedded node)."""
        server = self.base.server or ""
        return "" if server == "embedded" else server

    @property
    def default_user(self) -> str:
        """Unknown until the profile is unlocked."""
        return ""

    @property
    def profile_exists(self) -> bool:
        """Whether the profile directory already holds a profile."""
        return Profile.exists(self.base.profile_dir)

    @property
    def profile_dir(self) -> Path | None:
        """The profile's directory."""
        return self.base.profile_dir

    async def resume(self) -> ClientEngine | None:
        """With a passphrase from the environment and a logged-in profile: that engine."""
        if self._passphrase is None or not self.profile_exists:
            return None
        engine = await Engine.open(self.base, self._passphrase)
        try:
            if not engine.state.user or not engine.state.token:
                await engine.close()
                return None
            if engine.server_info().embedded:
                self._use_local_node()
            await engine.whoami()
        except BaseException:
            await engine.close()
            raise
        return engine

    async def probe(self, server: str) -> ServerKey:
        """The key the server presents, and what the profile pinned for it.

        Only a TLS handshake (:func:`tui.client.probe.probe_server`): nothing
        is trusted or sent. The embedded node is started if needed; its
        expected key comes from its own record.
        """
        probe = await probe_server(self.base, server)
        if probe.embedded:
            self._use_local_node()
        return ServerKey(
            server=probe.server, fingerprint=probe.fingerprint, pinned=probe.pinned or ""
        )

    async def health(self, server: str) -> Health:
        """The node's health before login (:func:`tui.client.probe.node_health`)."""
        return await node_health(self.base, server)

    async def ping(self, server: str) -> PingResult:
        """One round trip before login (:func:`tui.client.probe.node_ping`)."""
        return await node_ping(self.base, server, 1)

    async def open(self, form: LoginForm, *, trust_fingerprint: str) -> ClientEngine:
        """Pin the confirmed key (the profile's pin store), then open (or create) the profile."""
        config = replace(self.base, server=form.server or None)
        if form.server and form.server != EMBEDDED and trust_fingerprint:
            await pin_server(config, form.server, trust_fingerprint)
        create = not Profile.exists(config.profile_dir)
        return await Engine.open(config, form.passphrase, create=create)

    async def close(self) -> None:
        """Stop the embedded node if this TUI was its last client.

        Any other process using the node (a TUI, ``qpc listen``, a running
        CLI command, ``qpc serve-ssh``) holds a lease too, and the node stays.
        """
        if self._lease.held:
            await asyncio.to_thread(self._lease.release, stop_if_last=True)
