"""Messages the TUI posts to itself: engine events and worker results.

Engine events arrive from one long-lived worker; each is wrapped in
:class:`EngineEventPosted` so handlers and tests can observe exactly what the
app received. State updates that only the newest value matters for
(connection state, the channel list) implement ``can_replace`` so a burst
coalesces into one repaint, as toolong does for its high-rate messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from tui.client.api import (
    ChannelsChanged,
    ConnectionChanged,
    EngineEvent,
    PingResult,
)

__all__ = ["EngineEventPosted", "LoggedIn", "PingSampled", "UserError"]


@dataclass
class EngineEventPosted(Message):
    """The engine's event subscription yielded ``event``."""

    event: EngineEvent
    """The engine event."""

    def can_replace(self, message: Message) -> bool:
        """Newer connection states and channel lists supersede older ones."""
        if not isinstance(message, EngineEventPosted):
            return False
        mine, theirs = self.event, message.event
        if isinstance(mine, ConnectionChanged) and isinstance(theirs, ConnectionChanged):
            return True
        return isinstance(mine, ChannelsChanged) and isinstance(theirs, ChannelsChanged)


@dataclass
class PingSampled(Message):
    """A periodic ping finished."""

    result: PingResult
    """Round trips measured."""


@dataclass
class LoggedIn(Message):
    """Login or registration finished; the main screen can open."""

    user: str
    """Who logged in."""


@dataclass
class UserError(Message):
    """An operation failed; ``text`` is what the user is shown."""

    action: str
    """What was attempted ("send", "invite" ...)."""
    text: str
    """User-facing explanation, never a traceback."""
