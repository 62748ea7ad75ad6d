"""Admission for ``qpc serve-ssh``: auth rate per address, sessions per key and in total.

Pure bookkeeping with the clock passed in, so it is tested without sockets.
The Prometheus metrics live in a registry of their own (no module globals).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

__all__ = ["AuthRateLimiter", "SessionMetrics", "SessionSlots"]

_MAX_TRACKED = 10_000
"""Source addresses remembered by the rate limiter (oldest forgotten first)."""


@dataclass(slots=True)
class AuthRateLimiter:
    """A token bucket per source address: ``burst`` attempts at once, ``rate`` per second."""

    rate: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, addr: str, now: float) -> bool:
        """Take one attempt for ``addr`` at time ``now``; False when it has none left."""
        tokens, last = self._buckets.pop(addr, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[addr] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > _MAX_TRACKED:
            del self._buckets[next(iter(self._buckets))]
        return ok


@dataclass(slots=True)
class SessionSlots:
    """Open sessions per key and in total, within their limits."""

    max_total: int
    max_per_key: int
    _per_key: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Sessions open now."""
        return sum(self._per_key.values())

    def acquire(self, key: str) -> str | None:
        """Take a slot for ``key``; None on success, else why not (shown to the client)."""
        if self.total >= self.max_total:
            return "the server is full; try again later"
        if self._per_key[key] >= self.max_per_key:
            return f"this key already has {self.max_per_key} sessions open"
        self._per_key[key] += 1
        return None

    def release(self, key: str) -> None:
        """Give back a slot taken with :meth:`acquire`."""
        self._per_key[key] -= 1
        if self._per_key[key] <= 0:
            del self._per_key[key]


class SessionMetrics:
    """Prometheus metrics of the SSH front end, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        """Served by ``--metrics``."""
        self.sessions = Gauge(
            "qpc_ssh_sessions", "Sessions open now", ["kind"], registry=self.registry
        )
        self.sessions_total = PromCounter(
            "qpc_ssh_sessions_opened", "Sessions opened", ["kind"], registry=self.registry
        )
        self.rejected = PromCounter(
            "qpc_ssh_sessions_rejected", "Sessions refused by a limit", registry=self.registry
        )
        self.auth = PromCounter(
            "qpc_ssh_auth", "Authentication outcomes", ["result"], registry=self.registry
        )
        self.idle_closed = PromCounter(
            "qpc_ssh_idle_closed", "Sessions closed by the idle timeout", registry=self.registry
        )
