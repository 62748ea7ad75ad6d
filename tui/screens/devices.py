"""Linked devices: link a new device (``/link``, F9), list or unlink ours (``/devices``, F7).

:class:`LinkScreen` runs on the existing device: it shows the one-off code
(docs/PROTOCOL.md "Linked devices"), waits for the new device to prove it,
says when it did and, at the end, which channels the new device was added
to. Escape cancels, which closes the offer: the code stops working at once.
The app drives it (:meth:`show_code`, :meth:`show_progress`,
:meth:`show_result`, :meth:`show_error`).

:class:`LinkCodeDialog` asks the new device for the code (the welcome
screen's "Link device" path, or ``/link CODE``).

:class:`DevicesScreen` lists the account's devices, this one marked; ``u``
or Delete asks to unlink the highlighted one. The confirmation's focus is on
Cancel: removing a device from every channel is not undone by a second Enter.
"""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, LoadingIndicator, OptionList, Static
from textual.widgets.option_list import Option

from proto.errors import QpcError
from tui.client.api import LinkResult, OwnDevice
from tui.client.linking import CODE_TTL_S, format_code, parse_code
from tui.screens.dialogs import _PromptDialog

__all__ = ["DevicesScreen", "LinkCodeDialog", "LinkScreen"]


class LinkScreen(ModalScreen[bool]):
    """Shows the link code and the progress; dismisses with True once linked."""

    BINDINGS = [Binding("escape", "close", "Cancel", id="link.cancel")]

    DEFAULT_CLASSES = "dialog"

    def __init__(self, *, title: str = "Link a device") -> None:
        """An empty screen; the app fills it in as the link proceeds."""
        super().__init__()
        self._title = title
        self.done = False
        """True once the link finished (or failed): Escape closes, not cancels."""
        self.linked = False

    def compose(self) -> ComposeResult:
        """Title, code, instructions, progress, result, one button."""
        with Vertical(id="link-box", classes="dialog-box"):
            yield Label(self._title, classes="dialog-title")
            yield Static("", id="link-code")
            yield Static("", id="link-help")
            yield LoadingIndicator(id="link-busy")
            yield Static("", id="link-status")
            yield Static("", id="link-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="link-close")

    def on_mount(self) -> None:
        """The button has focus: Enter or Escape cancels while waiting."""
        self.query_one("#link-close", Button).focus()

    def show_code(self, code: str) -> None:
        """Show the code and how to use it on the new device."""
        self.query_one("#link-code", Static).update(f"[b]{format_code(code)}[/b]")
        minutes = int(CODE_TTL_S // 60)
        self.query_one("#link-help", Static).update(
            "On the new device, choose “Link to an existing account” on the welcome "
            f"screen, or type `/link {format_code(code)}` (`qpc link {format_code(code)}` "
            "in a shell). The code works once, for "
            f"{minutes} minutes; Escape cancels it."
        )
        self.show_progress("Waiting for the new device…")

    def show_progress(self, text: str) -> None:
        """One line of progress under the code."""
        self.query_one("#link-status", Static).update(text)

    def show_result(self, text: str) -> None:
        """The link completed: ``text`` says what happened."""
        self._finish()
        self.linked = True
        self.query_one("#link-status", Static).update(text)

    def show_error(self, text: str) -> None:
        """The link failed (wrong code too often, expired, refused)."""
        self._finish()
        self.query_one("#link-error", Static).update(text)

    def _finish(self) -> None:
        self.done = True
        self.query_one("#link-busy", LoadingIndicator).display = False
        self.query_one("#link-close", Button).label = "Close"

    def action_close(self) -> None:
        """Cancel the link (closing the offer), or close the finished screen."""
        self.dismiss(self.linked)

    @on(Button.Pressed, "#link-close")
    def _close_pressed(self) -> None:
        self.action_close()


def describe_link(result: LinkResult, label: Callable[[str], str]) -> str:
    """``added device 0a1b… to #general, #ops`` (``label`` names a channel id)."""
    device = result.device[:16]
    if not result.channels:
        return f"Linked device {device}. You are in no channel yet, so it was added to none."
    names = ", ".join(label(c) for c in result.channels)
    count = len(result.channels)
    return f"Linked device {device}; added it to {count} channel(s): {names}"


class LinkCodeDialog(_PromptDialog):
    """On the new device: the code the existing device shows."""

    TITLE_TEXT = "Link to an existing account"
    LABEL_TEXT = "Code shown by your other device (“Link a device” or `qpc link` there)"
    PLACEHOLDER = "01234-56789"
    OK_TEXT = "Link"

    def validate(self, value: str) -> str:
        """Ten digits, dashes and spaces ignored."""
        try:
            parse_code(value)
        except QpcError as exc:
            return str(exc)
        return ""


class DevicesScreen(ModalScreen[None]):
    """The account's devices; ``u``/Delete unlinks the highlighted one."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="devices.close"),
        Binding("u", "unlink", "Unlink", id="devices.unlink"),
        Binding("delete", "unlink", "Unlink", show=False, id="devices.unlink_del"),
        Binding("l", "link", "Link a device", id="devices.link"),
        Binding("r", "refresh", "Refresh", id="devices.refresh"),
    ]

    DEFAULT_CLASSES = "dialog"

    class UnlinkRequested(Message):
        """The user chose a device to unlink (the app confirms first)."""

        def __init__(self, screen: DevicesScreen, device: OwnDevice) -> None:
            super().__init__()
            self.screen = screen
            self.device = device

    def __init__(self) -> None:
        """Empty until the app calls :meth:`show_devices`."""
        super().__init__()
        self.devices: tuple[OwnDevice, ...] = ()

    def compose(self) -> ComposeResult:
        """Title, the list, what the keys do."""
        with Vertical(id="devices-box", classes="dialog-box"):
            yield Label("Your devices", classes="dialog-title")
            yield OptionList(id="devices-list")
            yield Static(
                "u/Delete: unlink   l: link a device   r: refresh   Esc: close",
                classes="dialog-footnote",
            )

    def on_mount(self) -> None:
        """Focus the list (filled if the devices came before the screen was up)."""
        self.query_one(OptionList).focus()
        if self.devices:
            self._fill()

    def show_devices(self, devices: tuple[OwnDevice, ...]) -> None:
        """Fill the list (this device first)."""
        self.devices = tuple(sorted(devices, key=lambda d: not d.this_device))
        if self.is_mounted:
            self._fill()

    def _fill(self) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options(
            [Option(_device_row(d), id=d.device) for d in self.devices]
            or [Option("No devices listed", disabled=True)]
        )
        if self.devices:
            options.highlighted = 0

    def highlighted(self) -> OwnDevice | None:
        """The device under the cursor."""
        index = self.query_one(OptionList).highlighted
        if index is None or index >= len(self.devices):
            return None
        return self.devices[index]

    def action_unlink(self) -> None:
        """Ask the app to unlink the highlighted device (never this one)."""
        device = self.highlighted()
        if device is None:
            return
        if device.this_device:
            self.notify("This is the device you are using: unlink it from another one.")
            return
        self.post_message(self.UnlinkRequested(self, device))

    async def action_link(self) -> None:
        """Open the link screen."""
        await self.app.run_action("link_device")

    async def action_refresh(self) -> None:
        """Fetch the list again."""
        await self.app.run_action("devices")

    def action_close(self) -> None:
        """Close."""
        self.dismiss(None)


def _device_row(d: OwnDevice) -> str:
    mark = "● this device" if d.this_device else "  linked device"
    return f"{d.device[:16]}  {mark}  fingerprint {d.fingerprint}  in {d.channels} channel(s)"
