"""Register/login wait out ``rateLimited`` (retryAfterMs) instead of failing: engine and CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import NodeConfig
from node.embedded import start_embedded_node
from proto.errors import RateLimited
from tests.e2e.helpers import PASSPHRASE, PASSWORD, Cli, engine_config
from tests.node.helpers import node_config
from tui.client.engine import Engine

pytestmark = pytest.mark.network


async def test_engine_waits_retry_after_and_registers(tmp_path: Path) -> None:
    node = await start_embedded_node(
        node_config(tmp_path / "node", login_burst=2, login_rate_per_s=4.0)
    )
    opened: list[Engine] = []
    try:
        for name in ("alice", "bob", "carol"):  # 2 tokens each, a burst of 2
            waits: list[float] = []
            e = await Engine.open(engine_config(node, tmp_path / name), PASSPHRASE, create=True)
            opened.append(e)
            who = await e.register(name, PASSWORD, on_wait=waits.append)
            assert who.user == name and who.device_registered
            if name != "alice":
                assert waits and all(0 < w <= 0.25 for w in waits)
    finally:
        for e in opened:
            await e.close()
        await node.stop()


async def test_engine_gives_up_after_its_total_wait(tmp_path: Path) -> None:
    node = await start_embedded_node(
        node_config(tmp_path / "node", login_burst=2, login_rate_per_s=0.01)
    )
    try:
        a = await Engine.open(engine_config(node, tmp_path / "a"), PASSPHRASE, create=True)
        await a.register("alice", PASSWORD)
        b = await Engine.open(
            engine_config(node, tmp_path / "b", rate_limit_max_wait_s=1.0),
            PASSPHRASE,
            create=True,
        )
        waits: list[float] = []
        with pytest.raises(RateLimited) as exc:  # 100 s to wait > 1 s allowed
            await b.register("bob", PASSWORD, on_wait=waits.append)
        assert waits == [] and exc.value.retry_after_ms > 1000
        await a.close()
        await b.close()
    finally:
        await node.stop()


async def test_cli_register_in_a_row_waits_instead_of_failing(tmp_path: Path) -> None:
    node = await start_embedded_node(
        node_config(tmp_path / "node", login_burst=4, login_rate_per_s=1.0)
    )
    try:
        cli = Cli(node=node, base=tmp_path / "profiles")
        results = [await cli.run(name, "register", name) for name in ("user1", "user2", "user3")]
        assert [r.rc for r in results] == [0, 0, 0], [r.err for r in results]
        assert [r.json()["user"] for r in results] == ["user1", "user2", "user3"]
        # two registrations fit the burst of 4; the third waited (~2 s less startup)
        assert "the node asks to slow down; retrying in" in results[2].err
    finally:
        await node.stop()


def test_default_login_limits_fit_five_accounts() -> None:
    """Each account costs two tokens (one registration, one login): see test_limits."""
    assert NodeConfig().login_burst >= 2 * 5
