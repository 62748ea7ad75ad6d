"""Benchmark local history search at 100,000 stored messages.

Run by hand from the repository root::

    python3 bench/search.py [--messages 100000] [--channels 20] [--runs 20]

A real profile (SQLite, every message an AEAD record) is filled with
``--messages`` messages over ``--channels`` channels. Then, in one run:

Two profiles get the same messages: one with the persistent index off
(``persist_search_index=False``: the in-memory index only, the baseline) and
one with it on (encrypted segments in ``client.db``, :mod:`tui.client.search`).

* **store cost**: time to store the messages, per message, each profile;
* **baseline, scan the store**: what a search costs without an index: read
  every record, decrypt it, test the words;
* **first search of a process**: the profile closed and opened again (a new
  process in all but the interpreter), then one search: without segments it
  decrypts every record; with them it loads the segments (median of
  ``--cold`` reopenings);
* **indexed search**: median and worst of ``--runs`` repetitions of each
  query, the index loaded: a rare word, a common word (50 newest hits), two
  words, one channel only, no match;
* **catch-up** after 100 new messages; **delete** of a message (scrub,
  segment rewrite, WAL purge) in each profile;
* **damaged index**: one segment's ciphertext flipped on disk, then the first
  search of a process (drops the segments, decrypts everything, seals again);
* **sizes**: segment bytes on disk vs message records; index heap (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proto.crypto.atrest import KdfParams  # noqa: E402
from tui.client.profile import CLIENT_DB, ChatMessage, Profile  # noqa: E402
from tui.client.search import query_terms  # noqa: E402

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


async def _fill(profile: Profile, n: int, channels: list[bytes], start_at: int = 0) -> float:
    rng = random.Random(1 + start_at)  # same texts in both profiles
    start = time.perf_counter()
    batch = []
    for i in range(start_at, start_at + n):
        msg = ChatMessage(
            channel_id=channels[i % len(channels)],
            sender=b"\x01" * 32,
            sender_name=f"user{i % 37}",
            timestamp_ms=1_700_000_000_000 + i,
            text=_text(rng, i),
            msg_id=i.to_bytes(16, "big"),
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
    entries = await asyncio.to_thread(profile._index_entries, rows)
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


async def _cold(path: Path, persist: bool, channels: list[bytes], runs: int) -> tuple[float, int]:
    """Median time of the first search after opening the profile afresh."""
    times, hits = [], 0
    for _ in range(runs):
        profile = await Profile.open(path, "bench", persist_search_index=persist)
        try:
            start = time.perf_counter()
            found = await profile.search_messages("zanzibar", channels)
            times.append(time.perf_counter() - start)
            hits = len(found)
        finally:
            await profile.close()
    return statistics.median(times), hits


async def _delete(profile: Profile, channels: list[bytes], ids: list[int]) -> float:
    times = []
    for i in ids:
        start = time.perf_counter()
        gone = await profile.scrub_message(channels[i % len(channels)], i.to_bytes(16, "big"))
        times.append(time.perf_counter() - start)
        assert gone is not None
    return statistics.median(times)


def _damage_one_segment(path: Path) -> None:
    with sqlite3.connect(path / CLIENT_DB) as db:
        first, blob = db.execute(
            "SELECT first_id, blob FROM search_segments ORDER BY first_id LIMIT 1 OFFSET 10"
        ).fetchone()
        blob = bytearray(blob)
        blob[40] ^= 1
        db.execute("UPDATE search_segments SET blob = ? WHERE first_id = ?", (bytes(blob), first))


async def run(n: int, n_channels: int, runs: int, cold_runs: int) -> None:
    kdf = KdfParams(memory_kib=8 * 1024, iterations=1)
    channels = [os.urandom(16) for _ in range(n_channels)]
    with tempfile.TemporaryDirectory() as tmp:
        base_path, path = Path(tmp) / "mem", Path(tmp) / "seg"
        base = await Profile.create(base_path, "bench", kdf=kdf, persist_search_index=False)
        profile = await Profile.create(path, "bench", kdf=kdf)
        # Interleaved chunks, so both profiles see the same load on a shared box.
        fill_base = fill_seg = 0.0
        for start_at in range(0, n, 10_000):
            chunk = min(10_000, n - start_at)
            fill_base += await _fill(base, chunk, channels, start_at)
            fill_seg += await _fill(profile, chunk, channels, start_at)
        await base.close()
        await profile.close()
        print(f"filled {n} messages in {n_channels} channels: {fill_base:.1f} s / {fill_seg:.1f} s")

        base = await Profile.open(base_path, "bench", persist_search_index=False)
        base_s, base_hits = await _baseline_scan(base, "zanzibar")
        await base.close()
        cold_base, cold_base_hits = await _cold(base_path, False, channels, 1)
        cold_seg, cold_hits = await _cold(path, True, channels, cold_runs)
        assert cold_hits == base_hits == cold_base_hits, (cold_hits, base_hits, cold_base_hits)

        profile = await Profile.open(path, "bench")
        await profile.search_messages("zanzibar", channels)
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

        await _fill(profile, 100, channels, start_at=n)
        start = time.perf_counter()
        after_hits = len(await profile.search_messages("zanzibar", channels))
        catch_up_s = time.perf_counter() - start
        victims = [n // 40 + k * (n // 20) for k in range(20)]
        del_seg = await _delete(profile, channels, victims)
        await profile.close()
        base = await Profile.open(base_path, "bench", persist_search_index=False)
        del_base = await _delete(base, channels, victims)
        await base.close()

        with sqlite3.connect(path / CLIENT_DB) as db:
            (seg_bytes, n_segs) = db.execute(
                "SELECT sum(length(blob)), count(*) FROM search_segments"
            ).fetchone()
            (rec_bytes,) = db.execute("SELECT sum(length(record)) FROM messages").fetchone()
        _damage_one_segment(path)
        profile = await Profile.open(path, "bench")
        start = time.perf_counter()
        healed = await profile.search_messages("zanzibar", channels)
        rebuild_s = time.perf_counter() - start
        await profile.close()
        assert len(healed) == after_hits, (len(healed), after_hits)
        cold_after, _ = await _cold(path, True, channels, 1)

        profile = await Profile.open(path, "bench")
        tracemalloc.start()
        await profile.search_messages("zanzibar", channels)
        heap, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await profile.close()

    per_base = fill_base / n * 1e6
    per_seg = fill_seg / n * 1e6
    print()
    print(f"| search at {n:,} messages | median | worst | hits |")
    print("|---|---|---|---|")
    print(f"| baseline: decrypt and scan the store | {base_s * 1000:.0f} ms | | {base_hits} |")
    print(
        f"| first search of a process, in-memory index only (before) "
        f"| {cold_base * 1000:.0f} ms | | {cold_base_hits} |"
    )
    print(
        f"| first search of a process, persistent segments "
        f"| {cold_seg * 1000:.1f} ms | | {cold_hits} |"
    )
    for label, med, worst, hits in rows:
        print(f"| indexed: {label} | {med * 1000:.1f} ms | {worst * 1000:.1f} ms | {hits} |")
    print(f"| catch-up after 100 new messages | {catch_up_s * 1000:.1f} ms | | |")
    print(
        f"| damaged segment: first search rebuilds | {rebuild_s * 1000:.0f} ms | | {len(healed)} |"
    )
    print(f"| first search of a process after the rebuild | {cold_after * 1000:.1f} ms | | |")
    print()
    print("| cost | in-memory only | persistent segments |")
    print("|---|---|---|")
    print(f"| store a message (group commit, {n:,}) | {per_base:.1f} µs | {per_seg:.1f} µs |")
    print(
        f"| delete a message (median of 20) | {del_base * 1000:.1f} ms | {del_seg * 1000:.1f} ms |"
    )
    print(
        f"| on disk | {rec_bytes / 2**20:.1f} MiB records | "
        f"+{seg_bytes / 2**20:.1f} MiB in {n_segs} segments |"
    )
    print(f"| index heap after the first search | | {heap / 2**20:.1f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cold", type=int, default=5, help="reopenings for the cold search")
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.channels, args.runs, args.cold))


if __name__ == "__main__":
    main()
