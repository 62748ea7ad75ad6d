"""Cost of the receive path's MLS undo copy (``tui/client/undo.py``).

Usage: ``python3 bench/undo.py [--groups N] [--members M] [--rounds R]``

Builds a real ``mls.db`` (N groups of M members, hybrid suite), then times
``MlsUndo.take`` + ``discard`` per batch against the baseline of the same run:
one 4 KiB write + fsync (what any durable commit costs on this disk).
Prints a table (median and p90, ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto import mls
from tui.client.undo import MlsUndo


def _build(path: Path, groups: int, members: int) -> None:
    me = mls.Client.create(str(path), os.urandom(32), b"me")
    others = [
        mls.Client.create(str(path.with_name(f"m{i}.db")), os.urandom(32), f"m{i}".encode())
        for i in range(members - 1)
    ]
    for g in range(groups):
        group = me.create_group(g.to_bytes(16, "big"))
        if others:
            group.add_members([o.key_package() for o in others])
            group.merge_pending_commit()
    me.close()
    for o in others:
        o.close()


def _times(fn: Callable[[], None], rounds: int) -> tuple[float, float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.9) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "mls.db"
        _build(db, args.groups, args.members)
        undo = MlsUndo(db)

        def take_discard() -> None:
            undo.take(1)
            undo.discard()

        def fsync_4k() -> None:
            fd = os.open(Path(tmp) / "f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
            os.close(fd)

        size = db.stat().st_size // 1024
        print(f"mls.db: {args.groups} groups x {args.members} members, {size} KiB")
        print("| operation | median ms | p90 ms |")
        print("|---|---|---|")
        for name, fn in (
            ("undo take + discard", take_discard),
            ("baseline: 4 KiB write + fsync", fsync_4k),
        ):
            med, p90 = _times(fn, args.rounds)
            print(f"| {name} | {med:.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
