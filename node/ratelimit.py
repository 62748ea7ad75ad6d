"""Token-bucket rate limits keyed by source address or account."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence


@dataclasses.dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Independent token buckets per key, all with one rate and burst.

    A call passes only if *every* key it is charged to has a token; then one
    token is taken from each. Buckets that refilled completely are forgotten
    by :meth:`prune`, so memory is bounded by the keys active recently.
    """

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        """Args: sustained rate, bucket size, and a monotonic clock in seconds."""
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _refill(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.updated = now
        return bucket

    def take(self, keys: Sequence[str]) -> int:
        """Charge one call to ``keys``.

        Returns 0 if allowed, else the milliseconds until every bucket has a
        token again (nothing is charged then).
        """
        now = self._clock()
        buckets = [self._refill(k, now) for k in keys]
        short = max((1.0 - b.tokens for b in buckets), default=0.0)
        if short > 0:
            return max(1, math.ceil(short / self._rate * 1000))
        for b in buckets:
            b.tokens -= 1.0
        return 0

    def prune(self) -> None:
        """Forget buckets that are full again."""
        now = self._clock()
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self._rate >= self._burst
        ]
        for k in full:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
