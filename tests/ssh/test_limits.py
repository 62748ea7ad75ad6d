"""Admission bookkeeping of ``qpc serve-ssh`` (pure, clock passed in)."""

from __future__ import annotations

from tui.ssh.limits import AuthRateLimiter, SessionSlots
from tui.ssh.session import ExecCommand, parse_exec


def test_rate_limiter_burst_then_refill() -> None:
    limiter = AuthRateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # per address
    assert not limiter.allow("a", 0.2)
    assert limiter.allow("a", 0.6)  # refilled one token at 2/s


def test_session_slots_per_key_and_total() -> None:
    slots = SessionSlots(max_total=3, max_per_key=2)
    assert slots.acquire("k1") is None
    assert slots.acquire("k1") is None
    assert "2 sessions" in (slots.acquire("k1") or "")
    assert slots.acquire("k2") is None
    assert "full" in (slots.acquire("k3") or "")
    slots.release("k1")
    assert slots.acquire("k3") is None
    assert slots.total == 3


def test_parse_exec() -> None:
    assert parse_exec("whoami") == ExecCommand(name="whoami")
    assert parse_exec("ping -c 5 --json") == ExecCommand(name="ping", json=True, count=5)
    assert isinstance(parse_exec("ping -c 1000"), str)
    assert isinstance(parse_exec("whoami -c 2"), str)
    assert isinstance(parse_exec("'unclosed"), str)
    assert isinstance(parse_exec(""), str)


def test_listen_address() -> None:
    import pytest

    from proto.errors import ConfigError
    from tui.ssh.cli import listen_address

    assert listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert listen_address("[::1]:2222") == ("::1", 2222)
    for bad in ("2222", ":22", "host:99999", "host:x"):
        with pytest.raises(ConfigError):
            listen_address(bad)
