"""Short fuzz runs of every decoder of outside bytes (the long run: ``scripts/fuzz``).

Each input runs in a forked worker: an abort or a hang is a reported failure
with the input, never a crash of the test runner. ``QPC_FUZZ_SEED`` picks
other inputs (the default seed draws the same ones on every run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proto import codec as c
from proto.errors import ProtocolError
from tests.fuzz import engine, targets

SEED = int(os.environ.get("QPC_FUZZ_SEED", "1"))
CORPUS = Path(__file__).resolve().parents[1] / "vectors" / "fuzz"

SHORT_RUN = {
    "wire-request": 50_000,
    "wire-response": 50_000,
    "sealed-envelope": 3000,
    "hybrid-key": 5000,
    "app-data": 5000,
    "at-rest": 5000,
    "profile-kdf": 5000,
    "mls": 3000,
    "node-config": 500,
    "tui-settings": 500,
}


def _explain(rep: engine.Report) -> str:
    return "\n".join(f"#{f.index} {f.why}: {f.data.hex()}" for f in rep.failures[:10])


@pytest.mark.parametrize("name", sorted(SHORT_RUN))
def test_short_fuzz_run(name: str) -> None:
    target = targets.ALL[name]()
    rep = engine.run(target, inputs=SHORT_RUN[name], seed=SEED, time_limit_s=120)
    assert rep.inputs == SHORT_RUN[name]
    assert not rep.failures, _explain(rep)


@pytest.mark.parametrize("name", sorted(p.stem for p in CORPUS.glob("*.hex")))
def test_regression_corpus(name: str) -> None:
    """Every input that ever failed a decoder now gets that decoder's typed error
    (``ProtocolError`` for the wire)."""
    corpus = [bytes.fromhex(line) for line in (CORPUS / f"{name}.hex").read_text().split()]
    assert corpus
    live = targets.ALL[name]()
    target = engine.Target(
        name=name,
        samples=corpus,
        decode=live.decode,
        typed_errors=live.typed_errors,
        replay=True,
    )
    rep = engine.run(target, inputs=len(corpus), time_limit_s=120)
    assert not rep.failures, _explain(rep)
    assert rep.inputs == len(corpus)
    assert rep.accepted == 0  # each one is malformed: an error, not a value


def _aborts_on_0xff(data: bytes) -> object:
    if data[:1] == b"\xff":
        os.abort()
    if data[:1] == b"\xfe":
        raise KeyError("untyped")
    return c.decode_request(data)


def test_harness_reports_aborts_and_untyped_errors() -> None:
    """The runner survives a worker that aborts and names the input that did it."""
    samples = [b"\xff abort", b"\x00 fine", b"\xfe untyped", b"\x00 fine again"]
    target = engine.Target(
        name="self-test",
        samples=samples,
        decode=_aborts_on_0xff,
        typed_errors=(ProtocolError,),
        replay=True,
    )
    rep = engine.run(target, inputs=len(samples))
    assert rep.inputs == len(samples)
    found = {f.data: f.why for f in rep.failures}
    assert set(found) == {b"\xff abort", b"\xfe untyped"}
    assert "died" in found[b"\xff abort"]
    assert "KeyError" in found[b"\xfe untyped"]
