"""Rate limits as a person meets them: with the node's default limits, a handful of
accounts in a row from one address all work; past the burst the client waits the
time the node gave and retries instead of failing."""

from __future__ import annotations

from pathlib import Path

from node.config import NodeConfig
from node.embedded import start_embedded_node
from tests.e2e.helpers import PASSPHRASE, PASSWORD, Cli, engine_config
from tests.node.helpers import node_config
from tui.client.engine import Engine


def _default_login_limits(tmp_path: Path) -> NodeConfig:
    d = NodeConfig()
    return node_config(tmp_path, login_burst=d.login_burst, login_rate_per_s=d.login_rate_per_s)


class _StepClock:
    """Monotonic time that stands still until the engine waits; its waits move it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_six_registrations_in_a_row_with_default_limits(tmp_path: Path) -> None:
    clock = _StepClock()
    node = await start_embedded_node(_default_login_limits(tmp_path / "node"), mono_clock=clock)
    waits: list[float] = []

    def waited(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds  # the node's clock moves by what the client waits

    try:
        for i in range(6):
            cfg = engine_config(node, tmp_path / f"u{i}")
            engine = await Engine.open(cfg, PASSPHRASE, create=True)
            try:
                who = await engine.register(f"user{i}", PASSWORD, on_wait=waited)
                assert who.user == f"user{i}" and who.device_registered
            finally:
                await engine.close()
        # 5 accounts fit the default burst (one token per registration, one per
        # login); the 6th waited the node's retryAfterMs for each of its two
        # attempts (1 token per second) and then went through.
        assert waits == [1.0, 1.0]
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
