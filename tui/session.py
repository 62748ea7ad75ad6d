"""How the TUI obtains an engine: the factory protocol the CLI implements.

The TUI never builds an engine itself. The CLI (or a test) hands
:func:`tui.app.make_app` an :class:`EngineFactory`; the login screen uses it
to look at the server's key (for trust-on-first-use), then to open the
profile and connect, and finally calls ``register`` or ``login`` on the
engine it got.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tui.client.api import ClientEngine, Health, PingResult

__all__ = ["EngineFactory", "LoginForm", "ServerKey", "ServerKeyStatus"]


class ServerKeyStatus(enum.Enum):
    """How the server's key compares with what this profile pinned."""

    NEW = "new"
    """Never connected before: ask the user to confirm the fingerprint."""
    PINNED = "pinned"
    """Same key as pinned: connect without asking."""
    CHANGED = "changed"
    """A different key than pinned: warn loudly, refuse unless told to trust it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerKey:
    """The server's TLS key as seen before logging in."""

    server: str
    """``host:port`` that was probed."""
    fingerprint: str
    """SPKI SHA-256 the server presented (hex)."""
    pinned: str = ""
    """Fingerprint pinned earlier for this server ("" if none)."""

    @property
    def status(self) -> ServerKeyStatus:
        """New, pinned or changed."""
        if not self.pinned:
            return ServerKeyStatus.NEW
        if self.pinned == self.fingerprint:
            return ServerKeyStatus.PINNED
        return ServerKeyStatus.CHANGED


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginForm:
    """What the welcome screen collected (secrets never logged)."""

    server: str
    """``host:port``; empty for the embedded local node."""
    user: str
    """Username."""
    password: str
    """Account password (goes into OPAQUE only)."""
    passphrase: str
    """Profile passphrase (encrypts keys and history at rest)."""
    register: bool
    """True to create the account, False to log in."""
    link: bool = False
    """After logging in, ask for the code of another device of the account
    ("Link to an existing account"): that device adds this one to its channels."""

    def __repr__(self) -> str:
        return f"LoginForm(server={self.server!r}, user={self.user!r}, register={self.register})"


class EngineFactory(Protocol):
    """Builds engines for the TUI (implemented by the CLI, faked in tests)."""

    @property
    def default_server(self) -> str:
        """Server to prefill ("" = embedded local node)."""
        ...

    @property
    def default_user(self) -> str:
        """Username to prefill ("" when unknown)."""
        ...

    @property
    def profile_exists(self) -> bool:
        """Whether the profile to open exists already (the welcome screen says so)."""
        ...

    @property
    def profile_dir(self) -> Path | None:
        """The profile's directory (per-profile UI state such as notify levels), if any."""
        ...

    async def resume(self) -> ClientEngine | None:
        """An engine that is already logged in (``qpc demo``), or ``None``."""
        ...

    async def probe(self, server: str) -> ServerKey:
        """Connect without trusting and report the server's key."""
        ...

    async def health(self, server: str) -> Health:
        """The node's health before login (no account, nothing written)."""
        ...

    async def ping(self, server: str) -> PingResult:
        """One round trip to the node before login (no account, nothing written)."""
        ...

    async def open(self, form: LoginForm, *, trust_fingerprint: str) -> ClientEngine:
        """Open (or create) the profile and connect, pinning ``trust_fingerprint``.

        The engine is connected but not yet logged in: the TUI calls
        ``register`` or ``login`` on it next.
        """
        ...

    async def close(self) -> None:
        """Stop whatever the factory started (e.g. the embedded node)."""
        ...
