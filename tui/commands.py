"""Command palette entries, titled "noun: verb", one for every action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.controller import ChatApp

__all__ = ["COMMANDS", "ChatCommands", "PaletteCommand"]


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    """One palette entry."""

    title: str
    """"noun: verb" title the palette matches against."""
    help: str
    """One-line explanation."""
    action: str
    """App action to run (``run_action`` syntax)."""
    needs_login: bool = True
    """Hidden on the welcome screen."""


COMMANDS: tuple[PaletteCommand, ...] = (
    PaletteCommand("channel: new", "Create a group channel", "new_group"),
    PaletteCommand("channel: invite", "Add people to the open channel", "invite"),
    PaletteCommand("channel: leave", "Leave the open channel", "leave"),
    PaletteCommand("channel: next", "Open the next channel", "cycle_channel(1)"),
    PaletteCommand("channel: previous", "Open the previous channel", "cycle_channel(-1)"),
    PaletteCommand("channel: refresh", "Reload the channel list", "refresh_channels"),
    PaletteCommand(
        "channel: hotlist",
        "Open the next channel with new messages, mentions first (Alt+A)",
        "hotlist",
    ),
    PaletteCommand(
        "channel: join", "Open or create a channel by name (/join)", "compose_command('join')"
    ),
    PaletteCommand(
        "channel: topic", "Set the open channel's topic (/topic)", "compose_command('topic')"
    ),
    PaletteCommand(
        "message: action", "Say what you do, “* alice waves” (/me)", "compose_command('me')"
    ),
    PaletteCommand("search: all", "Search the local history (Ctrl+F)", "search"),
    PaletteCommand("search: channel", "Search the open channel's history", "search('', 'channel')"),
    PaletteCommand("links: show", "Links of the open channel: copy (OSC 52) or open", "links"),
    PaletteCommand("message: older", "Select the previous message", "select_message(-1)"),
    PaletteCommand("message: newer", "Select the next message", "select_message(1)"),
    PaletteCommand("message: reply", "Reply to the selected message", "reply"),
    PaletteCommand("message: react", "React to the selected message with an emoji", "react"),
    PaletteCommand("message: edit", "Edit your selected message", "edit_message"),
    PaletteCommand(
        "message: delete", "Delete your selected message for everyone", "delete_message"
    ),
    PaletteCommand("message: parent", "Select the message a reply quotes", "jump_to_parent"),
    PaletteCommand("members: toggle", "Show or hide the member list", "toggle_members"),
    PaletteCommand("members: remove", "Remove people from the open channel", "remove_members"),
    PaletteCommand("dm: start", "Start a direct conversation", "new_dm"),
    PaletteCommand("keys: verify", "Compare safety numbers with a user", "verify_keys"),
    PaletteCommand("keys: refresh", "Top up this device's KeyPackages", "refresh_keypackages"),
    PaletteCommand(
        "keys: update",
        "Give this device a fresh key in the open channel (heals after a compromise)",
        "update_keys",
    ),
    PaletteCommand(
        "devices: link", "Link a new device to this account: shows a code (F9)", "link_device"
    ),
    PaletteCommand(
        "devices: join",
        "Link this device to the account with the code another device shows",
        "link_join",
    ),
    PaletteCommand("devices: list", "Your devices; unlink one (F7)", "devices"),
    PaletteCommand("account: whoami", "User, device and server fingerprints", "info('whoami')"),
    PaletteCommand("server: health", "Node status, version, uptime", "info('health')"),
    PaletteCommand("server: ping", "Live round-trip times", "info('ping')"),
    PaletteCommand(
        "notify: all", "Toasts for every message in the open channel", "notify_level('all')"
    ),
    PaletteCommand(
        "notify: mentions",
        "Toasts only when the open channel mentions you",
        "notify_level('mentions')",
    ),
    PaletteCommand(
        "notify: mute", "No toasts or bells for the open channel", "notify_level('mute')"
    ),
    PaletteCommand("bell: toggle", "Ring on messages in other channels", "toggle_bell", False),
    PaletteCommand("help: keys", "Slash commands and every key binding", "help", False),
    PaletteCommand("app: quit", "Leave quicnprotochat", "quit", False),
)


class ChatCommands(Provider):
    """Offers :data:`COMMANDS` in the palette."""

    def _commands(self) -> list[tuple[PaletteCommand, Callable[[], object]]]:
        app = cast(ChatApp, self.app)
        logged_in = app.engine is not None
        return [
            (command, partial(app.run_action, command.action))
            for command in COMMANDS
            if logged_in or not command.needs_login
        ]

    async def discover(self) -> Hits:
        """Every command, when the palette opens empty."""
        for command, run in self._commands():
            yield DiscoveryHit(command.title, run, help=command.help)

    async def search(self, query: str) -> Hits:
        """Commands whose title matches ``query``."""
        matcher = self.matcher(query)
        for command, run in self._commands():
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(score, matcher.highlight(command.title), run, help=command.help)
