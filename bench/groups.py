"""Growth of one group through the real engine and a real node.

Usage: ``python3 bench/groups.py [--sizes 2,32,128,512,1000] [--kp 2]``

One embedded node (real QUIC on loopback, real SQLite, in this process) and
one engine per device. The group grows to each size in turn (the owner
invites the new devices in one call), then one 100-byte message is sent and
every member receives it. Printed per size:

- ``invite s``: the owner's ``invite`` call (KeyPackage fetches, commit(s),
  upload); ``commits``: how many commits the engine split it into;
- ``commit B`` / ``welcome B``: the largest commit and Welcome uploaded;
- ``up B/msg``: bytes of the requests one send uploads (encoded, all calls);
- ``node B/msg``: payload bytes the node stores for it, and inbox rows;
- ``send CPU ms``: CPU of the sender's encrypt step (MLS encrypt + post key);
- ``recv p100 ms``: from the send until the last member has the message
  (members sync concurrently; client and node share this process);
- ``decrypt ms``: one receiver's MLS ``process`` of the message;
- ``join ms``: the slowest new member's first sync (processes the Welcome).

``QPC_BENCH_ROOT=/path/to/checkout`` imports the code from another checkout
(the baseline in docs/PERFORMANCE.md is main before channel logs). A size
whose invite fails prints the error instead of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("QPC_BENCH_ROOT") or str(Path(__file__).resolve().parents[1]))

from node.config import NodeConfig
from node.embedded import start_embedded_node
from proto import codec
from proto.crypto.atrest import FAST_TEST_PARAMS
from proto.rpc_client import RpcClient
from tui.client.core import EngineConfig
from tui.client.engine import Engine

PASS = "bench passphrase"
PASSWORD = "bench password"


class Meter:
    """Counts encoded request bytes per call kind while active."""

    def __init__(self) -> None:
        self.active = False
        self.bytes = 0
        self.largest: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self._original = RpcClient.call

    def install(self) -> None:
        meter = self
        original = self._original

        async def call(self: RpcClient, params: Any, *, auth: bytes | None = None) -> Any:
            if meter.active:
                req = codec.Request(auth=self.token if auth is None else auth, call=params)
                n = len(codec.encode_request(req))
                meter.bytes += n
                name = type(params).__name__
                meter.count[name] = meter.count.get(name, 0) + 1
                for field in ("commit", "welcome"):
                    v = getattr(params, field, None)
                    if isinstance(v, bytes):
                        meter.largest[field] = max(meter.largest.get(field, 0), len(v))
                for r in getattr(params, "fanout", ()):  # enqueueCommit: sealed copies
                    meter.largest["fanout entry"] = max(
                        meter.largest.get("fanout entry", 0), len(r.payload)
                    )
            return await original(self, params, auth=auth)

        RpcClient.call = call  # type: ignore[method-assign]

    def start(self) -> None:
        self.active, self.bytes, self.largest, self.count = True, 0, {}, {}

    def stop(self) -> None:
        self.active = False


def _stored(db_path: Path) -> tuple[int, int]:
    """(payload bytes, inbox rows) in the node database."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        rows, inline = db.execute("SELECT COUNT(*), SUM(length(payload)) FROM messages").fetchone()
        shared = 0
        with contextlib.suppress(sqlite3.OperationalError):  # no channel logs (baseline)
            shared = db.execute("SELECT SUM(length(payload)) FROM channel_payloads").fetchone()[0]
        return int(inline or 0) + int(shared or 0), int(rows or 0)


async def _bounded(coros: list[Any], n: int = 8) -> list[Any]:
    """Run ``coros`` at most ``n`` at a time: node and every engine share this
    process's event loop, and hundreds of concurrent syncs starve it."""
    sem = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _open(node_port: int, base: Path, name: str, kp: int) -> Engine:
    cfg = EngineConfig(
        profile_dir=base / name,
        server=f"127.0.0.1:{node_port}",
        kdf=FAST_TEST_PARAMS,
        keypackage_batch=kp,
    )
    e = await Engine.open(cfg, PASS, create=True)
    await e.register(name, PASSWORD)
    return e


async def run(sizes: list[int], kp: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    # the probe decrypts by hand, so its own later sync refuses the replay
    logging.getLogger("tui.client.delivery").setLevel(logging.ERROR)
    meter = Meter()
    meter.install()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        node = await start_embedded_node(
            NodeConfig(
                host="127.0.0.1",
                port=0,
                data_dir=base / "node",
                log_level="WARNING",
                # every device connects from this one address: only the
                # per-address limits are lifted; the size limits stay default
                login_burst=100_000,
                login_rate_per_s=100_000.0,
                write_burst=1_000_000,
                write_rate_per_s=1_000_000.0,
                max_connections=100_000,
                max_connections_per_address=100_000,
            )
        )
        db_path = base / "node" / "node.db"
        engines: list[Engine] = []
        header = (
            f"{'devices':>7} {'invite s':>8} {'commits':>7} {'commit B':>9} {'welcome B':>9} "
            f"{'up B/msg':>9} {'node B/msg':>10} {'rows':>5} {'send CPU ms':>11} "
            f"{'recv p100 ms':>12} {'decrypt ms':>10} {'join ms':>8}"
        )
        print(header, flush=True)
        try:
            owner = await _open(node.port, base, "owner", kp)
            engines.append(owner)
            chan = (await owner.create_group("bench")).id
            cid = bytes.fromhex(chan)
            for size in sizes:
                new = [
                    await _open(node.port, base, f"d{i:05d}", kp) for i in range(len(engines), size)
                ]
                engines += new
                meter.start()
                t0 = time.perf_counter()
                try:
                    await owner.invite(chan, [e.user for e in new])
                except Exception as exc:  # a failure is a result here
                    meter.stop()
                    print(f"{size:>7} invite of {len(new)} failed: {type(exc).__name__}: {exc}")
                    return
                invite_s = time.perf_counter() - t0
                meter.stop()
                commits = meter.count.get("CommitChannelParams", 0) + meter.count.get(
                    "EnqueueCommitParams", 0
                )
                commit_b = meter.largest.get("commit", meter.largest.get("fanout entry", 0))
                welcome_b = meter.largest.get("welcome", 0)
                joins = []
                for e in new:
                    t = time.perf_counter()
                    await e.sync()
                    joins.append(time.perf_counter() - t)
                await _bounded([e.sync() for e in engines])
                before_bytes, before_rows = _stored(db_path)

                sender = engines[-1] if len(engines) > 1 else owner
                probe = owner if sender is not owner else engines[1]
                cpu = 0.0
                # the outbox part encrypts (Engine.outbox; older engines: the engine)
                part = type(getattr(sender, "outbox", sender))
                original_prepare = part._prepare

                def prepare(self: Any, *a: Any, _orig: Any = original_prepare, **kw: Any) -> Any:
                    nonlocal cpu
                    t = time.thread_time()
                    try:
                        return _orig(self, *a, **kw)
                    finally:
                        cpu += time.thread_time() - t

                part._prepare = prepare
                meter.start()
                t0 = time.perf_counter()
                try:
                    await sender.send(chan, "x" * 100)
                finally:
                    part._prepare = original_prepare
                meter.stop()
                up = meter.bytes
                after_bytes, after_rows = _stored(db_path)
                # one receiver decrypts by hand (timed); the others sync
                raw = await (await probe.rpc()).fetch(after_seq=probe.state.cursor, limit=10)
                body = raw.envelopes[-1].data
                if body[:1] != b"\x00":  # baseline: sealed per device
                    from proto.crypto.envelope import open_envelope

                    body = open_envelope(
                        body,
                        recipient_key=probe.hybrid,
                        recipient_id=probe.device_id,
                        channel_id=cid,
                    ).body
                group = probe.mls.load_group(cid)
                t = time.perf_counter()
                group.process(body)
                decrypt_ms = (time.perf_counter() - t) * 1000
                others = [e for e in engines if e is not sender and e is not probe]
                got = await _bounded([e.sync() for e in others])
                recv_ms = (time.perf_counter() - t0) * 1000
                missing = sum(1 for g in got if [m.text for m in g] != ["x" * 100])
                print(
                    f"{size:>7} {invite_s:>8.2f} {commits:>7} {commit_b:>9} {welcome_b:>9} "
                    f"{up:>9} {after_bytes - before_bytes:>10} {after_rows - before_rows:>5} "
                    f"{cpu * 1000:>11.2f} {recv_ms:>12.0f} {decrypt_ms:>10.2f} "
                    f"{max(joins) * 1000:>8.0f}" + (f"  ({missing} missed)" if missing else ""),
                    flush=True,
                )
        finally:
            for e in engines:
                with contextlib.suppress(Exception):
                    await e.close()
            await node.stop()


def main() -> None:
    """CLI entry."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2,32,128,512,1000")
    ap.add_argument("--kp", type=int, default=2, help="KeyPackages each device uploads")
    args = ap.parse_args()
    asyncio.run(run([int(s) for s in args.sizes.split(",")], args.kp))


if __name__ == "__main__":
    main()
