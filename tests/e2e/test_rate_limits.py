"""Rate limits as a person meets them: with the node's default limits, a handful of
accounts in a row from one address all work; past the burst the client waits the
time the node gave and retries instead of failing."""

from __future__ import annotations

import time
from pathlib import Path

from node.config import NodeConfig
from node.embedded import start_embedded_node
from tests.e2e.helpers import PASSPHRASE, PASSWORD, Cli, engine_config
from tests.node.helpers import node_config
from tui.client.engine import Engine


def _default_login_limits(tmp_path: Path) -> NodeConfig:
    d = NodeConfig()
    return node_config(tmp_path, login_burst=d.login_burst, login_rate_per_s=d.login_rate_per_s)


class _HeldClock:
    """A monotonic clock that stands still until :meth:`run`, then follows real time
    (so a slow, loaded box cannot refill the bucket while the first accounts are made)."""

    def __init__(self) -> None:
        self._base = 1000.0
        self._since: float | None = None

    def run(self) -> None:
        self._since = time.monotonic()

    def __call__(self) -> float:
        if self._since is None:
            return self._base
        return self._base + time.monotonic() - self._since


async def test_six_registrations_in_a_row_with_default_limits(tmp_path: Path) -> None:
    clock = _HeldClock()
    node = await start_embedded_node(_default_login_limits(tmp_path / "node"), mono_clock=clock)
    waits: list[float] = []
    try:
        for i in range(6):
            if i == 5:
                assert waits == []  # five accounts without waiting
                clock.run()
            cfg = engine_config(node, tmp_path / f"u{i}")
            engine = await Engine.open(cfg, PASSPHRASE, create=True)
            try:
                who = await engine.register(f"user{i}", PASSWORD, on_wait=waits.append)
                assert who.user == f"user{i}" and who.device_registered
            finally:
                await engine.close()
        # 5 accounts fit the default burst (one token per registration, one per
        # login) with no wait; the 6th waited the node's retryAfterMs (a second
        # for its registration, one for its login) and then went through.
        assert len(waits) >= 1 and all(0 < w <= 1.0 for w in waits)
    finally:
        await node.stop()


async def test_three_cli_registrations_in_a_row(tmp_path: Path) -> None:
    node = await start_embedded_node(_default_login_limits(tmp_path / "node"))
    try:
        cli = Cli(node=node, base=tmp_path / "profiles")
        for name in ("ann", "ben", "cat"):
            out = await cli.ok(name, "register", name)
            assert out["user"] == name
    finally:
        await node.stop()
