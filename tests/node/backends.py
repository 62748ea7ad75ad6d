"""Both store backends for parametrised tests: SQLite in a temp dir, PostgreSQL
in a fresh schema of the server at ``QPC_TEST_POSTGRES_DSN``.

``scripts/test`` (which CI runs) runs the suite inside ``scripts/with-postgres``
(a throwaway cluster), so the DSN is always set there, and it sets
``QPC_REQUIRE_POSTGRES=1``: with that (or ``CI``) set, a missing DSN fails the
PostgreSQL tests, so CI can never pass without running them. Without either,
locally, they skip and say why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from node.store.base import Store
from node.store.postgres import PostgresStore
from node.store.sqlite import SqliteStore

DSN_ENV = "QPC_TEST_POSTGRES_DSN"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""``params=`` of a backend-parametrised fixture."""


def postgres_dsn() -> str:
    """The test server's DSN, or skip (fail under CI) when there is none."""
    dsn = os.environ.get(DSN_ENV, "")
    if dsn:
        return dsn
    reason = f"{DSN_ENV} is not set: run under scripts/with-postgres (scripts/test does)"
    if os.environ.get("QPC_REQUIRE_POSTGRES") or os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with ``search_path`` set to ``schema`` (asyncpg passes unknown
    query parameters as server settings)."""
    return f"{dsn}{'&' if '?' in dsn else '?'}search_path={schema}"


@contextlib.asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str]:
    """A DSN whose tables live in a new, empty schema (dropped afterwards)."""
    dsn = postgres_dsn()
    schema = "qpc_t" + os.urandom(6).hex()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    try:
        yield with_schema(dsn, schema)
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


@dataclasses.dataclass
class Backend:
    """One backend's database for a test: :meth:`open` opens a store on it
    (call it again for a second store, i.e. another node process)."""

    name: str
    target: str
    """SQLite file path or PostgreSQL DSN."""

    async def open(self, **kwargs: Any) -> Store:
        """A new store on this database (keyword arguments go to its ``open``)."""
        if self.name == "sqlite":
            return await SqliteStore.open(Path(self.target), **kwargs)
        return await PostgresStore.open(self.target, **kwargs)


@contextlib.asynccontextmanager
async def backend_for(name: str, tmp_path: Path) -> AsyncIterator[Backend]:
    """The database of backend ``name`` for one test."""
    if name == "sqlite":
        yield Backend("sqlite", str(tmp_path / "n.db"))
        return
    async with fresh_postgres() as dsn:
        yield Backend("postgres", dsn)


Opener = Callable[..., Awaitable[Store]]
