"""Start the TUI for real: the engine factory over :class:`tui.client.engine.Engine`.

``qpc`` (no subcommand) calls :func:`tui.app.run_tui`, which lands here. The
factory probes a server's key before trusting it (the welcome screen shows
the fingerprint), pins it in the profile's pin store once the user agrees,
and opens or creates the profile with the passphrase from the form.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
from dataclasses import replace
from pathlib import Path
from typing import IO

from proto import files
from tui.client.api import ClientEngine
from tui.client.core import EMBEDDED, EngineConfig
from tui.client.engine import Engine
from tui.client.localnode import data_dir, stop_local_node
from tui.client.passphrase import passphrase_from_env, read_passphrase_fd
from tui.client.probe import pin_server, probe_server, split_server
from tui.client.profile import Profile
from tui.session import LoginForm, ServerKey
from tui.settings import load_settings

__all__ = ["EngineFactoryImpl", "launch", "split_server"]

CONFIG_ENV = "QPC_CONFIG"
"""Overrides the config file path."""
_USERS_LOCK = "tui-users.lock"
"""In the local node's directory: each TUI using the node holds a shared lock."""


class EngineFactoryImpl:
    """Builds real engines for the TUI (implements :class:`tui.session.EngineFactory`)."""

    def __init__(self, base: EngineConfig, *, passphrase: str | None = None) -> None:
        """``base`` comes from the CLI options; ``passphrase`` (env/fd) allows resuming."""
        self.base = base
        self._passphrase = passphrase
        self._node_users: IO[str] | None = None

    def _node_home(self) -> Path:
        return (self.base.data_dir or data_dir()) / "local-node"

    def _use_local_node(self) -> None:
        """Hold a shared lock while this TUI uses the embedded node (see :meth:`close`)."""
        if self._node_users is None:
            home = self._node_home()
            files.private_dir(home)
            fh = files.open_private(home / _USERS_LOCK, "a")
            fcntl.flock(fh, fcntl.LOCK_SH)
            self._node_users = fh

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

    async def open(self, form: LoginForm, *, trust_fingerprint: str) -> ClientEngine:
        """Pin the confirmed key (the profile's pin store), then open (or create) the profile."""
        config = replace(self.base, server=form.server or None)
        if form.server and form.server != EMBEDDED and trust_fingerprint:
            await pin_server(config, form.server, trust_fingerprint)
        create = not Profile.exists(config.profile_dir)
        return await Engine.open(config, form.passphrase, create=create)

    async def close(self) -> None:
        """Stop the embedded node if this was the last TUI using it.

        Every TUI on the embedded node holds a shared lock on one file; the one
        that can turn its lock exclusive on the way out was the last, and stops
        the node. (The CLI starts the node again when it needs it.)
        """
        fh, self._node_users = self._node_users, None
        if fh is None:
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another TUI still uses it
        finally:
            fh.close()
        await asyncio.to_thread(stop_local_node, self.base.data_dir)


def _passphrase(opts: argparse.Namespace) -> str | None:
    fd = getattr(opts, "passphrase_fd", None)
    if fd is not None:
        return read_passphrase_fd(fd)
    return passphrase_from_env()


def launch(opts: argparse.Namespace) -> int:
    """Build the factory from CLI options and run the app; returns the exit status."""
    from tui.app import make_app, setup_logging
    from tui.cli.main import engine_config, profile_dir

    for name, default in (("server", None), ("profile", None), ("trust_new_key", False)):
        if not hasattr(opts, name):
            setattr(opts, name, default)
    config_path = os.environ.get(CONFIG_ENV)
    settings = load_settings(Path(config_path) if config_path else None)
    if getattr(opts, "command", None) == "demo":
        from tui.demo import DemoFactory

        demo = DemoFactory()
        factory: EngineFactoryImpl | DemoFactory = demo
        log_path = demo.base / "tui.log"  # removed with the demo
    else:
        factory = EngineFactoryImpl(engine_config(opts), passphrase=_passphrase(opts))
        log_path = profile_dir(opts) / "tui.log"
    setup_logging(settings.log_file or log_path)
    app = make_app(factory, settings)
    app.exit_on_hangup = True
    app.run()
    return app.return_code or 0
