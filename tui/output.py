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


DELETED_TEXT = "(message deleted)"
"""What a deleted message (a tombstone) shows instead of its text."""


def message_body(m: api.Message) -> str:
    """A message's text as shown: tombstone, action (``* alice waves``), "(edited)"."""
    if m.deleted:
        return DELETED_TEXT
    text = f"* {m.sender} {m.text}" if m.action else m.text
    return f"{text} (edited)" if m.edited else text


def reactions_text(m: api.Message, *, mine_mark: tuple[str, str] = ("[", "]")) -> str:
    """Reactions as ``👍 2  [❤ 1]``: one per emoji with its count; ours marked."""
    parts = []
    for r in m.reactions:
        part = f"{r.emoji} {r.count}"
        parts.append(f"{mine_mark[0]}{part}{mine_mark[1]}" if r.mine else part)
    return "  ".join(parts)


def format_message(m: api.Message, channel_label: str = "", *, with_id: bool = False) -> str:
    """One message as a line: ``[time] #channel sender: text`` (``@bob`` for a DM).

    ``channel_label``: :attr:`tui.client.api.ChannelInfo.label`.

    A reply starts with ``re <parent id prefix>``; reactions follow the text;
    ``with_id`` appends the message id (what ``qpc react``/``edit``/``delete`` take).
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(m.time))
    where = f"{channel_label} " if channel_label else ""
    mark = (
        ""
        if m.state in (api.DeliveryState.SENT, api.DeliveryState.RECEIVED)
        else f" ({m.state.value})"
    )
    reply = f"(re {m.reply_to[:8]}) " if m.reply_to else ""
    body = message_body(m)
    line = (
        f"[{stamp}] {where}{body}"
        if m.action and not m.deleted
        else (f"[{stamp}] {where}{m.sender}: {reply}{body}")
    )
    rx = reactions_text(m)
    if rx:
        line += f"  {rx}"
    if with_id and m.msg_id:
        line += f"  id {m.msg_id}"
    return line + mark


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
