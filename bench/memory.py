"""Client memory after start-up and login, with and without the mmap cap.

Usage: ``python3 bench/memory.py [--rounds 3]``

Starts a node (embedded, loopback) and, per round, two fresh client
processes one after the other: one with ``proto.memory.cap_mmap_threshold``
(what ``qpc`` does at start-up) and one without (glibc's adaptive
threshold). Each opens a new profile (the at-rest KDF with the shipped
parameters), registers an account over real QUIC (OPAQUE), logs in again on
a second connection, and reports its resident memory (VmRSS) at each step.
Prints a table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.config import NodeConfig  # noqa: E402
from node.embedded import start_embedded_node  # noqa: E402
from proto import memory  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _child(port: int, home: str, cap: bool) -> dict[str, float]:
    from tui.client.core import EngineConfig
    from tui.client.engine import Engine

    if cap:
        memory.cap_mmap_threshold()
    out = {"start": _rss_mb()}
    cfg = EngineConfig(profile_dir=Path(home) / "p", server=f"127.0.0.1:{port}")
    e = await Engine.open(cfg, "bench passphrase", create=True)
    out["profile open"] = _rss_mb()
    await e.register("u" + os.urandom(4).hex(), "bench password")
    out["registered"] = _rss_mb()
    await e.close()
    e = await Engine.open(cfg, "bench passphrase")
    await e.sync()
    out["reopened + synced"] = _rss_mb()
    await e.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("PORT", "HOME", "CAP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        port, home, cap = args.child
        print(json.dumps(asyncio.run(_child(int(port), home, cap == "on"))))
        return

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            node = await start_embedded_node(
                NodeConfig(host="127.0.0.1", port=0, data_dir=Path(tmp) / "node")
            )
            env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
            got: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
            try:
                for r in range(args.rounds):
                    for cap in ("on", "off") if r % 2 == 0 else ("off", "on"):
                        home = Path(tmp) / f"{cap}{r}"
                        home.mkdir()
                        proc = await asyncio.create_subprocess_exec(
                            sys.executable,
                            __file__,
                            "--child",
                            str(node.port),
                            str(home),
                            cap,
                            env=env,
                            stdout=subprocess.PIPE,
                        )
                        out, _ = await proc.communicate()
                        got[cap].append(json.loads(out.decode().strip().splitlines()[-1]))
            finally:
                await node.stop()
        steps = list(got["on"][0])
        print(f"load average at start: {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds")
        print("| step | RSS MB, mmap threshold capped | RSS MB, glibc adaptive | saved MB |")
        print("|---|---:|---:|---:|")
        for step in steps:
            on = statistics.median(g[step] for g in got["on"])
            off = statistics.median(g[step] for g in got["off"])
            print(f"| {step} | {on:.1f} | {off:.1f} | {off - on:.1f} |")

    asyncio.run(run())


if __name__ == "__main__":
    main()
