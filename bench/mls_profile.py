"""Steady-state micro-run of our binding, for `perf record` (not a test).

    python3 bench/mls_profile.py 512 HYBRID msg            # ms per encrypt+decrypt
    python3 bench/mls_profile.py 8 HYBRID commit perf.data # and record a profile

Builds a sparse group of N members (one batch add), lets the creator commit
six self-updates that the second member processes (so the kept past epochs
hold full member lists, as in a long-lived group), then times:

* ``msg``: the creator encrypts 100 B, the second member decrypts it;
* ``commit``: add one member (+ merge) and remove it again, both processed
  by the second member.

With a fourth argument it attaches ``perf record -g`` to itself for the timed
loop only (``perf report -i FILE --no-children --sort dso,symbol``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proto import mls  # noqa: E402


def main() -> None:
    n = int(sys.argv[1])
    suite = mls.Ciphersuite[sys.argv[2]]
    what = sys.argv[3]
    out = sys.argv[4] if len(sys.argv) > 4 else None
    work = tempfile.mkdtemp(prefix="qpc-mls-profile-")

    def client(i: int) -> mls.Client:
        path = f"{work}/{i}.sqlite"
        return mls.Client.create(path, os.urandom(32), f"m{i}".encode(), ciphersuite=suite)

    alice, bob = client(0), client(1)
    group = alice.create_group(b"g")
    kps = [bob.key_package()] + [client(i).key_package() for i in range(2, n)]
    added = group.add_members(kps)
    group.merge_pending_commit()
    assert added.welcome is not None
    bob_group = bob.join_from_welcome(added.welcome, added.ratchet_tree)
    spare = [client(10_000 + i) for i in range(4)]

    def step() -> None:
        if what == "msg":
            bob_group.process(group.encrypt(b"x" * 100))
            return
        newcomer = spare.pop()
        o = group.add_members([newcomer.key_package()])
        group.merge_pending_commit()
        bob_group.process(o.commit)
        o = group.remove_members([n])
        group.merge_pending_commit()
        bob_group.process(o.commit)
        spare.insert(0, newcomer)

    for _ in range(6):
        o = group.self_update()
        group.merge_pending_commit()
        bob_group.process(o.commit)
    for _ in range(3):
        step()

    perf = None
    if out:
        cmd = ["perf", "record", "-F", "2000", "-g", "-o", out, "-p", str(os.getpid())]
        perf = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    rounds = 40 if what == "msg" else 6
    t0 = time.perf_counter()
    for _ in range(rounds):
        step()
    ms = (time.perf_counter() - t0) / rounds * 1000
    if perf:
        perf.send_signal(signal.SIGINT)
        perf.wait()
    print(f"{what} n={n} {suite.name}: {ms:.2f} ms per step")


if __name__ == "__main__":
    main()
