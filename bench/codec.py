"""Benchmark: the codec's private pycapnp field access vs the public API, in one run.

Run by hand from the repository root::

    python3 bench/codec.py

``proto/codec.py`` reads and writes fields through pycapnp's field-object
accessors (``_get_by_field`` / ``_set_by_field`` / ``_which_str``, resolved
once at import). This prints µs per call for decoding and encoding typical
messages through the codec, beside the same decode done with pycapnp's public
API (attribute access by name, ``which()``) on the same validated reader.
Results are discussed in docs/perf/rpc.md ("Field access").
"""

from __future__ import annotations

import operator
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto import codec as c


def _per_call_us(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def _public_reader(cls: type[Any], table: dict[type[Any], Callable[[Any], Any]]) -> Any:
    """``read(reader) -> cls`` with public attribute access (the codec's alternative)."""
    specs = c._SPECS[cls]
    names = [py for py, *_ in specs]
    kinds = [(kind, elem) for _py, _cn, _f, kind, elem in specs]
    get = operator.attrgetter(*(cn for _py, cn, *_ in specs)) if specs else None

    def read(r: Any) -> Any:
        if get is None:
            return cls()
        values = get(r)
        values = list(values) if len(specs) > 1 else [values]
        for i, (kind, elem) in enumerate(kinds):
            if elem is not None:
                values[i] = tuple([table[elem](x) for x in values[i]])
            elif kind >= c._DATA_LIST:
                values[i] = tuple(values[i])
        return cls(**dict(zip(names, values, strict=True)))

    return read


PUBLIC: dict[type[Any], Callable[[Any], Any]] = {}
PUBLIC.update({cls: _public_reader(cls, PUBLIC) for cls in c._SPECS})


def public_decode_request(data: bytes) -> c.Request:
    reader = c._open(c._RequestSchema, data, c.DEFAULT_LIMITS)
    method = c.METHOD_BY_NAME[str(reader.which())]
    return c.Request(auth=reader.auth, call=PUBLIC[method.params](getattr(reader, method.name)))


def public_decode_response(data: bytes) -> c.Response:
    reader = c._open(c._ResponseSchema, data, c.DEFAULT_LIMITS)
    method = c.METHOD_BY_NAME[str(reader.which())]
    return c.Response(result=PUBLIC[method.result](getattr(reader, method.name)))


def main() -> None:
    ping = c.Request(auth=b"t" * 32, call=c.PingParams(payload=b"x" * 16))
    commit = c.Request(
        auth=b"t" * 32,
        call=c.EnqueueCommitParams(
            channel_id=b"c" * 16,
            epoch=7,
            fanout=tuple(
                c.Recipient(recipient=bytes([i]) * 32, payload=b"p" * 300) for i in range(10)
            ),
        ),
    )
    fetch = c.Response(
        result=c.FetchResult(
            envelopes=tuple(
                c.Envelope(seq=i, channel_id=b"c" * 16, data=b"d" * 300) for i in range(50)
            )
        )
    )
    cases: list[
        tuple[str, Any, Callable[[bytes], Any], Callable[[bytes], Any], Callable[[Any], bytes], int]
    ] = [
        ("ping request", ping, c.decode_request, public_decode_request, c.encode_request, 20_000),
        (
            "enqueueCommit request, 10 recipients",
            commit,
            c.decode_request,
            public_decode_request,
            c.encode_request,
            5_000,
        ),
        (
            "fetch result, 50 envelopes",
            fetch,
            c.decode_response,
            public_decode_response,
            c.encode_response,
            1_000,
        ),
    ]
    print(
        "| message | decode, codec (µs) | decode via public API (µs) "
        "| public / codec | encode, codec (µs) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, msg, decode, public, encode, n in cases:
        data = encode(msg)
        assert decode(data) == public(data) == msg
        seam_us = _per_call_us(lambda: decode(data), n)  # noqa: B023 - called in this iteration
        public_us = _per_call_us(lambda: public(data), n)  # noqa: B023
        encode_us = _per_call_us(lambda: encode(msg), n)  # noqa: B023
        print(
            f"| {name} | {seam_us:.2f} | {public_us:.2f} | "
            f"{public_us / seam_us:.2f}x | {encode_us:.2f} |"
        )


if __name__ == "__main__":
    main()
