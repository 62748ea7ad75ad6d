"""Modal dialogs; each is a ``ModalScreen[T]`` that returns through ``dismiss``.

Escape cancels every dialog (returning ``None`` or ``False``); Enter in the
last field confirms. They hold no engine calls: the app runs the network work
in a worker once a dialog returns.
"""

from __future__ import annotations

import re
from typing import TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from proto.crypto.identity import fingerprint
from tui.client.api import KeyCheck
from tui.session import ServerKey, ServerKeyStatus
from tui.widgets.panes import group_hex
from tui.widgets.steady import steady_input

__all__ = [
    "ConfirmDialog",
    "InviteDialog",
    "KeyCheckDialog",
    "NewDmDialog",
    "NewGroupDialog",
    "RemoveMembersDialog",
    "TrustServerDialog",
    "VerifyKeysDialog",
    "parse_users",
]

_USER_SPLIT = re.compile(r"[\s,]+")
T = TypeVar("T")


def parse_users(text: str) -> list[str]:
    """``"bob, carol dave"`` -> ``["bob", "carol", "dave"]`` (deduplicated, ordered)."""
    seen: dict[str, None] = {}
    for part in _USER_SPLIT.split(text.strip()):
        name = part.strip().lstrip("@")
        if name:
            seen.setdefault(name, None)
    return list(seen)


def _one_user(_dialog: object, value: str) -> str:
    """Validator for dialogs that take exactly one username."""
    return "" if len(parse_users(value)) == 1 else "Name exactly one user."


class _Dialog(ModalScreen[T]):
    """Shared frame: a titled box in the middle of the screen."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    DEFAULT_CLASSES = "dialog"

    def __init__(self, cancel_value: T) -> None:
        """``cancel_value`` is what Escape (or a Cancel button) dismisses with."""
        super().__init__()
        self._on_cancel = cancel_value

    def action_cancel(self) -> None:
        """Close without a result."""
        self.dismiss(self._on_cancel)


class _PromptDialog(_Dialog[str | None]):
    """Ask for one line of text."""

    TITLE_TEXT = ""
    LABEL_TEXT = ""
    PLACEHOLDER = ""
    OK_TEXT = "OK"

    def __init__(self, *, value: str = "", subtitle: str = "", error: str = "") -> None:
        """Prefill the field with ``value``; show ``subtitle`` under the title.

        ``error``: why the last try with ``value`` failed (the dialog comes
        back filled in, with the error and the focus, after a failed call).
        """
        super().__init__(None)
        self._value = value
        self._subtitle = subtitle
        self._error = error

    def compose(self) -> ComposeResult:
        """Title, label, one field, OK/Cancel."""
        with Vertical(classes="dialog-box"):
            yield Label(self.TITLE_TEXT, classes="dialog-title")
            if self._subtitle:
                yield Label(self._subtitle, classes="dialog-subtitle")
            yield Label(self.LABEL_TEXT)
            yield steady_input(self._value, placeholder=self.PLACEHOLDER, id="dialog-input")
            yield Static(self._error, id="dialog-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.OK_TEXT, variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """Focus the field (after an error, with its text selected for retyping)."""
        field = self.query_one("#dialog-input", Input)
        field.focus()
        if self._error:
            field.action_select_all()

    def validate(self, value: str) -> str:
        """An error message for ``value``, or "" when it is fine."""
        return "" if value.strip() else "Please fill this in."

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _confirm(self) -> None:
        value = self.query_one("#dialog-input", Input).value.strip()
        problem = self.validate(value)
        if problem:
            self.query_one("#dialog-error", Static).update(problem)
            return
        self.dismiss(value)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()


class ReactDialog(_PromptDialog):
    """Returns an emoji to react with (choosing one of ours again takes it back)."""

    TITLE_TEXT = "React"
    LABEL_TEXT = "Emoji"
    PLACEHOLDER = "e.g. 👍"
    OK_TEXT = "React"

    def validate(self, value: str) -> str:
        """One emoji (at most 16 characters with modifiers)."""
        if not value:
            return "Type an emoji."
        if len(value) > 16:
            return "One emoji, please."
        return ""


class NewGroupDialog(_PromptDialog):
    """Returns the new group's name."""

    TITLE_TEXT = "New group"
    LABEL_TEXT = "Group name"
    PLACEHOLDER = "e.g. general"
    OK_TEXT = "Create"

    def validate(self, value: str) -> str:
        """Names are 1-64 characters."""
        if not value:
            return "A group needs a name."
        if len(value) > 64:
            return "Keep the name under 64 characters."
        return ""


class _UsersDialog(_PromptDialog):
    """Returns one or more usernames, separated by spaces or commas."""

    LABEL_TEXT = "Usernames (space or comma separated)"

    def validate(self, value: str) -> str:
        """At least one name."""
        return "" if parse_users(value) else "Name at least one user."


class InviteDialog(_UsersDialog):
    """Returns usernames to add."""

    TITLE_TEXT = "Invite"
    PLACEHOLDER = "bob carol"
    OK_TEXT = "Invite"


class RemoveMembersDialog(_UsersDialog):
    """Returns usernames to remove."""

    TITLE_TEXT = "Remove members"
    PLACEHOLDER = "carol"
    OK_TEXT = "Next"


class NewDmDialog(_PromptDialog):
    """Returns the username to start a direct conversation with."""

    TITLE_TEXT = "New direct message"
    LABEL_TEXT = "Username"
    PLACEHOLDER = "bob"
    OK_TEXT = "Start"

    validate = _one_user


class VerifyKeysDialog(_PromptDialog):
    """Returns the username whose safety numbers to show."""

    TITLE_TEXT = "Verify keys"
    LABEL_TEXT = "Compare safety numbers with"
    PLACEHOLDER = "bob"
    OK_TEXT = "Show"

    validate = _one_user


class ConfirmDialog(_Dialog[bool]):
    """A yes/no question (e.g. "Leave #general?")."""

    def __init__(
        self,
        title: str,
        question: str,
        *,
        yes: str = "Yes",
        danger: bool = False,
        focus_yes: bool = True,
    ) -> None:
        """Ask ``question``; ``danger`` colours the yes button.

        By default the yes button has focus: the user already chose the action
        (a key or the palette), so Enter does it and Escape cancels; the app
        reports a cancel. ``focus_yes=False`` is for questions the user did not
        ask for (a changed server key), where Enter must not say yes.
        """
        super().__init__(False)
        self._focus_yes = focus_yes
        self._title = title
        self._question = question
        self._yes = yes
        self._danger = danger

    def compose(self) -> ComposeResult:
        """Title, question, the two buttons."""
        with Vertical(classes="dialog-box"):
            yield Label(self._title, classes="dialog-title")
            yield Static(self._question)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._yes, variant="error" if self._danger else "primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """Focus the action the user asked for (Escape cancels), else Cancel."""
        self.query_one("#ok" if self._focus_yes else "#cancel", Button).focus()

    @on(Button.Pressed, "#ok")
    def _yes_pressed(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def _no_pressed(self) -> None:
        self.dismiss(False)


class TrustServerDialog(ConfirmDialog):
    """Shows a server's fingerprint for trust on first use (or a changed key)."""

    def __init__(self, key: ServerKey) -> None:
        """Explain ``key`` (new or changed) and ask whether to trust it."""
        changed = key.status is ServerKeyStatus.CHANGED
        if changed:
            question = (
                f"The key of {key.server} CHANGED.\n\n"
                f"pinned: {group_hex(key.pinned)}\n"
                f"now:    {group_hex(key.fingerprint)}\n\n"
                "This happens when the server was reinstalled, or when someone "
                "intercepts the connection. Trust the new key only if the server's "
                "operator confirms it."
            )
            super().__init__(
                "Server key changed", question, yes="Trust new key", danger=True, focus_yes=False
            )
        else:
            question = (
                f"First connection to {key.server}.\n\n"
                f"fingerprint: {group_hex(key.fingerprint)}\n\n"
                "Compare it with the one the server's operator publishes "
                "(qpc-node prints it at start). It will be pinned."
            )
            super().__init__("Trust this server?", question, yes="Trust")
        self.server_key = key


class KeyCheckDialog(_Dialog[str | None]):
    """Shows the safety numbers of a user's devices.

    Returns ``"verify"`` when the user says the numbers match (mark the keys
    verified), ``"accept"`` when the user accepts a changed key after
    comparing, ``None`` on Close.
    """

    def __init__(self, check: KeyCheck) -> None:
        """Show ``check``."""
        super().__init__(None)
        self._check = check

    def compose(self) -> ComposeResult:
        """One block per device."""
        with Vertical(classes="dialog-box"):
            yield Label(f"Safety numbers with {self._check.user}", classes="dialog-title")
            if self._check.changed:
                yield Static(
                    Text("A key CHANGED since you last checked. Verify in person.", "bold red")
                )
            if not self._check.devices:
                yield Static("This user has no devices.")
            for device in self._check.devices:
                body = Text()
                body.append(f"device {fingerprint(bytes.fromhex(device.device))}  ", "dim")
                style = {"changed": "bold red", "verified": "green"}.get(device.status, "yellow")
                body.append(device.status, style)
                if device.linked_by:
                    by = fingerprint(bytes.fromhex(device.linked_by))
                    body.append(f"\nlinked by {self._check.user}'s device {by}", "dim")
                body.append("\n" + device.safety_number)
                yield Static(body, classes="safety-number")
            yield Static("Compare these numbers with the other person, in person or by call.")
            with Horizontal(classes="dialog-buttons"):
                if self._check.changed:
                    yield Button("Numbers match: accept", variant="error", id="accept")
                elif self._check.devices and any(
                    d.status != "verified" for d in self._check.devices
                ):
                    yield Button("Numbers match: mark verified", variant="success", id="verify")
                yield Button("Close", variant="primary", id="ok")

    def on_mount(self) -> None:
        """Focus Close (marking verified is a deliberate choice, never Enter by habit)."""
        self.query_one("#ok", Button).focus()

    @on(Button.Pressed, "#ok")
    def _close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#verify")
    def _verify(self) -> None:
        self.dismiss("verify")

    @on(Button.Pressed, "#accept")
    def _accept(self) -> None:
        self.dismiss("accept")
