"""The docs stay true: every repository path they cite exists, and the
performance summary carries the current per-area write-ups."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PATH = re.compile(
    r"`((?:docs|tests|bench|proto|node|tui|rust|scripts|migrations|\.ci)/[A-Za-z0-9_./*-]+)"
)


def _cited_paths() -> list[tuple[str, str]]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = []
    for doc in docs:
        for match in _PATH.finditer(doc.read_text(encoding="utf-8")):
            found.append((doc.relative_to(ROOT).as_posix(), match.group(1).rstrip(".")))
    return found


def test_every_path_the_docs_cite_exists() -> None:
    cited = _cited_paths()
    assert cited, "the pattern found no paths at all"
    missing = []
    for doc, path in cited:
        base = path.split("::")[0]
        ok = any(ROOT.glob(base)) if "*" in base else (ROOT / base).exists()
        if not ok:
            missing.append(f"{doc}: {path}")
    assert not missing, "docs cite paths that do not exist:\n" + "\n".join(missing)


def test_performance_summary_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "perf_doc.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
