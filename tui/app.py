"""The Textual app: bindings, actions and the :func:`make_app` factory.

The behaviour (workers, engine events) lives in :mod:`tui.controller`; the
look in ``app.tcss``. :mod:`tui.launch` calls :func:`make_app` with the real
engine factory; tests call it with a fake one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from rich.console import RenderableType
from textual import on, work
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual.binding import Binding, BindingType
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver
from textual.geometry import Offset
from textual.screen import Screen

from proto import files
from proto.errors import QpcError
from tui import slash
from tui.client.api import Message
from tui.client.linking import CODE_TTL_S, parse_code
from tui.commands import ChatCommands
from tui.controller import ChatApp
from tui.damage import DamageTracker
from tui.links import urls_newest_first
from tui.notifications import NotifyLevel
from tui.screens.devices import DevicesScreen, LinkCodeDialog, LinkScreen, describe_link
from tui.screens.dialogs import (
    ConfirmDialog,
    InviteDialog,
    NewDmDialog,
    NewGroupDialog,
    ReactDialog,
    RemoveMembersDialog,
    VerifyKeysDialog,
    parse_users,
)
from tui.screens.help import HelpScreen, binding_rows
from tui.screens.links import LinksScreen
from tui.screens.main import MainScreen
from tui.screens.search import SearchScreen
from tui.screens.welcome import WelcomeScreen
from tui.session import EngineFactory
from tui.settings import TuiSettings
from tui.terminal_out import TerminalDriver
from tui.userfacing import describe_error
from tui.widgets.channel_list import ChannelList
from tui.widgets.composer import Composer
from tui.widgets.message_log import MessageLog

__all__ = ["QpcApp", "make_app", "setup_logging"]


class QpcApp(ChatApp):
    """quicnprotochat's terminal UI."""

    TITLE = "quicnprotochat"
    CSS_PATH = "app.tcss"
    COMMANDS: ClassVar = {ChatCommands}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True, id="app.quit"),
        Binding("f1", "help", "Help", id="app.help"),
        Binding(
            "ctrl+p", "command_palette", "Commands", show=False, priority=True, id="app.palette"
        ),
    ]

    # The key help lists the app's bindings, then these, in this order.
    HELP_SOURCES: ClassVar[list[tuple[str, type]]] = [
        ("main", MainScreen),
        ("composer", Composer),
        ("log", MessageLog),
        ("channels", ChannelList),
        ("welcome", WelcomeScreen),
    ]

    def __init__(self, factory: EngineFactory, settings: TuiSettings) -> None:
        """See :class:`tui.controller.ChatApp`; adds the output's damage tracking."""
        super().__init__(factory, settings)
        self._damage = DamageTracker() if settings.damage_tracking else None

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver; on Linux with output a hang-up cannot wedge
        (:mod:`tui.terminal_out`)."""
        driver = super().get_driver_class()
        return TerminalDriver if driver is LinuxDriver else driver

    def _display(self, screen: Screen[Any], renderable: RenderableType | None) -> None:
        """Textual's frame output, through :class:`tui.damage.DamageTracker`.

        Only a full-screen terminal driver's compositor updates go through it;
        everything else (inline mode, headless tests, other renderables) is
        Textual's own path.
        """
        damage, driver = self._damage, self._driver
        writes = (
            renderable is not None
            and driver is not None
            and not self.is_headless
            and self._running
            and not self._closed
            and not self._batch_count
        )
        if damage is None or driver is None or not writes:
            super()._display(screen, renderable)
            return
        if driver.is_inline or not isinstance(renderable, LayoutUpdate | ChopsUpdate):
            # Textual's own output: it assumes the default pen and moves the
            # cursor; what it draws is not in the shadow.
            self._release_pen()
            damage.reset()
            super()._display(screen, renderable)
            return
        try:
            self._begin_update()
            try:
                damage.attribute_off = self.terminal.sgr_attribute_off
                x, y = self.screen.outer_size.clamp_offset(self.cursor_position)
                size = (self.size.width, self.size.height)
                data = damage.render(renderable, self.console, size, cursor=(x, y))
                self._previous_cursor_position = Offset(x, y)
                driver.write(data)
            except Exception as error:  # as Textual's own _display
                self._handle_exception(error)
            finally:
                self._end_update()
            driver.flush()
        finally:
            self.post_display_hook()

    def _release_pen(self) -> None:
        """Reset the terminal's pen if the damage tracker left it set (unless hung up)."""
        if self._damage is None or self._driver is None or self.hung_up:
            return
        if reset := self._damage.release():
            self._driver.write(reset)

    async def _shutdown(self) -> None:
        """Textual's shutdown, with the terminal's pen reset for the shell.

        Not after a hang-up: nobody reads the terminal, and Textual's output
        queue, which no longer drains, would block the exit.
        """
        self._release_pen()
        await super()._shutdown()

    @contextlib.contextmanager
    def suspend(self) -> Iterator[None]:
        """Textual's suspend; the terminal is redrawn in full afterwards."""
        self._release_pen()
        with super().suspend():
            yield
        if self._damage is not None:
            self._damage.reset()

    @on(Driver.SignalResume)
    def _redraw_after_resume(self) -> None:
        """Back from Ctrl+Z (SIGCONT): the shell drew over the screen; redraw it whole."""
        if self._damage is not None:
            self._damage.reset()
            self.refresh(repaint=True)

    def action_help(self) -> None:
        """F1: the key table."""
        if isinstance(self.screen, HelpScreen):
            return
        sources = [("app", self.BINDINGS)] + [
            (where, getattr(cls, "BINDINGS", [])) for where, cls in self.HELP_SOURCES
        ]
        self.push_screen(HelpScreen(binding_rows(sources, self.settings.keymap)))

    def run_slash(self, invocation: slash.Invocation) -> str:
        """Run a slash command typed in the composer; returns a usage error or ""."""
        name, words = invocation.command.name, invocation.words
        usage = f"Usage: /{name} {invocation.command.usage}".rstrip()
        simple = {
            "leave": "leave",
            "members": "toggle_members",
            "whoami": "info('whoami')",
            "health": "info('health')",
            "ping": "info('ping')",
            "help": "help",
            "links": "links",
            "quit": "quit",
        }
        if name in simple:
            self.call_next(self.run_action, simple[name])
            return ""
        if name == "join":
            if len(words) != 1:
                return usage
            if words[0].startswith("@"):
                self.start_dm(words[0][1:])  # /join @bob: the DM, like /msg bob
            else:
                self._join(words[0].lstrip("#"))
        elif name == "invite":
            opened = self._open_channel()
            if opened is None:
                return ""
            if not words:
                self.action_invite()
            else:
                self.invite(opened[0], parse_users(invocation.args))
        elif name == "remove":
            if not words:
                self.action_remove_members()
            else:
                self._confirm_remove(parse_users(invocation.args))
        elif name == "msg":
            if len(words) != 1:
                return usage
            self.start_dm(parse_users(words[0])[0])
        elif name == "verify":
            if len(words) != 1:
                return usage
            self.check_key(parse_users(words[0])[0])
        elif name == "notify":
            levels = [level.value for level in NotifyLevel]
            if len(words) != 1 or words[0] not in levels:
                return usage
            self.action_notify_level(words[0])
        elif name == "search":
            self.action_search(invocation.args)
        elif name == "link":
            if invocation.args:
                self.action_link_join(invocation.args)
            else:
                self.action_link_device()
        elif name == "devices":
            self.action_devices()
        elif name == "me":
            if not invocation.args:
                return usage
            return self._me(invocation.args)
        elif name == "topic":
            return self._topic(invocation.args)
        return ""

    def _join(self, name: str) -> None:
        """Open the channel called ``name``, or create a group with that name."""
        if not self._need_login() or self.main is None:
            return
        for channel_id, row in self.main.rows.items():
            if row.info.name == name and row.info.active:
                self.open_channel(channel_id)
                return
        self.create_group(name)

    def _me(self, action: str) -> str:
        channel = self._need_channel()
        if channel is not None:
            self.send(channel, action, action=True)
        return ""

    def _topic(self, text: str) -> str:
        """``/topic text`` sets it; ``/topic`` alone shows it."""
        channel = self._need_channel()
        if channel is None or self.main is None:
            return ""
        if text:
            self.set_topic(channel, text)
            return ""
        info = self.main.channel(channel)
        topic = info.topic if info is not None else ""
        label = self.main.channel_label(channel)
        self.notify(f"Topic of {label}: {topic}" if topic else f"{label} has no topic.")
        return ""

    def _need_channel(self) -> str | None:
        channel = None if self.main is None else self.main.active_channel
        if channel is None:
            self.notify("Open a channel first.", severity="warning")
        return channel

    def _need_login(self) -> bool:
        if self.main is None:
            self.notify("Log in first.", severity="warning")
            return False
        return True

    def action_new_group(self) -> None:
        """Ask for a name and create a group."""
        if self._need_login():
            self.push_screen(NewGroupDialog(), self._new_group_named)

    def _new_group_named(self, name: str | None) -> None:
        if name:
            self.retry_form(
                "create group",
                lambda error: NewGroupDialog(value=name, error=error),
                self._new_group_named,
            )
            self.create_group(name)

    def _open_channel(self) -> tuple[str, str] | None:
        """The open channel's id and label (None, with a hint, when none is open)."""
        channel = self._need_channel()
        if channel is None or self.main is None:
            return None
        return channel, self.main.channel_label(channel)

    def action_invite(self) -> None:
        """Ask whom to add to the open channel."""
        opened = self._open_channel()
        if opened is None:
            return
        channel, label = opened

        def invited(users: str | None) -> None:
            if users:
                self.retry_form(
                    "invite",
                    lambda error: InviteDialog(value=users, subtitle=f"to {label}", error=error),
                    invited,
                )
                self.invite(channel, parse_users(users))

        self.push_screen(InviteDialog(subtitle=f"to {label}"), invited)

    def _selected(self) -> tuple[str, Message] | None:
        """The open channel and its selected message (None, with a hint, when none)."""
        channel = self._need_channel()
        if channel is None or self.main is None:
            return None
        message = self.main.selected_message
        if message is None or not message.msg_id:
            self.notify("Select a message first (Alt+Left / Alt+Right).", severity="warning")
            return None
        return channel, message

    def action_reply(self) -> None:
        """Reply to the selected message (the composer quotes it)."""
        picked = self._selected()
        if picked is not None and self.main is not None:
            self.main.set_composing(("reply", picked[1]))
            self.main.query_one(Composer).focus()

    def action_edit_message(self) -> None:
        """Edit the selected message (ours only): the composer gets its text."""
        picked = self._selected()
        if picked is None or self.main is None:
            return
        message = picked[1]
        if not message.outgoing or message.deleted:
            self.notify("Only your own messages can be edited.", severity="warning")
            return
        self.main.set_composing(("edit", message))
        composer = self.main.query_one(Composer)
        composer.text = message.text
        composer.focus()

    def action_delete_message(self) -> None:
        """Confirm, then delete the selected message (ours only) everywhere."""
        picked = self._selected()
        if picked is None:
            return
        channel, message = picked
        if not message.outgoing or message.deleted:
            self.notify("Only your own messages can be deleted.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.delete_message(channel, message.msg_id)

        self.push_screen(
            ConfirmDialog(
                "Delete message",
                "Delete it for everyone? Its text is erased from every member's device.",
                yes="Delete",
                danger=True,
            ),
            confirmed,
        )

    def action_react(self) -> None:
        """Ask for an emoji; our own reaction with it again takes it back."""
        picked = self._selected()
        if picked is None:
            return
        channel, message = picked

        def chosen(emoji: str | None) -> None:
            if emoji:
                mine = any(r.emoji == emoji and r.mine for r in message.reactions)
                self._react_worker(channel, message.msg_id, emoji, mine)

        self.push_screen(ReactDialog(subtitle="on " + message.sender + "'s message"), chosen)

    def action_new_dm(self) -> None:
        """Ask for a user and open the DM with them."""
        if self._need_login():
            self.push_screen(NewDmDialog(), self._dm_user)

    def _dm_user(self, user: str | None) -> None:
        if user:
            self.retry_form(
                "direct message", lambda error: NewDmDialog(value=user, error=error), self._dm_user
            )
            self.start_dm(parse_users(user)[0])

    def action_leave(self) -> None:
        """Confirm, then leave the open channel."""
        opened = self._open_channel()
        if opened is None:
            return
        channel, label = opened

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.leave(channel)
            else:
                self.notify(f"Cancelled: you are still in {label}.")

        question = f"Leave {label}? You keep its history but get no new messages."
        self.push_screen(
            ConfirmDialog("Leave channel", question, yes="Leave", danger=True), confirmed
        )

    def action_remove_members(self) -> None:
        """Ask whom to remove from the open channel, confirm, then remove them."""
        opened = self._open_channel()
        if opened is None:
            return
        _, label = opened

        def named(users: str | None) -> None:
            names = parse_users(users or "")
            if names:
                self._confirm_remove(names)

        self.push_screen(RemoveMembersDialog(subtitle=f"from {label}"), named)

    def _confirm_remove(self, names: list[str]) -> None:
        """Confirm, then remove ``names`` from the open channel."""
        opened = self._open_channel()
        if opened is None:
            return
        channel, label = opened

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.remove_members(channel, names)
            else:
                self.notify(f"Cancelled: nobody was removed from {label}.")

        question = (
            f"Remove {', '.join(names)} from {label}? They keep what they have read "
            "but cannot read anything sent after this."
        )
        self.push_screen(
            ConfirmDialog("Remove members", question, yes="Remove", danger=True), confirmed
        )

    def action_update_keys(self) -> None:
        """Commit a fresh key for this device in the open channel."""
        channel = self._need_channel()
        if channel is not None:
            self.update_keys(channel)

    def action_verify_keys(self) -> None:
        """Ask for a user and show safety numbers."""
        if self._need_login():
            self.push_screen(VerifyKeysDialog(), self._verify_user)

    def _verify_user(self, user: str | None) -> None:
        if user:
            self.check_key(parse_users(user)[0])

    def action_info(self, tab: str) -> None:
        """Show the whoami / health / ping panes (health and ping also before login)."""
        if self.main is not None or tab in ("health", "ping"):
            self.open_info(tab)
        else:
            self._need_login()

    def action_refresh_info(self) -> None:
        """Refresh the panes."""
        if self.engine is not None:
            self.refresh_info()

    def action_refresh_channels(self) -> None:
        """Reload the channel list."""
        if self._need_login():
            self.load_channels()

    def action_refresh_keypackages(self) -> None:
        """Top up KeyPackages."""
        if self._need_login():
            self.refresh_keypackages()

    def action_toggle_members(self) -> None:
        """Show or hide the member list."""
        if self.main is not None:
            self.main.action_toggle_members()

    def action_cycle_channel(self, step: int) -> None:
        """Open the next or previous channel."""
        if self.main is not None:
            self.main.action_cycle_channel(step)

    def action_select_message(self, step: int) -> None:
        """Select the next older (-1) or newer (1) message."""
        if self.main is not None:
            self.main.action_select_message(step)

    def action_jump_to_parent(self) -> None:
        """Select the message the selected reply quotes."""
        if self.main is not None:
            self.main.action_jump_to_parent()

    def action_notify_level(self, level: str) -> None:
        """Set how much the open channel may interrupt: all, mentions or mute."""
        if self.main is None or self.main.active_channel is None:
            self.notify("Open a channel first.", severity="warning")
            return
        self.set_notify_level(self.main.active_channel, NotifyLevel(level))
        label = self.main.channel_label(self.main.active_channel)
        self.notify(f"Notifications for {label}: {level}.")

    def action_search(self, query: str = "", scope: str = "all") -> None:
        """Ctrl+F: search the local history (``scope`` "channel": the open one only)."""
        if not self._need_login() or self.main is None:
            return
        main = self.main
        channel = None
        if scope == "channel":
            channel = self._need_channel()
            if channel is None:
                return
        where = "all channels" if channel is None else main.channel_label(channel)
        screen = SearchScreen(query=query, channel=channel, scope=where, label=main.channel_label)
        self.push_screen(screen, self._search_chosen)

    @on(SearchScreen.Query)
    def _search_query(self, event: SearchScreen.Query) -> None:
        self.run_search(event.screen, event.text, event.channel)

    @work(exclusive=True, group="search", exit_on_error=False, name="search")
    async def run_search(self, screen: SearchScreen, query: str, channel: str | None) -> None:
        """Search the engine's history and show the results on ``screen``."""
        found = await self._engine().search(query, channel=channel, limit=200)
        if screen.is_attached:
            screen.show_results(query, found)

    def _search_chosen(self, message: Message | None) -> None:
        if message is not None:
            self.jump_to_message(message)

    @work(exclusive=True, group="jump", exit_on_error=False, name="jump to message")
    async def jump_to_message(self, message: Message) -> None:
        """Open the message's channel and scroll to it (loading older pages if needed)."""
        main = self._main()
        if main.active_channel != message.channel:
            await self.open_channel(message.channel).wait()
        self.workers.cancel_group(self, "older")
        main.query_one(MessageLog).older_request_dropped()
        engine = self._engine()
        while not main.jump_to(message.id):
            oldest = main.oldest_id
            if main.active_channel != message.channel or oldest is None or oldest <= message.id:
                self.notify("That message is no longer in the history.", severity="warning")
                return
            older = await engine.history(message.channel, limit=self.history_page, before_id=oldest)
            main.prepend_history(older, has_older=bool(older))
            if not older:
                break
        main.flash(message.id)

    def action_links(self) -> None:
        """Ctrl+L: the links of the open channel, to copy (OSC 52) or open."""
        channel = self._need_channel()
        if channel is not None:
            self.show_links(channel)

    @work(exclusive=True, group="links", exit_on_error=False, name="links")
    async def show_links(self, channel: str) -> None:
        """Collect the links of the channel's recent messages and offer them."""
        history = await self._engine().history(channel, limit=self.history_page)
        urls = urls_newest_first(m.text for m in history)
        if not urls:
            self.notify("No links in the recent messages of this channel.")
            return
        label = self._main().channel_label(channel)
        screen = LinksScreen(urls, title=f"Links in {label}", can_open=not self.hosted)
        self.push_screen(screen, self._link_chosen)

    def _link_chosen(self, choice: tuple[str, str] | None) -> None:
        if choice is None:
            return
        what, url = choice
        if what == "copy":
            self.copy_to_clipboard(url)
            self.notify(f"Copied {url}")
        else:
            self.open_url(url)
            self.notify(f"Opening {url}")

    # ------------------------------------------------------------ devices

    def action_link_device(self) -> None:
        """F9 / ``/link``: show a code for a new device and wait for it."""
        if not self._need_login():
            return
        screen = LinkScreen()

        def closed(_linked: bool | None) -> None:
            # Cancelling the worker closes the offer: the code stops working.
            self.workers.cancel_group(self, "link")

        self.push_screen(screen, closed)
        self.run_link(screen)

    @work(exclusive=True, group="link", exit_on_error=False, name="link")
    async def run_link(self, screen: LinkScreen) -> None:
        """Open the offer, wait for the new device, add it to every channel."""
        engine = self._engine()
        await screen.wait_for_refresh()
        screen.show_code(engine.link_offer())
        try:
            result = await engine.link_wait(
                CODE_TTL_S, pump=False, on_progress=screen.show_progress
            )
        except QpcError as exc:
            if screen.is_attached:
                screen.show_error(describe_error(exc))
            return
        if screen.is_attached:
            screen.show_result(describe_link(result, self._main().channel_label))
        else:
            self.notify(describe_link(result, self._main().channel_label))

    def action_link_join(self, code: str = "") -> None:
        """On a new device: ask for the code another device of the account shows."""
        if not self._need_login():
            return

        def chosen(value: str | None) -> None:
            if value is not None:
                self.action_link_join(value)

        if not code:
            self.push_screen(LinkCodeDialog(), chosen)
            return
        try:
            parse_code(code)
        except QpcError as exc:
            self.push_screen(LinkCodeDialog(value=code, error=str(exc)), chosen)
            return
        screen = LinkScreen(title="Link to an existing account")

        def closed(_linked: bool | None) -> None:
            self.workers.cancel_group(self, "link")

        self.push_screen(screen, closed)
        self.run_link_join(screen, code)

    @work(exclusive=True, group="link", exit_on_error=False, name="link")
    async def run_link_join(self, screen: LinkScreen, code: str) -> None:
        """Prove the code to the other device; it then adds us to its channels."""
        await screen.wait_for_refresh()
        screen.show_progress("Proving the code to your other device…")
        try:
            result = await self._engine().link_join(code, CODE_TTL_S, pump=False)
        except QpcError as exc:
            if screen.is_attached:
                screen.show_error(describe_error(exc))
            return
        text = (
            f"Linked to device {result.device[:16]}. It adds this device to its "
            "channels now; they appear in the channel list as they arrive."
        )
        if screen.is_attached:
            screen.show_result(text)
        else:
            self.notify(text)

    def action_devices(self) -> None:
        """F7 / ``/devices``: this account's devices."""
        if not self._need_login():
            return
        current = self.screen
        if isinstance(current, DevicesScreen):
            self.load_devices(current)
            return
        screen = DevicesScreen()
        self.push_screen(screen)
        self.load_devices(screen)

    @work(exclusive=True, group="devices", exit_on_error=False, name="devices")
    async def load_devices(self, screen: DevicesScreen) -> None:
        """Fetch the device list into ``screen``."""
        devices = await self._engine().devices()
        if screen.is_attached:
            screen.show_devices(devices)

    @on(DevicesScreen.UnlinkRequested)
    def _unlink_requested(self, event: DevicesScreen.UnlinkRequested) -> None:
        device, screen = event.device, event.screen
        question = (
            f"Unlink device {device.device[:16]} (fingerprint {device.fingerprint})? "
            f"It is removed from the {device.channels} channel(s) it is in and from "
            "the account; it can only come back by being linked again."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.unlink_device(screen, device.device)
            else:
                self.notify("Not unlinked.")

        dialog = ConfirmDialog(
            "Unlink device", question, yes="Unlink", danger=True, focus_yes=False
        )
        self.push_screen(dialog, answered)

    @work(exclusive=True, group="devices", exit_on_error=False, name="unlink")
    async def unlink_device(self, screen: DevicesScreen, device: str) -> None:
        """Remove ``device`` from every channel and the account, then relist."""
        removed = await self._engine().unlink(device)
        self.notify(f"Unlinked device {device[:16]}; removed it from {len(removed)} channel(s).")
        devices = await self._engine().devices()
        if screen.is_attached:
            screen.show_devices(devices)

    def action_compose_command(self, name: str) -> None:
        """Start ``/name `` in the composer (the palette's way to a slash command)."""
        if self._need_channel() is None or self.main is None:
            return
        composer = self.main.query_one(Composer)
        composer.load_text(f"/{name} ")
        composer.move_cursor(composer.document.end)
        composer.focus()

    def action_hotlist(self) -> None:
        """Alt+A: the next channel with activity, mentions first."""
        if self.main is not None:
            self.main.action_hotlist()

    def action_toggle_bell(self) -> None:
        """Turn the bell on or off for this session."""
        self.settings = replace(self.settings, bell=not self.settings.bell)
        self.notify(f"Bell {'on' if self.settings.bell else 'off'}.")


def make_app(factory: EngineFactory, settings: TuiSettings | None = None) -> QpcApp:
    """The app, wired to ``factory``; used by the CLI and by the tests."""
    return QpcApp(factory, settings or TuiSettings())


def setup_logging(path: Path) -> None:
    """Log to ``path`` (mode 0600; the TUI owns the terminal, so never to stderr)."""
    files.private_dir(path.parent)
    handler = logging.StreamHandler(files.open_private(path, "a"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("quic").setLevel(logging.WARNING)
