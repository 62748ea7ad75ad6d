"""System entries of a channel's history: who joined, left, was added or
removed (and by whom), topic changes.

The engine writes them into the encrypted history when it processes the
commit (or sets the topic), in processing order among the messages, so every
device shows them in their place after a restart and ``qpc history`` lists
them. They carry no message id: never unread, never a mention, never a read
receipt, never searched (docs/CLIENT.md, "System entries"). Pure functions.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from proto import mls
from tui.client.profile import ChatMessage


def users_of(members: Iterable[mls.Member]) -> frozenset[str]:
    """The usernames behind ``members`` (a user's devices count once)."""
    return frozenset(m.identity.decode("utf-8", "replace") for m in members)


def membership_texts(
    before: Collection[str], after: Collection[str], *, by: str, leavers: Collection[str] = ()
) -> list[str]:
    """The notices for one commit that changed the users from ``before`` to ``after``.

    ``by``: the committer's username ("" if unknown); ``leavers``: users whose
    own remove proposal (a leave) this commit may carry.
    """
    out: list[str] = []
    joined = sorted(set(after) - set(before))
    if joined:
        if by and by not in joined:
            out.append(f"{by} added {', '.join(joined)}")
        else:
            out.extend(f"{user} joined" for user in joined)
    for user in sorted(set(before) - set(after)):
        if user in leavers or not by:
            out.append(f"{user} left" if user in leavers else f"{user} was removed")
        else:
            out.append(f"{by} removed {user}")
    return out


def topic_text(by: str, topic: str) -> str:
    """The notice for a topic change."""
    return f"{by} set the topic: {topic}" if topic else f"{by} cleared the topic"


def notice(channel: bytes, text: str, *, by: str, now_ms: int) -> ChatMessage:
    """A system entry for ``channel``'s history."""
    return ChatMessage(
        channel_id=channel, sender=b"", sender_name=by, timestamp_ms=now_ms, text=text, system=True
    )
