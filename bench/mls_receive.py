"""Large hybrid groups: receive cost and Welcome sizes (run by hand, prints a table).

    python3 bench/mls_receive.py                 # 128, 512, 1000 members
    python3 bench/mls_receive.py --sizes 128     # quick look

Per size: one sparse hybrid group (creator adds everyone in one commit), then
six self-updates by the creator that the measured member processes, so the
kept past epochs hold full member lists (a long-lived group). Then, in the
same run:

* decrypt 100 B: ``Group.process`` as shipped (message-secrets write
  deferred) against ``process(..., defer_write=False)`` (OpenMLS's write of
  the whole entity after each message: the behaviour before deferral);
  medians, interleaved so load affects both alike;
* adding one member: commit bytes, Welcome bytes (no ratchet tree), the
  Welcome's common part and the joiner's secrets part (what a joiner
  downloads besides the tree), the sealed tree, the sealed tree delta of the
  same commit (what the adder uploads instead of the tree when the epoch
  before has a stored tree part), the Welcome with the tree inside (for
  comparison), and the joiner's join time from the parts with the whole
  tree; then a second add without an UpdatePath (how the client invites):
  its commit bytes, its tree delta, and its joiner's join time from the
  tree before it plus the delta.

Joiners' state files are deleted right after their KeyPackage is made (only
the creator, the measured member and the new joiner keep state).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proto import mls  # noqa: E402

SUITE = mls.Ciphersuite.HYBRID
SEND_RESERVE = 128  # rust/src/core.rs


def _client(work: str, name: str) -> mls.Client:
    path = f"{work}/{name}.sqlite"
    return mls.Client.create(path, os.urandom(32), name.encode(), ciphersuite=SUITE)


def _throwaway_kp(work: str, i: int) -> bytes:
    c = _client(work, f"x{i}")
    kp = c.key_package()
    c.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}/x{i}.sqlite{suffix}").unlink(missing_ok=True)
    return kp


def _ms(f: object) -> float:
    t = time.perf_counter()
    f()  # type: ignore[operator]
    return (time.perf_counter() - t) * 1000


def run(n: int, rounds: int) -> dict[str, float]:
    work = tempfile.mkdtemp(prefix="qpc-mls-receive-")
    alice, bob = _client(work, "alice"), _client(work, "bob")
    group = alice.create_group(b"g")
    kps = [bob.key_package()] + [_throwaway_kp(work, i) for i in range(2, n)]
    out = group.add_members(kps)
    group.merge_pending_commit()
    assert out.welcome is not None and out.ratchet_tree is not None
    bg = bob.join_from_welcome(out.welcome, out.ratchet_tree)
    for _ in range(6):
        up = group.self_update()
        group.merge_pending_commit()
        bg.process(up.commit)
    deferred: list[float] = []
    direct: list[float] = []
    client_path: list[float] = []
    for seq in range(1, rounds + 1):
        m1, m2, m3 = (group.encrypt(t * 100) for t in (b"x", b"y", b"w"))
        deferred.append(_ms(lambda m=m1: bg.process(m, defer_write=True)))
        direct.append(_ms(lambda m=m2: bg.process(m, defer_write=False)))

        def client_step(m: bytes = m3, seq: int = seq) -> None:
            # What the client's inbox does for a one-message batch: decrypt
            # with a receipt (deferred write), then forget it after the
            # history commit (tui/client/delivery.py).
            bg.process(m, defer_write=True, receipt=seq)
            bob.forget_receipts(seq)

        client_path.append(_ms(client_step))
    # Amortised: 64 in a row (63 deferred, then one full write).
    burst = [group.encrypt(b"z" * 100) for _ in range(64)]
    t = time.perf_counter()
    for m in burst:
        bg.process(m, defer_write=True)
    amortised = (time.perf_counter() - t) * 1000 / len(burst)
    # Adding one member at this size.
    carol, dave = _client(work, "carol"), _client(work, "dave")
    kp = carol.key_package()
    ref = mls.parse_key_package(kp).hash_ref
    add_tree = group.add_members([kp], ratchet_tree_in_welcome=True)
    group.clear_pending_commit()
    add = group.add_members([kp])
    group.merge_pending_commit()
    assert add.welcome is not None and add.ratchet_tree is not None
    assert add.tree_delta is not None
    assert add_tree.welcome is not None
    common, secrets = add.welcome_parts()
    t = time.perf_counter()
    cg = carol.join_from_welcome_parts(common, secrets[ref], add.ratchet_tree)
    join_ms = (time.perf_counter() - t) * 1000
    assert cg.epoch == group.epoch
    # The next add as the client invites (no UpdatePath); its joiner joins
    # from the tree before that add + its delta.
    kp2 = dave.key_package()
    ref2 = mls.parse_key_package(kp2).hash_ref
    before2 = add.ratchet_tree
    add2 = group.add_members([kp2], update_path=False)
    group.merge_pending_commit()
    assert add2.tree_delta is not None
    common2, secrets2 = add2.welcome_parts()
    t = time.perf_counter()
    dg = dave.join_from_welcome_parts(
        common2, secrets2[ref2], before2, tree_deltas=[add2.tree_delta]
    )
    join_delta_ms = (time.perf_counter() - t) * 1000
    assert dg.epoch_authenticator() == group.epoch_authenticator()
    # Sender: 100 B encrypt writing the message secrets each time (OpenMLS)
    # against defer_write=True (one write per SEND_RESERVE sends), the
    # latter as the mean of 2 x SEND_RESERVE sends in a row, reservations
    # included. Nobody decrypts these (they only move alice's ratchet).
    enc_direct = [_ms(lambda: group.encrypt(b"s" * 100)) for _ in range(rounds)]
    t = time.perf_counter()
    for _ in range(2 * SEND_RESERVE):
        group.encrypt(b"d" * 100, defer_write=True)
    enc_deferred = (time.perf_counter() - t) * 1000 / (2 * SEND_RESERVE)
    bob.close()
    alice.close()
    carol.close()
    dave.close()
    return {
        "dec_deferred": statistics.median(deferred),
        "dec_direct": statistics.median(direct),
        "dec_client": statistics.median(client_path),
        "enc_direct": statistics.median(enc_direct),
        "enc_deferred": enc_deferred,
        "dec_amortised": amortised,
        "commit": len(add.commit),
        "welcome": len(add.welcome),
        "common": len(common),
        "secrets": len(secrets[ref]),
        "tree": len(add.ratchet_tree),
        "delta": len(add.tree_delta),
        "commit_np": len(add2.commit),
        "delta_np": len(add2.tree_delta),
        "join_delta": join_delta_ms,
        "welcome_tree": len(add_tree.welcome),
        "join": join_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 1000])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(
        "| members | decrypt 100 B ms (deferred write) | mean of 64 in a row ms "
        "| decrypt 100 B ms (write per message) "
        "| client receive step ms (deferred + receipt + forget) "
        "| encrypt 100 B ms (write per message) | encrypt 100 B ms (deferred, mean of 256) "
        "| add-1 commit B | Welcome B (no tree) | common part B | joiner secrets B "
        "| joiner download besides tree B | sealed tree B | add-1 tree delta B "
        "| Welcome with tree B | join ms | add-1 without UpdatePath: commit B "
        "| its tree delta B | join from the tree before + delta ms |"
    )
    print(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for n in args.sizes:
        r = run(n, args.rounds)
        print(
            f"| {n} | {r['dec_deferred']:.3f} | {r['dec_amortised']:.3f} "
            f"| {r['dec_direct']:.2f} | {r['dec_client']:.3f} "
            f"| {r['enc_direct']:.2f} | {r['enc_deferred']:.3f} | {r['commit']:.0f} "
            f"| {r['welcome']:.0f} | {r['common']:.0f} | {r['secrets']:.0f} "
            f"| {r['common'] + r['secrets']:.0f} | {r['tree']:.0f} "
            f"| {r['delta']:.0f} | {r['welcome_tree']:.0f} "
            f"| {r['join']:.1f} | {r['commit_np']:.0f} | {r['delta_np']:.0f} "
            f"| {r['join_delta']:.1f} |",
            flush=True,
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
