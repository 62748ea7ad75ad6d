"""How replies, reactions, edits, deletes, receipts and typing look in the TUI.

Small pure functions from API values to text, shared by the message log's
rows (whatever widget draws them) and the lines under the log, so the
rendering of each message kind is tested without a screen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tui.client.api import Message
from tui.output import message_body, reactions_text

__all__ = ["QUOTE_CHARS", "message_text", "quote", "seen_by", "typing_text"]

QUOTE_CHARS = 60
"""How much of a parent a reply quotes."""


def quote(parent: Message | None) -> str:
    """The quoted-parent line of a reply: ``↳ alice: lunch at noon?``."""
    if parent is None:
        return "↳ (an earlier message)"
    body = message_body(parent).replace("\n", " ")
    if len(body) > QUOTE_CHARS:
        body = body[: QUOTE_CHARS - 1] + "…"
    return f"↳ {parent.sender}: {body}"


def message_text(m: Message, parent: Message | None = None) -> str:
    """A message's text as the log shows it (may span lines).

    A reply starts with its quoted parent; the body shows the tombstone,
    the action form (``* bob waves``) and "(edited)"; reactions follow on
    their own line, counted per emoji, ours in brackets (``[👍 2]  ❤ 1``).
    """
    lines = []
    if m.reply_to and not m.deleted:
        lines.append(quote(parent))
    lines.append(message_body(m))
    rx = reactions_text(m)
    if rx:
        lines.append(rx)
    return "\n".join(lines)


def typing_text(users: Sequence[str]) -> str:
    """``bob is typing…`` / ``bob and carol are typing…`` / ``4 people are typing…``."""
    if not users:
        return ""
    if len(users) == 1:
        return f"{users[0]} is typing…"
    if len(users) <= 3:
        return f"{', '.join(users[:-1])} and {users[-1]} are typing…"
    return f"{len(users)} people are typing…"


def seen_by(messages: Sequence[Message], seen: Mapping[str, str]) -> tuple[str, ...]:
    """Who has read our newest message: members whose read position (a message
    id, ``seen``) is at or after it in ``messages`` (oldest first)."""
    position = {m.msg_id: i for i, m in enumerate(messages) if m.msg_id}
    last_own = max((i for i, m in enumerate(messages) if m.outgoing), default=None)
    if last_own is None:
        return ()
    return tuple(sorted(user for user, mid in seen.items() if position.get(mid, -1) >= last_own))
