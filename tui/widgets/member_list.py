"""The member list of the open channel (toggled with a key)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.client.api import Member

__all__ = ["MemberList"]


class MemberList(OptionList):
    """Members of the open channel, self first, then alphabetical."""

    DEFAULT_CSS = """
    MemberList { border: none; padding: 0; }
    """

    def set_members(self, members: Iterable[Member]) -> None:
        """Replace the list."""
        ordered = sorted(members, key=lambda m: (not m.is_self, m.user.lower()))
        self.clear_options()
        options: list[Option] = []
        for member in ordered:
            label = Text(member.user, no_wrap=True, overflow="ellipsis")
            if member.is_self:
                label.append(" (you)", "dim")
            if len(member.devices) > 1:
                label.append(f" ({len(member.devices)} devices)", "dim")
            options.append(Option(label, id=member.user))
        self.add_options(options)

    @property
    def users(self) -> list[str]:
        """Usernames in display order."""
        return [str(self.get_option_at_index(i).id) for i in range(self.option_count)]
