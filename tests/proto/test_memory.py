"""proto.memory: freed large buffers go back to the system (glibc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proto import memory

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from proto import memory
capped = memory.cap_mmap_threshold() if sys.argv[1] == "on" else False
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) // 1024
first = b"x" * (8 << 20) # mmapped; freeing it raises glibc's adaptive threshold
del first
bufs, pins = [], []
for _ in range(12):  # ~48 MB, each followed by a smaller block that stays (a heap's shape)
    bufs.append(b"x" * (4 << 20))  # written, so resident
    pins.append(b"y" * (256 << 10))
before = rss()
del bufs
memory.trim_heap() if sys.argv[1] == "trim" else None
print(json.dumps({"capped": capped, "kept": rss() - before + 48}))
"""

glibc = pytest.mark.skipif(memory._libc() is None, reason="needs glibc's malloc")


def _probe(mode: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, check=True, text=True
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@glibc
def test_capped_threshold_returns_freed_buffers() -> None:
    """Without the cap the 4 MB buffers come from the heap and ~48 MB stay
    resident after they are freed; with it they are unmapped."""
    off, on = _probe("off"), _probe("on")
    assert on["capped"] is True and off["capped"] is False
    assert isinstance(on["kept"], int) and isinstance(off["kept"], int)
    assert off["kept"] >= 40, off
    assert on["kept"] <= 8, on


@glibc
def test_trim_heap_returns_free_heap() -> None:
    assert _probe("trim")["kept"] <= 8  # type: ignore[operator]


def test_environment_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.cap_mmap_threshold() is False
