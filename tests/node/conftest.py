"""Fixtures: a real node on a loopback port with a real SQLite database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode, start_embedded_node
from tests.node.helpers import node_config


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EmbeddedNode]:
    """A running node (port 0, data in ``tmp_path``)."""
    handle = await start_embedded_node(node_config(tmp_path))
    try:
        yield handle
    finally:
        await handle.stop()
