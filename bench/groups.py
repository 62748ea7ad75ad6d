"""Growth of one group through the real engine and a real node.

Usage: ``python3 bench/groups.py [--sizes 2,32,128,512,1000] [--workers 4] [--kp 2]``

One node (real QUIC on loopback, real SQLite, default size limits) in its
own process, the group's owner in this process, and every other device in
one of ``--workers`` worker processes (each runs its devices' engines on one
event loop), so a thousand devices fit on a 2-core box. At each size the
owner invites all new devices but one in one ``invite`` call, then adds the
last one alone (the "add one member" figures), then sends one 100-byte
message that every member receives, then removes the add-one joiner.
Printed per size:

- ``invite s``: the owner's big ``invite`` call (KeyPackage fetches, commit(s),
  upload); ``commits``: how many commits the engine split it into;
- ``commit B``: the largest commit uploaded; ``tree B``: the sealed tree
  part uploaded with the add-one commit (its delta, docs/PROTOCOL.md "Tree
  deltas", or the whole tree when the node asked for it or before deltas);
  ``welcome B``: what the add-one joiner downloads besides the tree (its
  inbox entry + the shared GroupInfo);
- ``up B/msg``: bytes of the requests one send uploads (encoded, all calls);
- ``node B/msg``: payload bytes the node stores for it, and inbox ``rows``;
- ``send CPU ms``: CPU of the sender's encrypt step (MLS encrypt + post key);
- ``recv p100 ms``: from the send until the last member has the message;
- ``decrypt ms``: one receiver's MLS ``process`` of the message, the way
  the client's inbox calls it (``defer_write=True``: the message-secrets
  write is left to every 64th message, docs/MLS.md "Receivers"), *cold*:
  the harness has released the device's MLS memory, so this includes
  loading the group from its database (as after a restart); a running
  client keeps it loaded (``bench/mls_receive.py`` times that);
- ``join ms``: the slowest new member's first sync after the big invite;
- ``add1 up B``: bytes the adder uploads to add one member (the whole
  ``invite`` call); ``add1 ready ms``: that joiner's first sync (fetch of the
  Welcome parts and tree, join) until it can read;
- ``rm s``, ``rm up B``: the owner removes that joiner again (the call, and
  the bytes it uploads), then every device syncs; a removed device must get
  none of the later messages (counted as missed otherwise);
- ``worker MB``: the largest device worker's resident memory at the end.

A size whose invite fails prints the error instead of figures.
``QPC_BENCH_ROOT=/path/to/checkout`` imports the code from another checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, os.environ.get("QPC_BENCH_ROOT") or str(Path(__file__).resolve().parents[1]))

from node.config import NodeConfig
from node.embedded import start_embedded_node
from proto import codec
from proto.crypto.atrest import FAST_TEST_PARAMS
from proto.errors import ConnectionLost
from proto.rpc_client import RpcClient
from tui.client.core import EngineConfig
from tui.client.engine import Engine

PASS = "bench passphrase"
PASSWORD = "bench password"
TEXT = "x" * 100


class Meter:
    """Counts encoded request bytes per call kind while active (this process)."""

    def __init__(self) -> None:
        self.active = False
        self.bytes = 0
        self.largest: dict[str, int] = {}
        self.last: dict[str, int] = {}
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
                for field in ("commit", "welcome", "ratchet_tree", "tree_delta", "group_info"):
                    v = getattr(params, field, None)
                    if isinstance(v, bytes) and v:
                        meter.largest[field] = max(meter.largest.get(field, 0), len(v))
                        meter.last[field] = len(v)
                for entry in getattr(params, "joiner_entries", ()):
                    meter.last["entry"] = len(entry)
            return await original(self, params, auth=auth)

        RpcClient.call = call  # type: ignore[method-assign]

    def start(self) -> None:
        self.active, self.bytes, self.largest, self.last, self.count = True, 0, {}, {}, {}

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


async def _bounded(coros: list[Any], n: int = 2) -> list[Any]:
    """Run ``coros`` at most ``n`` at a time. The devices of a worker share
    its event loop and MLS calls block it: asyncio runs every ready callback
    before it next reads the network, so many syncs ready at once would hold
    the loop for seconds and their idle connections would declare the node
    dead (the client's 6 s keepalive). A real client has its own process."""
    sem = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _open(port: int, base: Path, name: str, kp: int) -> Engine:
    cfg = EngineConfig(
        profile_dir=base / name,
        server=f"127.0.0.1:{port}",
        kdf=FAST_TEST_PARAMS,
        keypackage_batch=kp,
        # Hundreds of devices share each worker's event loop, and the node,
        # the owner and the workers share two cores: a device may hear
        # nothing for several seconds while its loop runs another device's
        # join. A real device has its own process and keeps the 6 s default.
        reconnect_wait_s=30.0,
        # (a baseline checkout may predate the setting)
        **(
            {"dead_timeout_s": 30.0}
            if "dead_timeout_s" in EngineConfig.__dataclass_fields__
            else {}
        ),
    )
    e = await Engine.open(cfg, PASS, create=True)
    for attempt in range(3):  # a busy shared loop may lose the connection
        try:
            await e.register(name, PASSWORD)
            break
        except ConnectionLost:
            LOST[0] += 1
            if attempt == 2:
                raise
    return e


# ------------------------------------------------------------------ processes

LOST: list[int] = [0]
"""Connections a worker's device saw die (keepalive) and re-made, this run."""


async def _sync(e: Engine) -> list[Any]:
    """``Engine.sync``, again after a lost connection (counted: a device whose
    shared event loop was busy for over 6 s declares the node dead), then
    the device hands back its MLS memory (``Client.release_memory``: the
    loaded groups and SQLite's page cache, up to 16 MiB per device). A real
    device has its own process; hundreds in one worker would not fit in RAM
    otherwise (at 1,000 members ~24 MB per device, OOM-killed with 250
    devices per worker)."""
    try:
        for _ in range(3):
            try:
                return await e.sync()
            except ConnectionLost:
                LOST[0] += 1
        return await e.sync()
    finally:
        with contextlib.suppress(Exception):
            e.mls.release_memory()


def _rss_mb() -> float:
    """This process's resident memory (MB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _node_main(data_dir: str, conn: Connection, limit_mib: int = 0) -> None:
    """The node's process: start, report the port, serve until told to stop.

    ``limit_mib``: raise the commit and request size limits to this many MiB
    (0: the defaults). Past ~1,450 hybrid members the sealed tree alone is
    over the default 2 MiB ``max_commit_bytes``."""
    sized = (
        {
            "max_commit_bytes": limit_mib << 20,
            "max_request_bytes": limit_mib << 20,
            "max_buffered_request_bytes": 4 * (limit_mib << 20),
        }
        if limit_mib
        else {}
    )

    async def serve() -> None:
        node = await start_embedded_node(
            NodeConfig(
                host="127.0.0.1",
                port=0,
                data_dir=Path(data_dir),
                log_level="WARNING",
                # every device connects from this one address: only the
                # per-address and rate limits are lifted; size limits stay default
                login_burst=100_000,
                login_rate_per_s=100_000.0,
                write_burst=1_000_000,
                write_rate_per_s=1_000_000.0,
                max_connections=100_000,
                max_connections_per_address=100_000,
                **sized,  # type: ignore[arg-type]
            )
        )
        conn.send(node.port)
        await asyncio.to_thread(conn.recv)
        await node.stop()

    asyncio.run(serve())


def _worker_main(conn: Connection) -> None:
    """A worker process: devices' engines, driven by commands from the owner."""
    logging.basicConfig(level=logging.WARNING)
    # the probe decrypts by hand, so its own later sync refuses the replay
    logging.getLogger("tui.client.delivery").setLevel(logging.ERROR)
    logging.getLogger("tui.client.engine").setLevel(logging.ERROR)

    async def loop() -> None:
        engines: dict[str, Engine] = {}
        while True:
            cmd, arg = await asyncio.to_thread(conn.recv)
            try:
                if cmd == "open":
                    port, base, names, kp = arg
                    for n in names:  # registration in order keeps the node calm
                        engines[n] = await _open(port, Path(base), n, kp)
                        with contextlib.suppress(AttributeError):  # baseline binding
                            engines[n].mls.release_memory()
                    conn.send(None)
                elif cmd == "join":  # first sync of each new device, timed
                    times = []
                    for n in arg:
                        t = time.perf_counter()
                        await _sync(engines[n])
                        times.append(time.perf_counter() - t)
                    conn.send(times)
                elif cmd == "sync":
                    await _bounded([_sync(e) for e in engines.values()])
                    conn.send(None)
                elif cmd == "probe":  # decrypt the newest channel message by hand
                    name, cid = arg
                    e = engines[name]
                    raw = await (await e.rpc()).fetch(after_seq=e.state.cursor, limit=10)
                    group = e.mls.load_group(cid)
                    t = time.perf_counter()
                    group.process(raw.envelopes[-1].data, defer_write=True)
                    conn.send(time.perf_counter() - t)
                elif cmd == "recv":  # every device syncs; wall time when each has it
                    skip, gone = arg  # the probe; removed devices must get nothing

                    async def one(
                        n: str, e: Engine, skip: str = skip, gone: set[str] = gone
                    ) -> tuple[bool, float]:
                        got = [m.text for m in await _sync(e)]
                        want = [] if n in gone else [TEXT]
                        return n == skip or got == want, time.time()

                    conn.send(await _bounded([one(n, e) for n, e in engines.items()]))
                elif cmd == "lost":
                    conn.send(LOST[0])
                elif cmd == "rss":
                    conn.send(_rss_mb())
                elif cmd == "close":
                    for e in engines.values():
                        with contextlib.suppress(Exception):
                            await e.close()
                    conn.send(None)
                    return
            except Exception as exc:  # report, keep serving
                conn.send(exc)

    asyncio.run(loop())


class Worker:
    """The owner's handle on one worker process."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        self.names: list[str] = []

    async def ask(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        out = await asyncio.to_thread(self.conn.recv)
        if isinstance(out, Exception):
            raise out
        return out


async def _all(workers: list[Worker], cmd: str, args: list[Any]) -> list[Any]:
    return list(await asyncio.gather(*(w.ask(cmd, a) for w, a in zip(workers, args, strict=True))))


async def run(sizes: list[int], n_workers: int, kp: int, limit_mib: int = 0) -> None:
    logging.basicConfig(level=logging.WARNING)
    meter = Meter()
    meter.install()
    # The node's and workers' glibc malloc: a fixed mmap threshold, so large
    # transient buffers (the login KDF, ratchet trees) go back to the system
    # when freed. With the default dynamic threshold they stay in the heap:
    # 39 MB resident per device after registration instead of 2 MB, and 250
    # devices per worker were OOM-killed at 1,000 (24 GB box).
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        node_conn, child = ctx.Pipe()
        node_proc = ctx.Process(
            target=_node_main, args=(str(base / "node"), child, limit_mib), daemon=True
        )
        node_proc.start()
        port = await asyncio.to_thread(node_conn.recv)
        db_path = base / "node" / "node.db"
        workers = [Worker(ctx) for _ in range(n_workers)]
        header = (
            f"{'devices':>7} {'invite s':>8} {'commits':>7} {'commit B':>9} {'tree B':>9} "
            f"{'welcome B':>9} {'up B/msg':>9} {'node B/msg':>10} {'rows':>5} "
            f"{'send CPU ms':>11} {'recv p100 ms':>12} {'decrypt ms':>10} {'join ms':>8} "
            f"{'add1 up B':>9} {'add1 ready ms':>13} {'rm s':>6} {'rm up B':>9} "
            f"{'worker MB':>9}"
        )
        print(header, flush=True)
        owner = await _open(port, base, "owner", kp)
        count = 1
        removed: list[str] = []  # the add-one joiner of each size, removed again
        try:
            chan = (await owner.create_group("bench")).id
            cid = bytes.fromhex(chan)
            for size in sizes:
                # new devices, spread round-robin over the workers
                names = [f"d{i:05d}" for i in range(count, size)]
                count = size
                per: list[list[str]] = [names[k::n_workers] for k in range(n_workers)]
                await _all(workers, "open", [(port, str(base), p, kp) for p in per])
                for w, p in zip(workers, per, strict=True):
                    w.names += p
                big, last = names[:-1], names[-1:]
                invite_s, commits, join_ms = 0.0, 0, 0.0
                commit_b = 0
                if big:
                    meter.start()
                    t0 = time.perf_counter()
                    try:
                        await owner.invite(chan, big)
                    except Exception as exc:  # a failure is a result here
                        meter.stop()
                        print(f"{size:>7} invite of {len(big)} failed: {type(exc).__name__}: {exc}")
                        return
                    invite_s = time.perf_counter() - t0
                    meter.stop()
                    commits = meter.count.get("CommitChannelParams", 0)
                    commit_b = meter.largest.get("commit", 0)
                    joins = await _all(
                        workers, "join", [[n for n in p if n in set(big)] for p in per]
                    )
                    join_ms = max(t for js in joins for t in js) * 1000
                    await _all(workers, "sync", [None] * n_workers)
                # add one member alone
                meter.start()
                await owner.invite(chan, last)
                meter.stop()
                add1_up = meter.bytes
                commit_b = max(commit_b, meter.largest.get("commit", 0))
                # the add-one commit's tree part: its delta, or the whole tree
                tree_b = meter.last.get("tree_delta", meter.last.get("ratchet_tree", 0))
                # by reference: the entry + shared part; else the whole Welcome
                welcome_b = meter.last.get("group_info", 0) + meter.last.get(
                    "entry", meter.last.get("welcome", 0)
                )
                holder = next(w for w in workers if last[0] in w.names)
                (ready,) = await holder.ask("join", last)
                await _all(workers, "sync", [None] * n_workers)
                await owner.sync()
                before_bytes, before_rows = _stored(db_path)

                cpu = 0.0
                part = type(owner.outbox)
                original_prepare = part._prepare

                def prepare(self: Any, *a: Any, _orig: Any = original_prepare, **kw: Any) -> Any:
                    nonlocal cpu
                    t = time.thread_time()
                    try:
                        return _orig(self, *a, **kw)
                    finally:
                        cpu += time.thread_time() - t

                part._prepare = prepare  # type: ignore[method-assign]
                meter.start()
                t0 = time.time()
                try:
                    await owner.send(chan, TEXT)
                finally:
                    part._prepare = original_prepare  # type: ignore[method-assign]
                meter.stop()
                up = meter.bytes
                after_bytes, after_rows = _stored(db_path)
                probe = next(n for n in workers[0].names if n not in removed)
                decrypt_s = await workers[0].ask("probe", (probe, cid))
                got = await _all(workers, "recv", [(probe, set(removed))] * n_workers)
                flat = [g for gs in got for g in gs]
                recv_ms = (max(t for _, t in flat) - t0) * 1000
                missing = sum(1 for ok, _ in flat if not ok)
                # remove one member (the add-one joiner); everyone processes it
                meter.start()
                t0 = time.perf_counter()
                await owner.remove(chan, last)
                rm_s = time.perf_counter() - t0
                meter.stop()
                rm_up = meter.bytes
                await _all(workers, "sync", [None] * n_workers)
                removed.append(last[0])
                await owner.sync()
                lost = sum(await _all(workers, "lost", [None] * n_workers))
                rss = max(await _all(workers, "rss", [None] * n_workers))
                print(
                    f"{size:>7} {invite_s:>8.2f} {commits:>7} {commit_b:>9} {tree_b:>9} "
                    f"{welcome_b:>9} {up:>9} {after_bytes - before_bytes:>10} "
                    f"{after_rows - before_rows:>5} {cpu * 1000:>11.2f} {recv_ms:>12.0f} "
                    f"{decrypt_s * 1000:>10.2f} {join_ms:>8.0f} {add1_up:>9} {ready * 1000:>13.0f}"
                    f" {rm_s:>6.2f} {rm_up:>9} {rss:>9.0f}"
                    + (f"  ({missing} missed)" if missing else "")
                    + (f"  ({lost} reconnects so far)" if lost else ""),
                    flush=True,
                )
        finally:
            with contextlib.suppress(Exception):
                await owner.close()
            for w in workers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.ask("close"), 120)
                w.proc.join(10)
                if w.proc.is_alive():
                    w.proc.terminate()
            node_conn.send(None)
            node_proc.join(30)
            if node_proc.is_alive():
                node_proc.terminate()


def main() -> None:
    """CLI entry."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", default="2,32,128,512,1000")
    ap.add_argument("--workers", type=int, default=4, help="device worker processes")
    ap.add_argument("--kp", type=int, default=2, help="KeyPackages each device uploads")
    ap.add_argument(
        "--limit-mib",
        type=int,
        default=0,
        help="node commit/request size limits in MiB (default: the node's defaults)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    asyncio.run(run(sizes, args.workers, args.kp, args.limit_mib))


if __name__ == "__main__":
    main()
