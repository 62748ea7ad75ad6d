"""Long fuzz run: ``python -m tests.fuzz [--inputs N] [--seed S] [TARGET ...]``.

Prints one table row per target (inputs, inputs/s, failures) and adds every
failing input, as a hex line, to ``tests/vectors/fuzz/<target>.hex`` so it
becomes a regression vector (``tests/fuzz/test_corpus.py``). Exit status 1
if anything failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.fuzz import engine, targets

CORPUS = Path(__file__).resolve().parents[1] / "vectors" / "fuzz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz")
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=3600.0, help="seconds per target")
    ap.add_argument("names", nargs="*", default=["wire-request", "wire-response"])
    args = ap.parse_args(argv)
    failed = 0
    print(f"{'target':<16} {'inputs':>10} {'inputs/s':>10} {'accepted':>9} {'failures':>9}")
    for name in args.names:
        target = targets.ALL[name]()
        rep = engine.run(target, inputs=args.inputs, seed=args.seed, time_limit_s=args.time_limit)
        print(
            f"{name:<16} {rep.inputs:>10} {rep.rate:>10.0f} {rep.accepted:>9}"
            f" {len(rep.failures):>9}",
            flush=True,
        )
        if rep.failures:
            path = CORPUS / f"{name}.hex"
            known = set(path.read_text().split()) if path.exists() else set()
            known |= {f.data.hex() for f in rep.failures}
            path.write_text("\n".join(sorted(known)) + "\n")
            for f in rep.failures:
                print(f"  FAIL #{f.index}: {f.why} -> {path}", file=sys.stderr)
        failed += len(rep.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
