"""A structure-aware mutation fuzzer whose worker may die without taking us with it.

Every input is derived from ``(seed, index)`` alone, so the parent never ships
bytes to the worker and can rebuild any input it needs to report. The worker
is a forked process that decodes inputs ``start..end`` and publishes the index
it is working on in shared memory before each one. If it dies (SIGABRT from a
C++ library, SIGSEGV, a hang past the time limit) the parent records that
index as a failure, saves the input, and starts a new worker at the next
index. An exception that is not one of the target's typed errors is a failure
too (reported by the worker, which goes on).

Used by the short run in the default test suite (``tests/fuzz/test_fuzz.py``)
and by the long run (``scripts/fuzz`` -> ``python -m tests.fuzz``).
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

Decoder = Callable[[bytes], object]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One decoder of outside bytes and the valid inputs its mutations start from."""

    name: str
    samples: Sequence[bytes]
    decode: Decoder
    typed_errors: tuple[type[BaseException], ...]
    """Exceptions that are a correct answer to bad input."""
    capnp: bool = False
    """Use Cap'n Proto aware mutations (pointers, segment table)."""
    replay: bool = False
    """Decode the samples themselves, in order (a regression corpus), not mutations."""


@dataclass(slots=True, kw_only=True)
class Failure:
    index: int
    data: bytes
    why: str


@dataclass(slots=True, kw_only=True)
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    accepted: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------ mutators

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _rand_pointer(rng: random.Random) -> int:
    """A random but plausible Cap'n Proto pointer word."""
    kind = rng.randrange(4)
    offset = rng.choice((0, 1, -1, 2, -2, rng.randrange(-(1 << 29), 1 << 29), (1 << 29) - 1))
    offset &= (1 << 30) - 1
    if kind == 0:  # struct: data words, pointer count
        hi = rng.choice((0, 1, 2, 0xFFFF, rng.randrange(1 << 16))) | (
            rng.choice((0, 1, 2, 0xFFFF, rng.randrange(1 << 16))) << 16
        )
    elif kind == 1:  # list: element size (3 bits), count (29 bits)
        hi = rng.randrange(8) | (
            rng.choice((0, 1, 2, 7, 8, (1 << 29) - 1, rng.randrange(1 << 29))) << 3
        )
    elif kind == 2:  # far: landing pad offset, double-far bit, segment id
        offset = rng.choice((0, 1, rng.randrange(1 << 29))) << 1 | rng.randrange(2)
        hi = rng.choice((0, 1, 2, 0xFFFFFFFF, rng.randrange(1 << 32)))
        return (offset << 2 | 2) | (hi << 32)
    else:  # capability / other
        hi = rng.randrange(1 << 32)
    return (offset << 2 | kind) | (hi << 32)


def _body_range(data: bytes) -> tuple[int, int]:
    """Offset and word count of the message body after the segment table."""
    if len(data) < 8:
        return 0, len(data) // 8
    count = _U32.unpack_from(data, 0)[0] + 1
    start = (4 + 4 * min(count, 1024) + 7) & ~7
    return start, max(0, (len(data) - start) // 8)


def _split(data: bytes) -> list[list[int]] | None:
    """Words of each segment of a well-framed message, or ``None``."""
    if len(data) < 8:
        return None
    count = _U32.unpack_from(data, 0)[0] + 1
    header = (4 + 4 * count + 7) & ~7
    if count > 64 or len(data) < header:
        return None
    sizes = struct.unpack_from(f"<{count}I", data, 4)
    if header + 8 * sum(sizes) != len(data):
        return None
    out, pos = [], header
    for size in sizes:
        out.append(list(struct.unpack_from(f"<{size}Q", data, pos)))
        pos += 8 * size
    return out


def _join(segments: list[list[int]]) -> bytearray:
    head = struct.pack(f"<{len(segments) + 1}I", len(segments) - 1, *map(len, segments))
    head += b"\0" * (-len(head) % 8)
    return bytearray(head + b"".join(struct.pack(f"<{len(s)}Q", *s) for s in segments))


def _signed_offset(ptr: int) -> int:
    return ((ptr >> 2) & 0x3FFFFFFF) - ((ptr >> 1) & (1 << 30))


def _with_offset(ptr: int, offset: int) -> int:
    return (ptr & ~(0x3FFFFFFF << 2)) | ((offset & 0x3FFFFFFF) << 2)


def _far(pad: int, segment: int, double: bool) -> int:
    return 2 | int(double) << 2 | (pad & 0x1FFFFFFF) << 3 | (segment & 0xFFFFFFFF) << 32


def _make_far(rng: random.Random, data: bytes) -> bytes:
    """Put one struct/list pointer behind a *valid* far or double-far landing pad.

    The segment holding the pointer is copied to a new segment; the pointer
    becomes a far pointer to a pad in the copy (single far) or to a two-word
    pad (far + tag) in a third segment (double far). The message stays valid,
    so later mutations reach pycapnp's far-pointer reading code.
    """
    segments = _split(data)
    if segments is None:
        return data
    seg = rng.randrange(len(segments))
    words = segments[seg]
    spots = [i for i, w in enumerate(words) if w and w & 3 in (0, 1)]
    if not spots:
        return data
    i = rng.choice(spots)
    ptr = words[i]
    target = i + 1 + _signed_offset(ptr)
    copy = len(segments)
    segments.append(list(words))
    if rng.random() < 0.5:
        pad = len(segments[copy])
        segments[copy].append(_with_offset(ptr, target - pad - 1))
        words[i] = _far(pad, copy, False)
    else:
        segments.append([_far(target, copy, False), _with_offset(ptr, 0)])
        words[i] = _far(0, copy + 1, True)
    return bytes(_join(segments))


def _tweak_pointer(rng: random.Random, ptr: int) -> int:
    """Change one field of an existing pointer and keep the others (wrong kinds,
    element sizes, counts, struct sizes, offsets, far segment ids)."""
    field = rng.randrange(4)
    if field == 0:
        return (ptr & ~3) | rng.randrange(4)
    if ptr & 3 == 2:
        if field == 1:
            return ptr ^ 4
        return (ptr & 0xFFFFFFFF) | rng.choice((0, 1, 2, 3, 0xFFFFFFFF)) << 32
    if field == 1:
        return _with_offset(ptr, _signed_offset(ptr) + rng.choice((-2, -1, 1, 2, 1 << 20)))
    if ptr & 3 == 1:
        if field == 2:
            return (ptr & ~(7 << 32)) | rng.randrange(8) << 32
        count = rng.choice((0, 1, 2, 255, (1 << 29) - 1))
        return (ptr & ((1 << 35) - 1)) | count << 35
    if field == 2:
        return (ptr & ~(0xFFFF << 32)) | rng.choice((0, 1, 2, 0xFFFF)) << 32
    return (ptr & ((1 << 48) - 1)) | rng.choice((0, 1, 2, 0xFFFF)) << 48


def _pointer_op(rng: random.Random, data: bytes, op: int) -> bytes:
    """Ops on the pointers already in the message (12: tweak, 13: far, 14: tags)."""
    if op == 13:
        return _make_far(rng, data)
    segments = _split(data)
    if segments is None:
        return data
    places = [(s, i) for s, seg in enumerate(segments) for i, w in enumerate(seg) if w]
    if op == 14:  # the tag word of an inline-composite (struct) list
        places = [
            (s, i + 1 + _signed_offset(w))
            for s, seg in enumerate(segments)
            for i, w in enumerate(seg)
            if w & 3 == 1 and (w >> 32) & 7 == 7
        ]
        places = [(s, i) for s, i in places if 0 <= i < len(segments[s])]
    if not places:
        return data
    s, i = rng.choice(places)
    segments[s][i] = _tweak_pointer(rng, segments[s][i])
    return bytes(_join(segments))


def mutate(rng: random.Random, samples: Sequence[bytes], capnp: bool) -> bytes:
    """One mutated input (1-4 stacked mutations of one sample)."""
    data = bytearray(rng.choice(samples))
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        op = rng.randrange(15 if capnp else 7)
        n = len(data)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # set a byte
            data[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:  # truncate
            del data[rng.randrange(n + 1) :]
        elif op == 3:  # append junk
            data += rng.randbytes(rng.choice((1, 7, 8, 16, rng.randrange(64))))
        elif op == 4 and n:  # delete a run
            i = rng.randrange(n)
            del data[i : i + rng.randrange(1, 17)]
        elif op == 5 and n:  # duplicate a run
            i = rng.randrange(n)
            data[i:i] = data[i : i + rng.randrange(1, 17)]
        elif op == 6:  # splice with another sample
            other = rng.choice(samples)
            cut = rng.randrange(n + 1)
            data = data[:cut] + other[rng.randrange(len(other) + 1) :]
        elif op in (7, 8, 9):  # overwrite a body word with a pointer
            start, words = _body_range(bytes(data))
            if words:
                at = start + 8 * rng.randrange(words)
                _U64.pack_into(data, at, _rand_pointer(rng))
        elif op == 10 and n >= 8:  # segment table: count and sizes
            count = rng.choice((0, 1, 2, 3, 63, 64, 511, 0xFFFFFFFF, rng.randrange(1 << 32)))
            _U32.pack_into(data, 0, count)
            if rng.random() < 0.5:
                _U32.pack_into(data, 4, rng.choice((0, 1, n // 8, 0xFFFFFFFF)))
        elif op == 11 and n >= 16:  # split into two segments at a word boundary
            start, words = _body_range(bytes(data))
            if words >= 2 and start == 8:
                first = rng.randrange(1, words)
                body = bytes(data[8:])
                data = bytearray(
                    _U32.pack(1)
                    + _U32.pack(first)
                    + _U32.pack(words - first)
                    + b"\0" * 4
                    + body[: 8 * first]
                    + body[8 * first :]
                )
                if rng.random() < 0.7:  # and a far pointer somewhere into the second one
                    at = 16 + 8 * rng.randrange(first)
                    far = (rng.randrange(words - first + 1) << 3) | (rng.randrange(2) << 2) | 2
                    _U64.pack_into(data, at, far | (rng.choice((0, 1, 2)) << 32))
        elif op >= 12:
            data = bytearray(_pointer_op(rng, bytes(data), op))
    return bytes(data)


def input_at(target: Target, seed: int, index: int) -> bytes:
    if target.replay:
        return target.samples[index]
    rng = random.Random(seed * 1_000_003 + index)
    if index % 64 == 0:  # now and then, bytes with no structure at all
        return rng.randbytes(rng.randrange(96))
    return mutate(rng, target.samples, target.capnp)


# --------------------------------------------------------------- the runner


def _worker(
    target: Target, seed: int, start: int, end: int, current: Any, accepted: Any, out: Connection
) -> None:
    faulthandler.disable()  # an abort is expected output here, not a stack dump
    ok = 0
    for i in range(start, end):
        current.value = i
        data = input_at(target, seed, i)
        try:
            target.decode(data)
            ok += 1
        except target.typed_errors:
            pass
        except BaseException as exc:
            out.send((i, f"{type(exc).__name__}: {str(exc)[:200]}"))
    accepted.value = ok
    current.value = end
    out.send(None)


def run(
    target: Target,
    *,
    inputs: int,
    seed: int = 1,
    time_limit_s: float = 60.0,
    stall_s: float = 10.0,
) -> Report:
    """Decode ``inputs`` mutated inputs in forked workers; failures are reported, not raised."""
    ctx = mp.get_context("fork")
    report = Report(target=target.name)
    began = time.perf_counter()
    index = 0
    while index < inputs:
        current = ctx.Value("q", index, lock=False)
        accepted = ctx.Value("q", 0, lock=False)
        rx, tx = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker,
            args=(target, seed, index, inputs, current, accepted, tx),
            daemon=True,
        )
        proc.start()
        tx.close()
        last, last_move = current.value, time.perf_counter()
        finished = False
        while True:
            if rx.poll(0.05):
                try:
                    msg = rx.recv()
                except EOFError:
                    msg = "eof"
                if msg is None:
                    finished = True
                    break
                if msg != "eof":
                    i, why = msg
                    report.failures.append(
                        Failure(index=i, data=input_at(target, seed, i), why=why)
                    )
                    continue
            if not proc.is_alive():
                break
            now = time.perf_counter()
            if current.value != last:
                last, last_move = current.value, now
            elif now - last_move > stall_s:  # a hang is a failure too
                proc.kill()
                break
            if now - began > time_limit_s:
                proc.kill()
                break
        proc.join()
        rx.close()
        if finished:
            report.accepted += accepted.value
            index = inputs
            break
        if time.perf_counter() - began > time_limit_s and proc.exitcode == -9:
            index = current.value
            break
        i = current.value
        why = f"worker died (exit {proc.exitcode})" if proc.exitcode else "worker hung"
        report.failures.append(Failure(index=i, data=input_at(target, seed, i), why=why))
        index = i + 1
    report.inputs = index
    report.seconds = time.perf_counter() - began
    return report
