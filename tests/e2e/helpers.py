"""End-to-end helpers: engines and ``qpc`` processes against a real node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.embedded import EmbeddedNode, start_embedded_node
from proto.crypto.atrest import FAST_TEST_PARAMS
from tests.node.backends import backend_for
from tests.node.helpers import node_config
from tui.client.core import EngineConfig
from tui.client.engine import Engine

PASSPHRASE = "test passphrase"
PASSWORD = "test password"


@contextlib.asynccontextmanager
async def node_on_backend(
    backend_name: str, tmp_path: Path, **overrides: object
) -> AsyncIterator[EmbeddedNode]:
    """A running node on the store backend ``backend_name`` (PostgreSQL: a
    fresh schema), data in ``tmp_path/node``; stopped afterwards."""
    async with backend_for(backend_name, tmp_path) as backend:
        store = backend.target if backend.name == "postgres" else ""
        handle = await start_embedded_node(node_config(tmp_path / "node", store=store, **overrides))
        try:
            yield handle
        finally:
            await handle.stop()


def cli_env(base: Path, **extra: str) -> dict[str, str]:
    """Environment for ``qpc`` subprocesses: cheap Argon2id, passphrase and password set."""
    env = dict(os.environ)
    env.update(
        QPC_DATA_DIR=str(base),
        QPC_KDF="fast",
        QPC_PASSPHRASE=PASSPHRASE,
        QPC_PASSWORD=PASSWORD,
    )
    env.pop(CRASH, None)
    env.update(extra)
    return env


CRASH = "QPC_TEST_CRASH"


@dataclass
class CliResult:
    """Exit status and output of one ``qpc`` run."""

    rc: int
    out: str
    err: str

    def json(self) -> Any:
        """The JSON document printed with ``--json``."""
        return json.loads(self.out)


@dataclass
class Cli:
    """Runs ``python -m tui.cli --server ... --profile base/NAME --json ...``."""

    node: EmbeddedNode
    base: Path
    env: dict[str, str] = field(default_factory=dict)

    async def run(
        self, profile: str, *args: str, json_out: bool = True, env: dict[str, str] | None = None
    ) -> CliResult:
        """One ``qpc`` process; returns its result (whatever the exit status)."""
        argv = [
            sys.executable,
            "-m",
            "tui.cli",
            "--server",
            f"127.0.0.1:{self.node.port}",
            "--profile",
            str(self.base / profile),
        ]
        if json_out:
            argv.append("--json")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(self.base, **(env or {})),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return CliResult(proc.returncode, out.decode(), err.decode())

    async def ok(self, profile: str, *args: str) -> Any:
        """Run and expect success; returns the parsed JSON."""
        res = await self.run(profile, *args)
        assert res.rc == 0, f"qpc {args} failed: {res.err}"
        return res.json()


def engine_config(node: EmbeddedNode, path: Path, **kw: Any) -> EngineConfig:
    """Engine settings for a test profile on ``node``."""
    return EngineConfig(
        profile_dir=path, server=f"127.0.0.1:{node.port}", kdf=FAST_TEST_PARAMS, **kw
    )


async def new_user(node: EmbeddedNode, base: Path, name: str, **kw: Any) -> Engine:
    """A fresh profile registered as ``name``."""
    engine = await Engine.open(engine_config(node, base / name, **kw), PASSPHRASE, create=True)
    await engine.register(name, PASSWORD)
    return engine


async def group_of(
    node: EmbeddedNode, base: Path, names: Sequence[str], channel: str = "team", **kw: Any
) -> tuple[list[Engine], str]:
    """Users ``names``; the first creates a group and invites the rest, who join."""
    engines = [await new_user(node, base, n, **kw) for n in names]
    chan = await engines[0].create_group(channel)
    if len(names) > 1:
        await engines[0].invite(chan.id, list(names[1:]))
    for e in engines[1:]:
        await e.sync()
    return engines, chan.id
