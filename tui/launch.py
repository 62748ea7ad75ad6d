"""Start the full-screen client: settings, logging, the engine factory, the app.

The CLI (:mod:`tui.cli.main`) calls :func:`launch` with a :class:`LaunchConfig`
when ``qpc`` gets no subcommand (or ``demo``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tui.app import make_app, setup_logging
from tui.client.core import EngineConfig
from tui.client.passphrase import passphrase_from_env, read_passphrase_fd
from tui.demo import DemoFactory
from tui.factory import EngineFactoryImpl
from tui.settings import load_settings
from tui.terminal import terminal_caps

__all__ = ["CONFIG_ENV", "HOSTED_ENV", "LaunchConfig", "launch"]

CONFIG_ENV = "QPC_CONFIG"
"""Overrides the config file path."""
HOSTED_ENV = "QPC_HOSTED"
"""``ssh`` / ``web``: this TUI serves someone through ``qpc serve-ssh`` / ``serve-web``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchConfig:
    """How to start the TUI."""

    engine: EngineConfig
    """Profile, server and trust settings of the real client."""
    demo: bool = False
    """Run the scripted demo (throwaway node and peers) instead."""
    passphrase_fd: int | None = None
    """Read the profile passphrase from this fd (else ``QPC_PASSPHRASE``)."""


def _passphrase(config: LaunchConfig) -> str | None:
    if config.passphrase_fd is not None:
        return read_passphrase_fd(config.passphrase_fd)
    return passphrase_from_env()


def launch(config: LaunchConfig) -> int:
    """Build the factory and run the app until it quits; returns the exit status."""
    config_path = os.environ.get(CONFIG_ENV)
    settings = load_settings(Path(config_path) if config_path else None)
    if config.demo:
        demo = DemoFactory()
        factory: EngineFactoryImpl | DemoFactory = demo
        log_path = demo.base / "tui.log"  # removed with the demo
    else:
        factory = EngineFactoryImpl(config.engine, passphrase=_passphrase(config))
        log_path = config.engine.profile_dir / "tui.log"
    setup_logging(settings.log_file or log_path)
    app = make_app(factory, settings)
    app.exit_on_hangup = True
    app.terminal = terminal_caps(os.environ)
    app.hosted = os.environ.get(HOSTED_ENV) in ("ssh", "web")
    app.run()
    return app.return_code or 0
