"""Benchmark local history search at 100,000 stored messages.

Run by hand from the repository root::

    python3 bench/search.py [--messages 100000] [--channels 20] [--runs 20]

A real profile (SQLite, every message an AEAD record) is filled with
``--messages`` messages over ``--channels`` channels. Then, in one run:

* **baseline, scan the store**: what a search costs without an index: read
  every record, decrypt it, test the words (this is also the one-off cost of
  building the in-memory index, paid by the first search of a process);
* **indexed search** (:mod:`tui.client.search`): median and worst of
  ``--runs`` repetitions of each query, the index already built: a rare
  word, a common word (50 newest hits), two words, one channel only;
* **catch-up**: a search after 100 new messages were stored (only those are
  decrypted);
* **index memory**: Python heap held by the index (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proto.crypto.atrest import KdfParams  # noqa: E402
from tui.client.profile import ChatMessage, Profile  # noqa: E402
from tui.client.search import SearchIndex, query_terms  # noqa: E402

_WORDS = [
    "the",
    "node",
    "is",
    "up",
    "again",
    "deploy",
    "release",
    "build",
    "test",
    "ship",
    "review",
    "merge",
    "branch",
    "fix",
    "bug",
    "lunch",
    "coffee",
    "meeting",
    "tomorrow",
    "today",
    "later",
    "thanks",
    "ok",
    "sure",
    "maybe",
    "question",
    "answer",
    "key",
    "group",
    "channel",
    "member",
    "invite",
    "message",
    "search",
    "history",
    "backlog",
    "ping",
    "health",
    "server",
]


def _text(rng: random.Random, i: int) -> str:
    words = rng.choices(_WORDS, k=rng.randint(4, 16))
    if i % 10_000 == 7:
        words.append("zanzibar")  # rare: 10 hits in 100,000
    return " ".join(words)


async def _fill(profile: Profile, n: int, channels: list[bytes]) -> float:
    rng = random.Random(1)
    start = time.perf_counter()
    batch = []
    for i in range(n):
        msg = ChatMessage(
            channel_id=channels[i % len(channels)],
            sender=b"\x01" * 32,
            sender_name=f"user{i % 37}",
            timestamp_ms=1_700_000_000_000 + i,
            text=_text(rng, i),
        )
        batch.append(profile.queue_message(msg))
        if len(batch) >= 2000:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)
    return time.perf_counter() - start


async def _baseline_scan(profile: Profile, query: str) -> tuple[float, int]:
    """Decrypt every stored record and test the words (no index)."""
    start = time.perf_counter()
    rows = await profile._query("SELECT id, channel_tag, record FROM messages ORDER BY id", ())
    entries = profile._index_entries(rows)
    terms = query_terms(query)
    hits = sum(1 for e in entries if all(t in e.folded for t in terms))
    return time.perf_counter() - start, hits


async def _timed(coro_fn, runs: int) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    times, hits = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        found = await coro_fn()
        times.append(time.perf_counter() - start)
        hits = len(found)
    return statistics.median(times), max(times), hits


async def run(n: int, n_channels: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p"
        kdf = KdfParams(memory_kib=8 * 1024, iterations=1)
        profile = await Profile.create(path, "bench", kdf=kdf)
        channels = [os.urandom(16) for _ in range(n_channels)]
        fill_s = await _fill(profile, n, channels)
        print(f"filled {n} messages in {n_channels} channels in {fill_s:.1f} s")

        base_s, base_hits = await _baseline_scan(profile, "zanzibar")

        start = time.perf_counter()
        first = await profile.search_messages("zanzibar", channels)
        build_s = time.perf_counter() - start
        rows_all = await profile._query(
            "SELECT id, channel_tag, record FROM messages ORDER BY id", ()
        )
        tracemalloc.start()
        probe = SearchIndex()
        probe.add(profile._index_entries(rows_all))
        heap, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del probe, rows_all
        assert len(first) == base_hits, (len(first), base_hits)

        rows: list[tuple[str, float, float, int]] = []
        queries = (
            ("rare word (10 hits)", "zanzibar", None),
            ("common word (50 newest)", "deploy", None),
            ("two words", "release coffee", None),
            ("one channel", "merge", channels[3]),
            ("no match", "qwertyuiop", None),
        )
        for label, query, channel in queries:

            def call(q: str = query, c: bytes | None = channel) -> object:
                return profile.search_messages(q, channels, channel_id=c, limit=50)

            med, worst, hits = await _timed(call, runs)  # type: ignore[arg-type]
            rows.append((label, med, worst, hits))

        await _fill(profile, 100, channels)
        start = time.perf_counter()
        await profile.search_messages("zanzibar", channels)
        catch_up_s = time.perf_counter() - start
        await profile.close()

    print()
    print(f"| search at {n:,} messages | median | worst | hits |")
    print("|---|---|---|---|")
    print(f"| baseline: decrypt and scan the store | {base_s * 1000:.0f} ms | | {base_hits} |")
    print(f"| first search (builds the index) | {build_s * 1000:.0f} ms | | {len(first)} |")
    for label, med, worst, hits in rows:
        print(f"| indexed: {label} | {med * 1000:.1f} ms | {worst * 1000:.1f} ms | {hits} |")
    print(f"| catch-up after 100 new messages | {catch_up_s * 1000:.1f} ms | | |")
    print(f"| index memory | {heap / 2**20:.1f} MiB | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.channels, args.runs))


if __name__ == "__main__":
    main()
