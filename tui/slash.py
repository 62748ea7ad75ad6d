"""Slash commands typed in the composer: parsing and Tab completion (no I/O).

A line is a command when it starts with ``/`` followed by a non-space
character (``/help``, ``/me waves``). ``//text`` sends ``/text`` as a
literal message, and a line starting with ``/ `` (slash, space) is text too.
A command nobody knows is :class:`Unknown` and is never sent as text: the
composer keeps it and the user is told (WeeChat and irssi do the same; a
mistyped ``/hlep`` in a channel is embarrassing and cannot be recalled).

:func:`complete` gives the candidates for the word before the cursor:
command names after a leading ``/``, member names after ``@``, a member name
at the start of a line (``bob: ``), member names as the arguments of
``/invite``, ``/remove``, ``/msg``, ``/verify``, and the levels of ``/notify``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "SLASH_COMMANDS",
    "Completion",
    "Invocation",
    "SlashCommand",
    "Text",
    "Unknown",
    "by_name",
    "complete",
    "parse",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SlashCommand:
    """One command the composer understands."""

    name: str
    """Name without the slash."""
    usage: str
    """Arguments as shown in the help ("" when none)."""
    help: str
    """One-line explanation."""
    args: str = ""
    """What Tab completes for the arguments: ``users``, ``levels`` or ``""``."""


SLASH_COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand(
        name="join",
        usage="#channel",
        help="Open a channel you are in, or create a group with that name",
    ),
    SlashCommand(
        name="invite", usage="user [user…]", help="Add people to the open channel", args="users"
    ),
    SlashCommand(
        name="remove",
        usage="user [user…]",
        help="Remove people from the open channel",
        args="users",
    ),
    SlashCommand(name="leave", usage="", help="Leave the open channel"),
    SlashCommand(name="msg", usage="user", help="Open (or start) a direct message", args="users"),
    SlashCommand(name="me", usage="action", help="Say what you do: “* alice waves”"),
    SlashCommand(name="topic", usage="[text]", help="Show or set the open channel's topic"),
    SlashCommand(
        name="notify",
        usage="all|mentions|mute",
        help="How much the open channel may interrupt",
        args="levels",
    ),
    SlashCommand(
        name="search", usage="[text]", help="Search the local history (all channels, Ctrl+F)"
    ),
    SlashCommand(name="links", usage="", help="Open or copy the links of the open channel"),
    SlashCommand(name="members", usage="", help="Show or hide the member list"),
    SlashCommand(
        name="verify", usage="user", help="Compare safety numbers with a user", args="users"
    ),
    SlashCommand(
        name="link",
        usage="[code]",
        help="Link a new device (shows a code); with a code: link this device to the account",
    ),
    SlashCommand(name="devices", usage="", help="Your devices: list, link, unlink"),
    SlashCommand(name="whoami", usage="", help="User, device and server fingerprints"),
    SlashCommand(name="health", usage="", help="Node status, version, uptime"),
    SlashCommand(name="ping", usage="", help="Live round-trip times"),
    SlashCommand(name="help", usage="", help="Commands and keys"),
    SlashCommand(name="quit", usage="", help="Leave quicnprotochat"),
)

_LEVELS = ("all", "mentions", "mute")


def by_name(name: str) -> SlashCommand | None:
    """The command called ``name`` (without the slash)."""
    for command in SLASH_COMMANDS:
        if command.name == name:
            return command
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    """A message to send as it is."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """A known command with its argument text (stripped)."""

    command: SlashCommand
    args: str

    @property
    def words(self) -> list[str]:
        """The arguments split on whitespace (``@`` and ``#`` prefixes kept)."""
        return self.args.split()


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown:
    """A line that looks like a command nobody knows (never sent)."""

    name: str


def parse(line: str) -> Text | Invocation | Unknown:
    """What the composer's ``line`` means (see the module docstring)."""
    if line.startswith("//"):
        return Text(text=line[1:])
    if not line.startswith("/") or len(line) < 2 or line[1].isspace():
        return Text(text=line)
    head, _, rest = line[1:].partition(" ")
    head, nl, more = head.partition("\n")
    if nl:
        rest = more + (" " + rest if rest else "")
    command = by_name(head.lower())
    if command is None:
        return Unknown(name=head)
    return Invocation(command=command, args=rest.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """Candidates for the word that ends at the cursor."""

    start: int
    """Offset in the text before the cursor where the replaced word starts."""
    candidates: tuple[str, ...]
    """Replacements for ``text[start:cursor]``, best first (each with its suffix)."""


def complete(before: str, users: Iterable[str]) -> Completion | None:
    """Completions for the last word of ``before`` (the text up to the cursor).

    ``users`` are the names to offer (members of the open channel first).
    Returns None when there is nothing to complete.
    """
    start = max(before.rfind(" "), before.rfind("\n")) + 1
    word = before[start:]
    names = list(dict.fromkeys(u for u in users if u))
    at_line_start = start == 0
    if at_line_start and word.startswith("/") and not word.startswith("//"):
        prefix = word[1:].lower()
        found = tuple(f"/{c.name} " for c in SLASH_COMMANDS if c.name.startswith(prefix))
        return Completion(start=start, candidates=found) if found else None
    if word.startswith("@"):
        found = _names(names, word[1:], "@", " ")
        return Completion(start=start, candidates=found) if found else None
    if not word:
        return None
    command = _command_of(before)
    if command is not None and command.args == "levels":
        found = tuple(f"{lv} " for lv in _LEVELS if lv.startswith(word.lower()))
        return Completion(start=start, candidates=found) if found else None
    if command is not None and command.args != "users":
        return None
    suffix = ": " if at_line_start and command is None else " "
    found = _names(names, word, "", suffix)
    return Completion(start=start, candidates=found) if found else None


def _command_of(before: str) -> SlashCommand | None:
    if not before.startswith("/") or before.startswith("//"):
        return None
    head = before[1:].split(" ", 1)[0]
    if " " not in before:
        return None
    return by_name(head.lower())


def _names(names: list[str], prefix: str, lead: str, suffix: str) -> tuple[str, ...]:
    low = prefix.lower()
    return tuple(f"{lead}{n}{suffix}" for n in names if n.lower().startswith(low))
