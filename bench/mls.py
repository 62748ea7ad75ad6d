"""MLS benchmark: our OpenMLS binding against two mls-rs based wheels.

Run by hand (not a test):

    pip install -e '.[bench]'         # rine-mls, agentvault-mls-rs-uniffi
    python3 bench/mls.py              # full run, prints Markdown tables
    python3 bench/mls.py --sizes 2 8  # a quick look

For every library/ciphersuite ("stack") and both tree shapes it grows one group
through the sizes (2, 8, 32, 128, 512) and, at each size, measures:

* KeyPackage generation (time, size);
* the creator adding one member: commit time, commit and Welcome size;
* an existing member processing that commit; the newcomer joining from the
  Welcome; the creator removing the newcomer and a member processing that;
* encrypt (creator) and decrypt (member) of 100 B and 10 KiB;
* the state one member keeps on disk/in memory.

Tree shapes: *sparse* - only the creator ever commits (members are added in
one batch commit per size step), so most parent nodes stay blank; *healthy* -
each newcomer commits once (member i adds member i+1), so every leaf but
the newest has filled its direct path. Times are medians of ``--repeat`` runs.

Peers: ``rine-mls`` (mls-rs; X-Wing and classical suites, file store) and
``agentvault-mls-rs-uniffi`` (mls-rs via UniFFI; classical only, state kept in
a Python storage callback). The UniFFI wheel's Python glue copies every byte
of every argument one at a time in ``_UniffiRustBufferBuilder.write``; this
script patches that helper to a single ``ctypes.memmove`` (see
``patch_uniffi_glue``) so the figures measure mls-rs, not the glue.
"""

from __future__ import annotations

import abc
import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proto import mls  # noqa: E402

SIZES = [2, 8, 32, 128, 512]
SMALL = os.urandom(100)
LARGE = os.urandom(10 * 1024)


def now() -> float:
    return time.perf_counter()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------- adapters


class Stack(abc.ABC):
    """One library + ciphersuite behind a common interface."""

    name = ""
    family = ""  # "hybrid" (X25519 + ML-KEM-768) or "classical"

    def __init__(self, work: Path) -> None:
        self.work = work

    @abc.abstractmethod
    def client(self, name: str) -> Any:
        """A new member's client."""

    @abc.abstractmethod
    def key_package(self, client: Any) -> bytes:
        """One serialised KeyPackage of ``client``."""

    @abc.abstractmethod
    def create(self, client: Any, gid: bytes) -> Any:
        """A new group with ``client`` as its only member."""

    @abc.abstractmethod
    def add(self, group: Any, kps: list[bytes]) -> tuple[bytes, bytes]:
        """Commit adding ``kps`` and apply it at the committer: (commit, welcome)."""

    @abc.abstractmethod
    def process(self, group: Any, commit: bytes) -> None:
        """Process (and merge) a commit at another member."""

    @abc.abstractmethod
    def join(self, client: Any, welcome: bytes) -> Any:
        """Join from a Welcome."""

    @abc.abstractmethod
    def remove(self, group: Any, victim_client: Any, victim_group: Any) -> bytes:
        """Commit removing the victim and apply it at the committer."""

    @abc.abstractmethod
    def encrypt(self, group: Any, data: bytes) -> bytes:
        """An application message."""

    @abc.abstractmethod
    def decrypt(self, group: Any, data: bytes) -> bytes:
        """The plaintext of an application message."""

    @abc.abstractmethod
    def state_size(self, client: Any, group: Any) -> int:
        """Bytes of persistent state one member holds (after a flush)."""

    def persist(self, group: Any) -> None:
        """Make the group's state durable (ours: every call already is)."""
        return None


class Ours(Stack):
    def __init__(self, work: Path, suite: mls.Ciphersuite) -> None:
        super().__init__(work)
        self.suite = suite
        self.name = f"ours/openmls {suite.name.lower()}"
        self.family = suite.name.lower()

    def client(self, name: str) -> mls.Client:
        path = self.work / f"{name}.sqlite"
        return mls.Client.create(str(path), os.urandom(32), name.encode(), ciphersuite=self.suite)

    def key_package(self, client: mls.Client) -> bytes:
        return client.key_package()

    def create(self, client: mls.Client, gid: bytes) -> mls.Group:
        return client.create_group(gid)

    def add(self, group: mls.Group, kps: list[bytes]) -> tuple[bytes, bytes]:
        # Tree inside the Welcome, like the peers (bench/mls_receive.py
        # measures the split Welcome and the sealed tree).
        out = group.add_members(kps, ratchet_tree_in_welcome=True)
        group.merge_pending_commit()
        assert out.welcome is not None
        return out.commit, out.welcome

    def process(self, group: mls.Group, commit: bytes) -> None:
        res = group.process(commit)
        assert isinstance(res, mls.CommitMerged), res

    def join(self, client: mls.Client, welcome: bytes) -> mls.Group:
        return client.join_from_welcome(welcome)

    def remove(self, group: mls.Group, victim_client: Any, victim_group: mls.Group) -> bytes:
        out = group.remove_members([victim_group.own_leaf_index])
        group.merge_pending_commit()
        return out.commit

    def encrypt(self, group: mls.Group, data: bytes) -> bytes:
        return group.encrypt(data)

    def decrypt(self, group: mls.Group, data: bytes) -> bytes:
        res = group.process(data)
        assert isinstance(res, mls.ApplicationMessage)
        return res.plaintext

    def state_size(self, client: mls.Client, group: Any) -> int:
        # Fold the WAL into the main file first: the number is what stays on disk.
        # From another process: Python's sqlite3 is a second SQLite library in
        # this process, blind to the binding's POSIX locks; closing it here
        # would remove the WAL under the client's open connection.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                "c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()",
                client.path,
            ],
            check=True,
        )
        return sum(
            os.path.getsize(client.path + s)
            for s in ("", "-wal")
            if os.path.exists(client.path + s)
        )


class Rine(Stack):
    def __init__(self, work: Path, xwing: bool) -> None:
        super().__init__(work)
        import rine_mls

        self.m = rine_mls
        self.cs = rine_mls.CIPHER_SUITE_XWING if xwing else rine_mls.CIPHER_SUITE_CLASSICAL
        self.name = f"rine-mls {'x-wing' if xwing else 'classical'}"
        self.family = "hybrid" if xwing else "classical"

    def client(self, name: str) -> Any:
        root = self.work / name
        return (self.m.MlsClient(str(root), os.urandom(32), self.cs), root)

    def key_package(self, client: Any) -> bytes:
        return bytes(client[0].generate_key_package())

    def create(self, client: Any, gid: bytes) -> Any:
        return client[0].create_group(gid)

    def add(self, group: Any, kps: list[bytes]) -> tuple[bytes, bytes]:
        bundle = group.add_members(kps)
        return bundle.commit, bundle.welcomes[0]

    def process(self, group: Any, commit: bytes) -> None:
        group.apply_commit(commit)

    def join(self, client: Any, welcome: bytes) -> Any:
        return client[0].join_from_welcome(welcome)

    def remove(self, group: Any, victim_client: Any, victim_group: Any) -> bytes:
        return bytes(group.remove_member(victim_group.current_member_index()).commit)

    def encrypt(self, group: Any, data: bytes) -> bytes:
        return bytes(group.encrypt_application_message(data))

    def decrypt(self, group: Any, data: bytes) -> bytes:
        return bytes(group.decrypt_application_message(data).envelope)

    def state_size(self, client: Any, group: Any) -> int:
        group.save()
        return dir_size(client[1])

    def persist(self, group: Any) -> None:
        group.save()


def patch_uniffi_glue(module: Any) -> None:
    """Replace the byte-at-a-time copy in the UniFFI glue by one memmove.

    ``_UniffiRustBufferBuilder.write`` does ``for i, byte in enumerate(value):
    self.rbuf.data[self.rbuf.len + i] = byte`` - a Python loop per byte of
    every KeyPackage, Welcome and message passed in. Same semantics, one copy.
    """
    builder = module._UniffiRustBufferBuilder

    def write(self: Any, value: bytes) -> None:
        n = len(value)
        with self._reserve(n):
            base = ctypes.cast(self.rbuf.data, ctypes.c_void_p).value or 0
            ctypes.memmove(base + self.rbuf.len, bytes(value), n)

    builder.write = write


class Uniffi(Stack):
    name = "mls-rs-uniffi classical"
    family = "classical"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        import mls_rs_uniffi
        from mls_rs_uniffi import mls_rs_uniffi as glue

        patch_uniffi_glue(glue)
        self.u = mls_rs_uniffi

        class Store(mls_rs_uniffi.GroupStateStorage):  # type: ignore[misc]
            def __init__(self) -> None:
                self.states: dict[bytes, bytes] = {}
                self.epochs: dict[tuple[bytes, int], bytes] = {}

            def state(self, gid: bytes) -> bytes | None:
                return self.states.get(gid)

            def epoch(self, gid: bytes, eid: int) -> bytes | None:
                return self.epochs.get((gid, eid))

            def write(self, gid: bytes, state: bytes, ins: list[Any], upd: list[Any]) -> None:
                self.states[gid] = state
                for r in [*ins, *upd]:
                    self.epochs[(gid, r.id)] = r.data

            def max_epoch_id(self, gid: bytes) -> int | None:
                ids = [e for (g, e) in self.epochs if g == gid]
                return max(ids) if ids else None

            def size(self) -> int:
                return sum(map(len, self.states.values())) + sum(map(len, self.epochs.values()))

        self.store_cls = Store

    def client(self, name: str) -> Any:
        u = self.u
        store = self.store_cls()
        keys = u.generate_signature_keypair(u.CipherSuite.CURVE25519_AES128)
        cfg = u.ClientConfig(group_state_storage=store, use_ratchet_tree_extension=True)
        c = u.Client(name.encode(), keys, cfg)
        return (c, store)

    def key_package(self, client: Any) -> bytes:
        return bytes(client[0].generate_key_package_message().to_bytes())

    def create(self, client: Any, gid: bytes) -> Any:
        return client[0].create_group(gid)

    def add(self, group: Any, kps: list[bytes]) -> tuple[bytes, bytes]:
        msgs = [self.u.Message.from_bytes(k) for k in kps]
        out = group.add_members(msgs)
        group.process_incoming_message(out.commit_message)  # applies our own commit
        return out.commit_message.to_bytes(), out.welcome_message.to_bytes()

    def process(self, group: Any, commit: bytes) -> None:
        group.process_incoming_message(self.u.Message.from_bytes(commit))

    def join(self, client: Any, welcome: bytes) -> Any:
        return client[0].join_group(None, self.u.Message.from_bytes(welcome)).group

    def remove(self, group: Any, victim_client: Any, victim_group: Any) -> bytes:
        out = group.remove_members([victim_client[0].signing_identity()])
        group.process_incoming_message(out.commit_message)
        return bytes(out.commit_message.to_bytes())

    def encrypt(self, group: Any, data: bytes) -> bytes:
        return bytes(group.encrypt_application_message(data).to_bytes())

    def decrypt(self, group: Any, data: bytes) -> bytes:
        res = group.process_incoming_message(self.u.Message.from_bytes(data))
        return bytes(res.data)

    def state_size(self, client: Any, group: Any) -> int:
        group.write_to_storage()
        return int(client[1].size())

    def persist(self, group: Any) -> None:
        group.write_to_storage()


# ---------------------------------------------------------------- measurement


@dataclass
class Row:
    size: int
    values: dict[str, float] = field(default_factory=dict)


COLUMNS = [
    ("kp_ms", "KP gen ms"),
    ("kp_b", "KP B"),
    ("add_ms", "add-1 ms"),
    ("commit_b", "commit B"),
    ("welcome_b", "Welcome B"),
    ("process_ms", "process ms"),
    ("join_ms", "join ms"),
    ("remove_ms", "remove ms"),
    ("rm_process_ms", "rm process ms"),
    ("enc100_ms", "enc 100B ms"),
    ("dec100_ms", "dec 100B ms"),
    ("enc10k_ms", "enc 10KiB ms"),
    ("dec10k_ms", "dec 10KiB ms"),
    ("state_kib", "member state KiB"),
]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = now()
    out = fn()
    return (now() - t) * 1000, out


class Run:
    """One stack, one tree shape, one growing group."""

    def __init__(self, stack: Stack, healthy: bool, repeat: int, persist: bool = False) -> None:
        self.s = stack
        self.persist = persist
        self.healthy = healthy
        self.repeat = repeat
        self.n = 0
        self.counter = 0
        self.creator = stack.client(self.fresh())
        self.g_creator = stack.create(self.creator, b"bench-group")
        self.member = stack.client(self.fresh())
        _commit, welcome = stack.add(self.g_creator, [stack.key_package(self.member)])
        self.g_member = stack.join(self.member, welcome)
        self.n = 2
        # In the healthy shape, the newest member makes the next commit.
        self.last_client, self.last_group = self.member, self.g_member

    def fresh(self) -> str:
        self.counter += 1
        return f"c{self.counter}"

    def grow_to(self, target: int) -> None:
        s = self.s
        if target <= self.n:
            return
        if not self.healthy:
            kps = [s.key_package(s.client(self.fresh())) for _ in range(target - self.n)]
            commit, _welcome = s.add(self.g_creator, kps)
            s.process(self.g_member, commit)
            self.n = target
            return
        while self.n < target:
            newcomer = s.client(self.fresh())
            commit, welcome = s.add(self.last_group, [s.key_package(newcomer)])
            for g in (self.g_creator, self.g_member):
                if g is not self.last_group:
                    s.process(g, commit)
            g_new = s.join(newcomer, welcome)
            self.last_client, self.last_group = newcomer, g_new
            self.n += 1

    def measure(self) -> Row:
        s = self.s
        row = Row(self.n)
        samples: dict[str, list[float]] = {k: [] for k, _ in COLUMNS}

        def step(key: str, fn: Callable[[], Any], group: Any) -> Any:
            # With --persist-peers, a peer's step includes making that group's
            # state durable, as every call of ours does.
            t = now()
            out = fn()
            if self.persist and group is not None:
                s.persist(group)
            samples[key].append((now() - t) * 1000)
            return out

        for _ in range(self.repeat):
            newcomer = s.client(self.fresh())
            ms, kp = timed(lambda nc=newcomer: s.key_package(nc))
            samples["kp_ms"].append(ms)
            samples["kp_b"].append(len(kp))
            commit, welcome = step(
                "add_ms", lambda kp=kp: s.add(self.g_creator, [kp]), self.g_creator
            )
            samples["commit_b"].append(len(commit))
            samples["welcome_b"].append(len(welcome))
            step("process_ms", lambda c=commit: s.process(self.g_member, c), self.g_member)
            others = [g for g in (self.last_group,) if g not in (self.g_creator, self.g_member)]
            for g in others:
                s.process(g, commit)
            g_new = step("join_ms", lambda nc=newcomer, w=welcome: s.join(nc, w), None)
            if self.persist:  # the joined group's first save belongs to the join
                t = now()
                s.persist(g_new)
                samples["join_ms"][-1] += (now() - t) * 1000
            rm = step(
                "remove_ms",
                lambda nc=newcomer, gn=g_new: s.remove(self.g_creator, nc, gn),
                self.g_creator,
            )
            step("rm_process_ms", lambda c=rm: s.process(self.g_member, c), self.g_member)
            for g in others:
                s.process(g, rm)
        for label, data, iters in (("100", SMALL, 200), ("10k", LARGE, 50)):
            enc = dec = 0.0
            for _ in range(iters):
                t0 = now()
                ct = s.encrypt(self.g_creator, data)
                if self.persist:
                    s.persist(self.g_creator)
                t1 = now()
                pt = s.decrypt(self.g_member, ct)
                if self.persist:
                    s.persist(self.g_member)
                t2 = now()
                assert pt == data
                enc += t1 - t0
                dec += t2 - t1
            samples[f"enc{label}_ms"].append(enc * 1000 / iters)
            samples[f"dec{label}_ms"].append(dec * 1000 / iters)
        samples["state_kib"].append(s.state_size(self.member, self.g_member) / 1024)
        row.values = {k: statistics.median(v) for k, v in samples.items() if v}
        return row


def fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def table(title: str, rows: list[Row]) -> str:
    head = "| members | " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|" + "---:|" * (len(COLUMNS) + 1)
    lines = [f"#### {title}", "", head, sep]
    for r in rows:
        cells = [fmt(r.values.get(k, float("nan"))) for k, _ in COLUMNS]
        lines.append(f"| {r.size} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stacks(work: Path, which: list[str]) -> Iterator[Stack]:
    makers: dict[str, Callable[[Path], Stack]] = {
        "ours-hybrid": lambda w: Ours(w, mls.Ciphersuite.HYBRID),
        "ours-classical": lambda w: Ours(w, mls.Ciphersuite.CLASSICAL),
        "rine-xwing": lambda w: Rine(w, xwing=True),
        "rine-classical": lambda w: Rine(w, xwing=False),
        "uniffi-classical": Uniffi,
    }
    for name in which:
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        try:
            yield makers[name](d)
        except ImportError as e:
            print(f"skipping {name}: {e} (pip install -e '.[bench]')", file=sys.stderr)


def summary(results: dict[tuple[str, str, str], list[Row]]) -> str:
    """Ours vs the faster peer of the same family, for add/process/join."""
    lines = [
        "| shape | family | members | step | ours ms | fastest peer ms | peer | ratio |",
        "|---|---|---:|---|---:|---:|---|---:|",
    ]
    for (name, family, shape), rows in sorted(results.items()):
        if not name.startswith("ours"):
            continue
        peers = [
            (pn, prow)
            for (pn, pf, ps), prow in results.items()
            if pf == family and ps == shape and not pn.startswith("ours")
        ]
        for r in rows:
            for step in ("add_ms", "process_ms", "join_ms"):
                best: tuple[float, str] | None = None
                for pn, prow in peers:
                    for pr in prow:
                        if pr.size == r.size and step in pr.values:
                            cand = (pr.values[step], pn)
                            best = cand if best is None or cand < best else best
                if best is None:
                    continue
                ours = r.values[step]
                lines.append(
                    f"| {shape} | {family} | {r.size} | {step[:-3]} | {fmt(ours)} | "
                    f"{fmt(best[0])} | {best[1]} | {ours / best[0]:.2f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    ap.add_argument("--healthy-max", type=int, default=512, help="largest healthy size")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--stacks",
        nargs="+",
        default=[
            "ours-hybrid",
            "rine-xwing",
            "ours-classical",
            "rine-classical",
            "uniffi-classical",
        ],
    )
    ap.add_argument("--shapes", nargs="+", default=["sparse", "healthy"])
    ap.add_argument(
        "--persist-peers",
        action="store_true",
        help="include the peers' save()/write_to_storage() in each step (ours always persists)",
    )
    args = ap.parse_args()

    started = now()
    work = Path(tempfile.mkdtemp(prefix="qpc-bench-mls-"))
    results: dict[tuple[str, str, str], list[Row]] = {}
    out: list[str] = []
    try:
        for shape in args.shapes:
            for stack in stacks(work / shape, args.stacks):
                rows: list[Row] = []
                t0 = now()
                run = Run(
                    stack,
                    healthy=(shape == "healthy"),
                    repeat=args.repeat,
                    persist=args.persist_peers,
                )
                for size in args.sizes:
                    if shape == "healthy" and size > args.healthy_max:
                        continue
                    run.grow_to(size)
                    rows.append(run.measure())
                    print(
                        f"  {shape:8} {stack.name:26} n={run.n:4} ({now() - t0:6.1f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
                results[(stack.name, stack.family, shape)] = rows
                out.append(table(f"{stack.name}, {shape} tree", rows))
                print(out[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("#### ours vs the faster peer of the same family\n")
    print(summary(results))
    print(
        f"total {now() - started:.0f}s on {os.cpu_count()} cores; openmls {mls.openmls_version()}"
    )


if __name__ == "__main__":
    main()
