"""Fixtures: a real node (real QUIC, real SQLite) and engines/CLI processes on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode, start_embedded_node
from tests.e2e.helpers import Cli
from tests.node.helpers import node_config
from tui.client.engine import Engine


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EmbeddedNode]:
    """A running node on a free loopback port, data in ``tmp_path/node``."""
    handle = await start_embedded_node(node_config(tmp_path / "node"))
    try:
        yield handle
    finally:
        await handle.stop()


@pytest.fixture
def cli(node: EmbeddedNode, tmp_path: Path) -> Cli:
    """Runs ``qpc`` in separate processes against ``node``."""
    return Cli(node=node, base=tmp_path / "profiles")


@pytest.fixture
async def engines() -> AsyncIterator[list[Engine]]:
    """A list tests append engines to; all are closed afterwards."""
    opened: list[Engine] = []
    try:
        yield opened
    finally:
        for e in opened:
            await e.close()
