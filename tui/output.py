"""Plain-text and JSON renderings of engine results.

Shared by the ``qpc`` subcommands (:mod:`tui.cli.commands`) and the commands
``qpc serve-ssh`` runs without a TUI (:mod:`tui.ssh.exec`).
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any

from tui.client import api

__all__ = ["as_json", "delivery_text", "format_message", "health_line", "ping_json", "ping_lines"]


def as_json(value: object) -> Any:
    """Dataclasses/enums/tuples as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value


def format_message(m: api.Message, channel_label: str = "") -> str:
    """One message as a line: ``[time] #channel sender: text`` (``@bob`` for a DM).

    ``channel_label``: :attr:`tui.client.api.ChannelInfo.label`.
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(m.time))
    where = f"{channel_label} " if channel_label else ""
    mark = (
        ""
        if m.state in (api.DeliveryState.SENT, api.DeliveryState.RECEIVED)
        else f" ({m.state.value})"
    )
    return f"[{stamp}] {where}{m.sender}: {m.text}{mark}"


def delivery_text(state: api.DeliveryState) -> str:
    """What ``qpc send`` says about a message it wrote."""
    if state is api.DeliveryState.SENT:
        return "sent"
    if state is api.DeliveryState.PENDING:
        return "queued: the node is not reachable; it goes out on the next connection"
    if state is api.DeliveryState.FAILED:
        return "failed: not delivered"
    return str(state.value)


def health_line(h: api.Health) -> str:
    """``qpc health``'s line."""
    up = h.uptime_ms / 1000
    return f"{h.status}  version {h.version}  up {up:.0f}s  store {h.store_backend}"


def ping_lines(p: api.PingResult) -> list[str]:
    """``qpc ping``'s lines."""
    lines = [f"rtt {r:.2f} ms" for r in p.rtts_ms]
    lines.append(f"min/median/max {p.min_ms:.2f}/{p.median_ms:.2f}/{p.max_ms:.2f} ms")
    return lines


def ping_json(p: api.PingResult) -> dict[str, Any]:
    """``qpc ping --json``'s object."""
    return {**as_json(p), "median_ms": p.median_ms}
