"""Fixtures: a real node on a loopback port with a real SQLite database, and
the same parametrised over both store backends (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.embedded import EmbeddedNode, start_embedded_node
from node.store.base import Store
from tests.node.backends import BACKENDS, Backend, backend_for
from tests.node.helpers import node_config


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EmbeddedNode]:
    """A running node (port 0, data in ``tmp_path``)."""
    handle = await start_embedded_node(node_config(tmp_path))
    try:
        yield handle
    finally:
        await handle.stop()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The database of each store backend in turn (PostgreSQL: a fresh schema)."""
    async with backend_for(request.param, tmp_path) as b:
        yield b


@pytest.fixture
async def any_store(backend: Backend) -> AsyncIterator[Store]:
    """An open store of each backend in turn."""
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def backend_node(backend: Backend, tmp_path: Path) -> AsyncIterator[EmbeddedNode]:
    """A running node on each store backend in turn."""
    store = backend.target if backend.name == "postgres" else ""
    handle = await start_embedded_node(node_config(tmp_path, store=store))
    try:
        yield handle
    finally:
        await handle.stop()
