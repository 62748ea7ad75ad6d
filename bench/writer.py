"""Benchmark the group-commit writers: the old ones (from a git ref) vs the shared one.

Run by hand from the repository root (about a minute)::

    python3 bench/writer.py [--ref d683e94] [--rounds 2] [--scale 1.0]

Both sides are driven through the adapters that exist in every version, on a
fresh database file each (the real disk, ``synchronous=FULL``):

* node: :class:`node.store.sqlite.SqliteStore` (``enqueue`` is durable, ``ack``
  a crash-safe cleanup);
* client: :class:`tui.client.dbwriter.GroupWriter` (durable writes, crash-safe
  history appends).

The *old* code (default: d683e94, the last commit with the two separate
writers; ``--ref HEAD`` measures the noise) is ``git archive <ref>``
unpacked into a temporary directory and run in a child process with that
directory first on ``PYTHONPATH``; the *new* code is this tree, in another
child. Rounds alternate old/new and the table shows the best round of each
(the box is shared and noisy). The *new* rows with a variant name measure the
shared writer's optimisation seams turned off (``inline_without_fsync``,
``inline_lone_after_idle``, ``run_many``), so each one shows what it buys.
Figures and their discussion: docs/perf/writer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# bench/node.py would shadow the node package; the code under test comes from PYTHONPATH.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

R = b"r" * 32


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    scenario: str
    impl: str
    ops: int
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e6


async def _sequential(
    n: int, call: Callable[[], Awaitable[Any]], gap: float = 0.0
) -> tuple[float, list[float]]:
    lat: list[float] = []
    busy = 0.0
    for _ in range(n):
        if gap:
            await asyncio.sleep(gap)
        t = time.perf_counter()
        await call()
        dt = time.perf_counter() - t
        busy += dt
        lat.append(dt)
    return busy, lat


async def _concurrent(
    workers: int, per: int, call: Callable[[], Awaitable[Any]]
) -> tuple[float, list[float]]:
    lat: list[float] = []

    async def worker() -> None:
        for _ in range(per):
            t = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - t0, lat


async def _burst(n: int, submit: Callable[[], asyncio.Future[Any]]) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    futures = [submit() for _ in range(n)]
    lat: list[float] = []
    for f in futures:
        await f
        lat.append(time.perf_counter() - t0)
    return time.perf_counter() - t0, lat


def _patch_variant(variant: str) -> None:
    """Turn one optimisation seam of the shared writer off (new code only)."""
    if not variant:
        return
    from proto import dbwriter

    real = dbwriter.WriterConfig
    off: dict[str, Any] = {
        "no-inline": {"inline_without_fsync": False},
        "no-idle-inline": {"inline_lone_after_idle": None},
        "no-run-many": {"run_many": False},
    }[variant]

    def patched(**kw: Any) -> Any:
        return real(**{**kw, **off})

    import node.store.sqlite as node_sqlite
    import tui.client.dbwriter as client_dbwriter

    node_sqlite.WriterConfig = patched  # type: ignore[misc,assignment]
    client_dbwriter.WriterConfig = patched  # type: ignore[misc,assignment]


async def _child(impl: str, variant: str, scale: float, tmp: Path) -> list[Result]:
    from node.store.sqlite import SqliteStore
    from tui.client.dbwriter import GroupWriter

    _patch_variant(variant)
    name = impl + (f" {variant}" if variant else "")
    out: list[Result] = []

    def add(scenario: str, ops: int, seconds: float, lat: list[float]) -> None:
        out.append(
            Result(
                scenario=scenario,
                impl=name,
                ops=ops,
                seconds=seconds,
                p50_us=_pct(lat, 0.5),
                p99_us=_pct(lat, 0.99),
            )
        )

    def k(n: int) -> int:
        return max(10, int(n * scale))

    # ---------------------------------------------------------------- node
    store = await SqliteStore.open(tmp / f"node-{name}.db")
    try:
        n = k(300)
        s, lat = await _sequential(n, lambda: store.enqueue(R, b"c", b"m" * 200, 1, 10**9))
        add("node: sequential durable enqueue", n, s, lat)
        n = k(100)
        s, lat = await _sequential(
            n, lambda: store.enqueue(R, b"c", b"m" * 200, 1, 10**9), gap=0.01
        )
        add("node: lone enqueue to an idle store", n, s, lat)
        w, per = 64, k(60)
        recipients = [bytes([i]) * 32 for i in range(w)]
        it = iter(range(10**9))

        def enq() -> Awaitable[int]:
            return store.enqueue(recipients[next(it) % w], b"c", b"m" * 200, 1, 10**9)

        s, lat = await _concurrent(w, per, enq)
        add("node: 64 concurrent enqueuers", w * per, s, lat)
        n = k(300)
        s, lat = await _sequential(n, lambda: store.ack(R, 1))
        add("node: sequential crash-safe ack", n, s, lat)
    finally:
        await store.close()

    # ---------------------------------------------------------------- client
    path = tmp / f"client-{name}.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE h (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    writer = await GroupWriter.open(path)

    def append(conn: sqlite3.Connection) -> int:
        return conn.execute("INSERT INTO h (body) VALUES (?)", (b"x" * 300,)).lastrowid or 0

    try:
        n = k(300)
        s, lat = await _sequential(n, lambda: writer.write(append))
        add("client: sequential durable write", n, s, lat)
        n = k(2000)
        s, lat = await _sequential(n, lambda: writer.write(append, durable=False))
        add("client: sequential crash-safe append", n, s, lat)
        n = k(2000)
        s, lat = await _burst(n, lambda: writer.submit(append, durable=False))
        add("client: burst of queued appends", n, s, lat)
        w, per = 64, k(30)
        s, lat = await _concurrent(w, per, lambda: writer.write(append))
        add("client: 64 concurrent durable writers", w * per, s, lat)
    finally:
        await writer.close()
    return out


def _run_child(tree: Path, impl: str, variant: str, scale: float) -> list[Result]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "writer.py"), "--child", impl, "--scale", str(scale)]
        + (["--variant", variant] if variant else []),
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{impl} {variant} failed:\n{proc.stderr}")
    return [Result(**r) for r in json.loads(proc.stdout)]


def _old_tree(ref: str, dest: Path) -> Path:
    archive = dest / "old.tar"
    with archive.open("wb") as f:
        subprocess.run(
            ["git", "archive", ref, "proto", "node", "tui", "migrations"],
            cwd=ROOT,
            stdout=f,
            check=True,
        )
    tree = dest / "old"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    native = ROOT / "proto" / "_mls.abi3.so"
    if native.exists():
        shutil.copy2(native, tree / "proto" / native.name)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ref", default="d683e94", help="git ref of the old writers (the last with two)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(prefix="qpc-bench-writer-") as tmp:
            results = asyncio.run(_child(args.child, args.variant, args.scale, Path(tmp)))
        print(json.dumps([dataclasses.asdict(r) for r in results]))
        return

    runs = [
        ("old", ""),
        ("new", ""),
        ("new", "no-inline"),
        ("new", "no-idle-inline"),
        ("new", "no-run-many"),
    ]
    best: dict[tuple[str, str], Result] = {}
    with tempfile.TemporaryDirectory(prefix="qpc-bench-writer-") as tmp:
        old = _old_tree(args.ref, Path(tmp))
        for _ in range(args.rounds):
            for impl, variant in runs:
                tree = old if impl == "old" else ROOT
                for r in _run_child(tree, impl, variant, args.scale):
                    key = (r.scenario, r.impl)
                    if key not in best or r.rate > best[key].rate:
                        best[key] = r
    scenarios = list(dict.fromkeys(s for s, _ in best))
    impls = list(dict.fromkeys(i for _, i in best))
    print(f"old = git {args.ref}; new = this tree; best of {args.rounds} alternating rounds")
    print(f"{'scenario':40} {'writer':16} {'ops/s':>9} {'vs old':>7} {'p50 µs':>8} {'p99 µs':>8}")
    for s in scenarios:
        base = best[(s, "old")].rate
        for i in impls:
            r = best[(s, i)]
            print(
                f"{s:40} {i:16} {r.rate:9.0f} {r.rate / base:6.2f}x {r.p50_us:8.0f} {r.p99_us:8.0f}"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
