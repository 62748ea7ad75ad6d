"""The app's behaviour: engine calls in workers, engine events into the screens.

:class:`ChatApp` is the base of :class:`tui.app.QpcApp`. Every network call
runs in a worker (``exit_on_error=False``) on the app, so all failures arrive
in the one ``Worker.StateChanged`` handler here, which logs the traceback to
the log file and shows the user a sentence from :func:`describe_error`.
One long-lived worker iterates :meth:`ClientEngine.events` and posts each
event as :class:`EngineEventPosted`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

from textual import on, work
from textual.app import App, ComposeResult
from textual.screen import ModalScreen
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from proto.errors import ConfigError, LocalError, TransportError, WrongPassphrase
from tui import slash
from tui.client.api import (
    TYPING_TTL_S,
    ChannelInfo,
    ChannelsChanged,
    ClientEngine,
    ConnectionChanged,
    ConnectionState,
    ConnectionStatus,
    Health,
    Member,
    MembersChanged,
    Message,
    MessageChanged,
    MessageReceived,
    MessageStateChanged,
    PingResult,
    ReceiptsChanged,
    SecurityWarning,
    TopicChanged,
    TypingChanged,
    WhoAmI,
)
from tui.lastchannel import load_last_channel, save_last_channel
from tui.messages import EngineEventPosted, PingSampled
from tui.notifications import Notifier, NotifyLevel, load_levels, mentions, save_level
from tui.screens.dialogs import KeyCheckDialog, TrustServerDialog
from tui.screens.info import InfoScreen
from tui.screens.main import MainScreen
from tui.screens.welcome import WelcomeScreen
from tui.session import EngineFactory, LoginForm, ServerKeyStatus
from tui.settings import TuiSettings
from tui.terminal import TerminalCaps
from tui.userfacing import describe_error, local_node_hint
from tui.widgets.channel_list import ChannelList
from tui.widgets.composer import Composer
from tui.widgets.message_log import MessageLog
from tui.widgets.panes import HealthPane, PingPane, WhoAmIPane

__all__ = ["HISTORY_LIMIT", "HISTORY_PAGE", "ChatApp"]

log = logging.getLogger("tui")

HISTORY_LIMIT = 10_000
"""Most messages a channel opens with (when that many are unread, for the "N new"
marker); otherwise it opens with one page and older pages load as the view
nears the top (:attr:`MessageLog.PREFETCH_SCREENS`)."""
HISTORY_PAGE = 500
"""Messages per history call: the first screenful shows at once, and the UI
never waits long for one page (decrypting 10,000 stored messages takes ~0.17 s
on the event loop; a page of 500 takes a few milliseconds)."""
_RESUBSCRIBE_S = 2.0
ALERT_COALESCE_S = 0.25
"""How often held bursts are checked (see :class:`tui.notifications.Notifier`)."""
QUIET_GROUPS: frozenset[str] = frozenset({"events", "info", "read", "ping"})
"""Worker groups whose failures are logged and shown in the info pane, not
notified: background refreshes the user did not ask for one by one."""


class ChatApp(App[None]):
    """Engine plumbing shared by the real app and its tests."""

    def __init__(self, factory: EngineFactory, settings: TuiSettings) -> None:
        """Use ``factory`` to get an engine; ``settings`` from the config file."""
        super().__init__()
        self.factory = factory
        self.settings = settings
        self.engine: ClientEngine | None = None
        self.main: MainScreen | None = None
        self.last_error = ""
        self.whoami_info: WhoAmI | None = None
        self.health_info: Health | None = None
        self.ping_samples: deque[float] = deque(maxlen=PingPane.HISTORY)
        self._members: dict[str, frozenset[str]] = {}
        self._opening: str | None = None
        self._arrived_while_opening: list[Message] = []
        self._form_retry: dict[
            str, tuple[Callable[[str], ModalScreen[str | None]], Callable[[str | None], None]]
        ] = {}
        self.history_limit = HISTORY_LIMIT
        """Most messages a channel opens with (an unread backlog), and most per older page."""
        self.history_page = HISTORY_PAGE
        """Messages per history call."""
        self.wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)
        """Unix ms now; messages stamped before the session started are backlog."""
        self.notifier: Notifier | None = None
        """Decides toasts and bells for incoming messages (made per session)."""
        self._session_start_ms = 0
        self._alert_scheduled = False
        self.alerts_shown = 0
        """Toasts shown for incoming messages (``bench/tui.py`` reads it)."""
        self.bells_rung = 0
        """Bells rung for incoming messages."""
        self.exit_on_hangup = False
        """Quit cleanly on SIGHUP (the CLI sets it; a dropped ssh or closed window)."""
        self.hung_up = False
        """Whether the terminal is gone (SIGHUP): nothing more is written to it."""
        self.terminal = TerminalCaps()
        """What the terminal can draw (the CLI reads it from the environment)."""
        self.hosted = False
        """Running on a host for someone connected over SSH (``qpc serve-ssh``)."""
        """What the terminal can draw (the CLI reads it from the environment)."""

    # ------------------------------------------------------------------ start

    def compose(self) -> ComposeResult:
        """What shows under every screen while the first one is prepared."""
        yield Static("Starting quicnprotochat…", id="splash")

    async def on_mount(self) -> None:
        """Resume a logged-in engine (``qpc demo``) or show the welcome screen."""
        if self.settings.keymap:
            self.set_keymap(self.settings.keymap)
        if self.settings.theme and self.settings.theme not in self.available_themes:
            names = ", ".join(sorted(self.available_themes))
            self.notify(
                f"Unknown theme {self.settings.theme!r} in the config; themes: {names}.",
                severity="warning",
                timeout=15,
            )
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        elif self.terminal.colors <= 16:
            # The terminal's own 16 colours: readable on linux, vt100, screen.
            self.ansi_color = True
            self.theme = "ansi-dark"
        if not self.terminal.unicode_blocks:
            self.add_class("-basic-glyphs")
        if self.exit_on_hangup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hang_up)
        self.resume()

    def _hang_up(self) -> None:
        """The terminal is gone: close the engine and the node use as on Ctrl+Q."""
        log.info("hang-up: closing the session")
        self.hung_up = True
        self.exit(return_code=129)

    @work(exclusive=True, group="login", exit_on_error=False, name="resume")
    async def resume(self) -> None:
        """Ask the factory for a ready engine; otherwise ask the user to log in."""
        engine = await self.factory.resume()
        if engine is None:
            await self.push_screen(
                WelcomeScreen(
                    server=self.factory.default_server,
                    user=self.factory.default_user,
                    profile_exists=self.factory.profile_exists,
                    hosted=self.hosted,
                )
            )
            return
        who = await engine.whoami()
        await self._start_session(engine, who)

    async def on_unmount(self) -> None:
        """Close the engine (and whatever the factory started) on the way out."""
        engine, self.engine = self.engine, None
        if self.exit_on_hangup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        try:
            if engine is not None:
                await engine.close()
        finally:
            await self.factory.close()
        log.info("session closed")

    @on(WelcomeScreen.Submitted)
    def _login_requested(self, event: WelcomeScreen.Submitted) -> None:
        self.login(event.form)

    @work(exclusive=True, group="login", exit_on_error=False, name="login")
    async def login(self, form: LoginForm) -> None:
        """Check the server key (TOFU), open the profile, register or log in."""
        key = await self.factory.probe(form.server)
        if key.status is not ServerKeyStatus.PINNED:
            trusted = await self.push_screen_wait(TrustServerDialog(key))
            if not trusted:
                self._welcome_error("Not connected: you did not trust the server's key.")
                return
        engine = await self.factory.open(form, trust_fingerprint=key.fingerprint)
        try:
            if form.register:
                who = await engine.register(form.user, form.password, on_wait=self._rate_wait)
            elif not form.password:
                # An existing profile's session, unlocked by its passphrase alone
                # (the welcome screen allows an empty password only then). The
                # node checks the token; a stale one asks for the password.
                who = await engine.whoami()
                if who.user != form.user or not who.device_registered:
                    raise LocalError(
                        f"This profile has no session for {form.user}: enter the password."
                    )
            else:
                who = await engine.login(form.user, form.password, on_wait=self._rate_wait)
        except BaseException:
            await engine.close()
            raise
        log.info("logged in as %s", who.user)
        await self._start_session(engine, who)
        if form.link:
            self.call_next(self.run_action, "link_join")

    async def _start_session(self, engine: ClientEngine, who: WhoAmI) -> None:
        self._session_start_ms = self.wall_clock_ms()
        self.notifier = None
        self.engine = engine
        self.whoami_info = who
        self.main = MainScreen(user=who.user)
        if isinstance(self.screen, WelcomeScreen):
            await self.switch_screen(self.main)
        else:
            await self.push_screen(self.main)
        self.main.set_connection(engine.connection_state())
        self.subscribe()
        self.load_channels()
        if self.settings.ping_interval_s > 0:
            self.set_interval(self.settings.ping_interval_s, self._tick_ping)
            self._tick_ping()

    def _rate_wait(self, seconds: float) -> None:
        """The engine waits out a rate limit: the welcome screen counts down."""
        for screen in self.screen_stack:
            if isinstance(screen, WelcomeScreen):
                screen.show_rate_limit_wait(seconds)

    def _welcome_error(self, text: str, error: BaseException | None = None) -> None:
        field = "password"
        if isinstance(error, WrongPassphrase):
            field = "passphrase"
        elif isinstance(error, TransportError | ConfigError | OSError):
            field = "server"
        for screen in self.screen_stack:
            if isinstance(screen, WelcomeScreen):
                screen.show_error(text, field)

    # --------------------------------------------------------------- workers

    def _engine(self) -> ClientEngine:
        if self.engine is None:
            raise RuntimeError("no engine yet")
        return self.engine

    @work(exclusive=True, group="events", exit_on_error=False, name="events")
    async def subscribe(self) -> None:
        """The long-lived subscription: every engine event becomes a message."""
        async for event in self._engine().events():
            self.post_message(EngineEventPosted(event))

    @work(exclusive=True, group="channels", exit_on_error=False, name="channels")
    async def load_channels(self) -> None:
        """Refresh the channel list (and open the newest channel if none is open)."""
        channels = await self._engine().channels()
        self._main().set_channels(channels)
        self._auto_open(channels)

    def _auto_open(self, channels: tuple[ChannelInfo, ...]) -> None:
        """Open the newest active channel when nothing is open or being opened."""
        if self._main().active_channel is not None or self._opening is not None:
            return
        fresh = [c for c in channels if c.active]
        last = load_last_channel(self.factory.profile_dir)
        if last is not None and any(c.id == last for c in fresh):
            self.open_channel(last)  # where the person left off (tui.lastchannel)
        elif fresh:
            self.open_channel(max(fresh, key=lambda c: c.last_activity_ms).id)

    @work(exclusive=True, group="open", exit_on_error=False, name="open")
    async def open_channel(self, channel_id: str) -> None:
        """Show a channel's newest page of history and its members.

        The first page also covers every unread message (for the "N new"
        marker), up to :attr:`history_limit`. Nothing else is read: the cost
        of opening does not grow with the channel's length. Older pages follow
        in :meth:`load_older` when the log asks for them (its view nears the
        top).
        """
        engine = self._engine()
        self.workers.cancel_group(self, "older")
        self._opening = channel_id
        row = self._main().channel(channel_id)
        unread = row.unread if row is not None else 0
        first = max(1, min(self.history_limit, max(self.history_page, unread + 1)))
        try:
            history = await engine.history(channel_id, limit=first)
            members = await engine.members(channel_id)
        finally:
            if self._opening == channel_id:
                self._opening = None
        main = self._main()
        has_older = len(history) >= first
        main.open_channel(channel_id, history, has_older=has_older)
        profile = self.factory.profile_dir
        if profile is not None and load_last_channel(profile) != channel_id:
            await asyncio.to_thread(save_last_channel, profile, channel_id)
        # Messages that arrived while the history was loading (the log de-duplicates).
        arrived, self._arrived_while_opening = self._arrived_while_opening, []
        for message in arrived:
            if message.channel == channel_id:
                main.add_message(message)
        self._show_members(channel_id, members, announce=False)

    @on(MessageLog.ReachedTop)
    def _reached_top(self, event: MessageLog.ReachedTop) -> None:
        main = self._main()
        if main.active_channel is not None and main.oldest_id is not None:
            self.load_older(main.active_channel, main.oldest_id)

    @work(exclusive=True, group="older", exit_on_error=False, name="load older messages")
    async def load_older(self, channel: str, before_id: int) -> None:
        """Put the page of history before ``before_id`` above the log.

        One short engine call; the log keeps the view on the same message and,
        while its view is still near the top, asks for the next page (so a
        user paging up finds the older messages already there).
        """
        engine, main = self._engine(), self._main()
        page = max(1, min(self.history_page, self.history_limit))
        older = await engine.history(channel, limit=page, before_id=before_id)
        if main.active_channel == channel and main.oldest_id == before_id:
            main.prepend_history(older, has_older=len(older) >= page)

    @on(ChannelList.Opened)
    def _channel_chosen(self, event: ChannelList.Opened) -> None:
        self.open_channel(event.channel_id)

    @on(Composer.Submitted)
    def _composer_submitted(self, event: Composer.Submitted) -> None:
        parsed = slash.parse(event.text)
        if isinstance(parsed, slash.Unknown):
            # Never sent: the line stays in the composer to be fixed.
            self._restore_line(event.composer, event.text)
            self.notify(
                f"Unknown command /{parsed.name}. /help lists the commands; "
                "//text sends a line starting with a slash.",
                severity="warning",
            )
            return
        if isinstance(parsed, slash.Invocation):
            error = self.run_slash(parsed)
            if error:
                self._restore_line(event.composer, event.text)
                self.notify(error, severity="warning")
            return
        main = self._main()
        channel = main.active_channel
        if channel is None:
            self.notify("Open a channel first.", severity="warning")
            return
        mode, main.composing = main.composing, None
        main.set_composing(None)
        if mode is not None and mode[0] == "edit":
            self.edit_message(channel, mode[1].msg_id, parsed.text)
            return
        reply_to = mode[1].msg_id if mode is not None else ""
        main.query_one(MessageLog).scroll_to_newest()
        self.send(channel, parsed.text, reply_to=reply_to)

    @on(Composer.Changed)
    def _composer_changed(self, event: Composer.Changed) -> None:
        main = self.main
        text = event.text_area.text
        if main is None or main.active_channel is None or not text or text.startswith("/"):
            return
        self.send_typing(main.active_channel)

    @work(group="typing", exit_on_error=False, name="typing")
    async def send_typing(self, channel: str) -> None:
        """Tell the channel we are typing (the engine coalesces)."""
        await self._engine().typing(channel)

    @staticmethod
    def _restore_line(composer: Composer, text: str) -> None:
        composer.load_text(text)
        composer.move_cursor(composer.document.end)

    def run_slash(self, invocation: slash.Invocation) -> str:
        """Run a slash command; returns a usage error ("" when it ran)."""
        return f"/{invocation.command.name} is not available here."

    @work(group="send", exit_on_error=False, name="send")
    async def send(
        self, channel: str, text: str, *, reply_to: str = "", action: bool = False
    ) -> None:
        """Send ``text`` (not exclusive: messages queue in order of writing).

        ``action``: a ``/me`` action.
        """
        message = await self._engine().send(channel, text, reply_to=reply_to, action=action)
        self._show_sent(message)

    def _show_sent(self, message: Message) -> None:
        main = self._main()
        if main.active_channel == message.channel:
            main.add_message(message)
        main.bump(message.channel, message.time_ms, unread=False)

    @work(exclusive=True, group="channel-op", exit_on_error=False, name="topic")
    async def set_topic(self, channel: str, topic: str) -> None:
        """Set the channel topic for every member."""
        info = await self._engine().set_topic(channel, topic)
        await self._after_channel_op(info, open_it=False)
        self.notify(f"Topic of {self._main().channel_label(channel)} set.")

    @work(exclusive=True, group="channel-op", exit_on_error=False, name="create group")
    async def create_group(self, name: str) -> None:
        """Create a group and open it."""
        info = await self._engine().create_group(name)
        await self._after_channel_op(info)
        self.notify(f"Created {info.label}. Ctrl+T invites people.")

    @work(exclusive=True, group="channel-op", exit_on_error=False, name="invite")
    async def invite(self, channel: str, users: list[str]) -> None:
        """Add ``users`` to ``channel``."""
        info = await self._engine().invite(channel, users)
        await self._members_changed(channel, info, f"Invited {', '.join(users)} to {info.label}.")

    async def _members_changed(self, channel: str, info: ChannelInfo, note: str) -> None:
        """After an invite or a removal: list, notification, member pane."""
        await self._after_channel_op(info, open_it=False)
        self.notify(note)
        if self._main().active_channel == channel:
            self._show_members(channel, await self._engine().members(channel), announce=True)

    @work(exclusive=True, group="channel-op", exit_on_error=False, name="direct message")
    async def start_dm(self, user: str) -> None:
        """Open (or create) the DM with ``user``."""
        info = await self._engine().dm(user)
        await self._after_channel_op(info)

    @work(exclusive=True, group="channel-op", exit_on_error=False, name="leave")
    async def leave(self, channel: str) -> None:
        """Leave ``channel``."""
        label = self._main().channel_label(channel)
        await self._engine().leave(channel)
        main = self._main()
        if main.active_channel == channel:
            main.close_channel()
        main.set_channels(await self._engine().channels())
        self.notify(f"You left {label}.")

    @work(exclusive=True, group="channel-op", exit_on_error=False, name="remove members")
    async def remove_members(self, channel: str, users: list[str]) -> None:
        """Remove ``users`` from ``channel``."""
        info = await self._engine().remove(channel, users)
        await self._members_changed(channel, info, f"Removed {', '.join(users)} from {info.label}.")

    @work(exclusive=True, group="channel-op", exit_on_error=False, name="update keys")
    async def update_keys(self, channel: str) -> None:
        """Commit a fresh leaf key of this device in ``channel``."""
        info = await self._engine().self_update(channel)
        self.notify(f"This device has a fresh key in {info.label} (epoch {info.epoch}).")

    @work(exclusive=True, group="keys", exit_on_error=False, name="verify keys")
    async def check_key(self, user: str) -> None:
        """Show the safety numbers of ``user``'s devices (the dialog can mark or accept)."""
        check = await self._engine().check_key(user)

        def chosen(choice: str | None) -> None:
            if choice in ("verify", "accept"):
                self.mark_key(check.user, choice)

        await self.push_screen(KeyCheckDialog(check), chosen)

    @work(exclusive=True, group="keys", exit_on_error=False, name="verify keys")
    async def mark_key(self, user: str, choice: str) -> None:
        """The user compared safety numbers: mark ``user``'s keys verified, or accept a change."""
        engine = self._engine()
        if choice == "verify":
            await engine.check_key(user, verify=True)
            self.notify(f"{user}'s keys are marked verified.")
        else:
            await engine.check_key(user, accept=True)
            self.notify(f"Accepted {user}'s new key. Mark it verified once you compared numbers.")

    @work(exclusive=True, group="info", exit_on_error=False, name="info")
    async def refresh_info(self) -> None:
        """Ask for whoami and health, and update the panes if shown."""
        engine = self._engine()
        self.whoami_info = await engine.whoami()
        self._fill_info()
        self.health_info = await engine.health()
        self._fill_info()

    async def react(self, channel: str, msg_id: str, emoji: str, *, remove: bool) -> None:
        """Add or take back our reaction."""
        message = await self._engine().react(channel, msg_id, emoji, remove=remove)
        self._show_changed(message)

    @work(group="send", exit_on_error=False, name="edit")
    async def edit_message(self, channel: str, msg_id: str, text: str) -> None:
        """Replace the text of one of our messages."""
        self._show_changed(await self._engine().edit(channel, msg_id, text))

    @work(group="send", exit_on_error=False, name="delete")
    async def delete_message(self, channel: str, msg_id: str) -> None:
        """Delete one of our messages everywhere."""
        self._show_changed(await self._engine().delete(channel, msg_id))

    def _show_changed(self, message: Message) -> None:
        main = self.main
        if main is not None and main.active_channel == message.channel:
            main.update_message(message)

    def _expire_typing(self) -> None:
        if self.main is not None:
            self.main.expire_typing(time.monotonic(), TYPING_TTL_S)

    @work(exclusive=True, group="read", exit_on_error=False, name="mark read")
    async def mark_read(self, channel: str) -> None:
        """Tell the engine the open channel was seen (its unread count survives restarts)."""
        await self._engine().mark_read(channel)

    @work(group="send", exit_on_error=False, name="react")
    async def _react_worker(self, channel: str, msg_id: str, emoji: str, remove: bool) -> None:
        await self.react(channel, msg_id, emoji, remove=remove)

    @work(exclusive=True, group="keys", exit_on_error=False, name="refresh keypackages")
    async def refresh_keypackages(self) -> None:
        """Upload KeyPackages until the stock is full."""
        stock = await self._engine().refresh_keypackages()
        self.notify(f"{stock.count} KeyPackages on the server.")

    def _tick_ping(self) -> None:
        if self.engine is not None:
            self.ping()

    @work(exclusive=True, group="ping", exit_on_error=False, name="ping")
    async def ping(self) -> None:
        """One round trip for the ping pane."""
        result = await self._engine().ping(1)
        self.post_message(PingSampled(result))

    async def _after_channel_op(self, info: ChannelInfo, *, open_it: bool = True) -> None:
        main = self._main()
        main.set_channels(await self._engine().channels())
        if open_it:
            self.open_channel(info.id)

    # ------------------------------------------------------- worker failures

    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures are reported."""
        worker: Worker[object] = event.worker
        if event.state is WorkerState.SUCCESS and worker.group == "events":
            log.info("event subscription ended; resubscribing")
            self.set_timer(_RESUBSCRIBE_S, self._resubscribe)
            return
        if event.state in (WorkerState.SUCCESS, WorkerState.CANCELLED):
            self._form_retry.pop(worker.name, None)
        if event.state is not WorkerState.ERROR or worker.error is None:
            return
        error = worker.error
        text = describe_error(error)
        log.error("%s failed: %s", worker.name, text, exc_info=error)
        self.last_error = f"{worker.name}: {text}"
        self._fill_info()
        if worker.group == "login":
            self._welcome_error(text, error)
            if worker.name == "resume":
                self.notify(text, title="Could not resume", severity="error")
            return
        if worker.group == "events":
            if self.main is not None:
                self.main.set_connection(ConnectionState.offline(0))
            self.set_timer(_RESUBSCRIBE_S, self._resubscribe)
        if worker.group in QUIET_GROUPS:
            return
        if worker.name in ("invite", "direct message") and self.engine is not None:
            info = self.engine.server_info()
            hint = local_node_hint(error, info.address) if info.embedded else None
            if hint is not None:
                text = f"{text} {hint}"
        retry = self._form_retry.pop(worker.name, None)
        if retry is not None:
            dialog, done = retry
            self.push_screen(dialog(text), done)
            return
        self.notify(text, title=worker.name.capitalize(), severity="error")

    def retry_form(
        self,
        worker_name: str,
        dialog: Callable[[str], ModalScreen[str | None]],
        done: Callable[[str | None], None],
    ) -> None:
        """If the worker ``worker_name`` about to start fails, show ``dialog(error)``
        again (filled in with what was typed) with ``done`` as its callback,
        instead of a toast: the user fixes one character, not retypes it all."""
        self._form_retry[worker_name] = (dialog, done)

    def _resubscribe(self) -> None:
        if self.engine is not None:
            self.subscribe()

    # --------------------------------------------------------- engine events

    @on(EngineEventPosted)
    def _engine_event(self, message: EngineEventPosted) -> None:
        event = message.event
        main = self.main
        if main is None:
            return
        if isinstance(event, MessageReceived):
            self._message_received(main, event)
        elif isinstance(event, MessageChanged):
            self._show_changed(event.message)
        elif isinstance(event, TopicChanged):
            self.load_channels()
            if main.active_channel == event.channel:
                main.add_notice(
                    f"topic-{time.monotonic_ns()}", f"{event.by} set the topic: {event.topic}"
                )
        elif isinstance(event, TypingChanged):
            if main.active_channel == event.channel:
                main.set_typing(event.users, time.monotonic())
                self.set_timer(TYPING_TTL_S, self._expire_typing)
        elif isinstance(event, ReceiptsChanged):
            if main.active_channel == event.channel:
                main.set_seen(event.seen)
        elif isinstance(event, MessageStateChanged):
            if main.active_channel == event.channel:
                main.set_delivery(event.message_id, event.state)
        elif isinstance(event, ChannelsChanged):
            main.set_channels(event.channels)
            # Nothing open yet (e.g. our first invitation arrived): open it.
            self._auto_open(event.channels)
        elif isinstance(event, MembersChanged):
            if main.active_channel == event.channel:
                self._show_members(event.channel, event.members, announce=True)
        elif isinstance(event, ConnectionChanged):
            main.set_connection(event.state)
            if event.state.status is ConnectionStatus.CONNECTED:
                self.last_error = self.last_error  # keep; the pane shows history
        elif isinstance(event, SecurityWarning):
            who = f" ({event.user})" if event.user else ""
            self.notify(event.reason + who, title="Security", severity="error", timeout=20)
            self.last_error = f"security: {event.reason}"

    def _message_received(self, main: MainScreen, event: MessageReceived) -> None:
        msg = event.message
        if main.channel(msg.channel) is None:
            self.load_channels()
        if self._opening == msg.channel:
            self._arrived_while_opening.append(msg)  # shown once the channel is open
            return
        if main.active_channel == msg.channel:
            main.add_message(msg)
            main.bump(msg.channel, msg.time_ms, unread=False)
            if not msg.outgoing:
                self.mark_read(msg.channel)
            return
        named = not msg.outgoing and mentions(main.user, msg.text)
        main.bump(msg.channel, msg.time_ms, unread=not msg.outgoing, mention=named)
        if msg.outgoing:
            return
        self._note_for_alert(main, msg)

    # ---------------------------------------------------------- notifications

    def _note_for_alert(self, main: MainScreen, msg: Message) -> None:
        """Hand an incoming message to the notifier; alerts go out once per redraw."""
        notifier = self._notifier_for(main)
        notifier.message(
            channel=msg.channel,
            title=main.channel_label(msg.channel),
            sender=msg.sender,
            text=msg.text,
            time_ms=msg.time_ms,
            outgoing=msg.outgoing,
            channel_in_view=main.active_channel == msg.channel and self.app_focus,
            now_ms=self._mono_ms(),
        )
        if not self._alert_scheduled:
            self._alert_scheduled = True
            self.set_timer(ALERT_COALESCE_S, self._flush_alerts)

    def _notifier_for(self, main: MainScreen) -> Notifier:
        if self.notifier is None:
            self.notifier = Notifier(
                user=main.user,
                session_start_ms=self._session_start_ms,
                levels=load_levels(self.factory.profile_dir),
            )
        return self.notifier

    @staticmethod
    def _mono_ms() -> int:
        return int(time.monotonic() * 1000)

    def _flush_alerts(self) -> None:
        self._alert_scheduled = False
        if self.notifier is None:
            return
        alerts, ring = self.notifier.flush(self._mono_ms())
        if self.notifier.pending:
            self._alert_scheduled = True
            self.set_timer(ALERT_COALESCE_S, self._flush_alerts)
        if self.settings.notify_messages:
            for alert in alerts:
                self.notify(alert.text, title=alert.title)
        if ring and self.settings.bell:
            self.bell()
            self.bells_rung += 1
        self.alerts_shown += len(alerts) if self.settings.notify_messages else 0

    def set_notify_level(self, channel: str, level: NotifyLevel) -> None:
        """Set and save one channel's notify level."""
        notifier = self._notifier_for(self._main())
        notifier.levels[channel] = level
        profile = self.factory.profile_dir
        if profile is not None and profile.is_dir():
            save_level(profile, channel, level)

    def _show_members(self, channel: str, members: tuple[Member, ...], *, announce: bool) -> None:
        main = self._main()
        names = frozenset(m.user for m in members)
        before = self._members.get(channel)
        self._members[channel] = names
        main.set_members(members)
        if announce and before is not None:
            now = datetime.now()
            for user in sorted(names - before):
                main.add_notice(f"join:{user}:{now.timestamp()}", f"{user} joined", now)
            for user in sorted(before - names):
                main.add_notice(f"left:{user}:{now.timestamp()}", f"{user} left", now)

    @on(PingSampled)
    def _ping_sampled(self, message: PingSampled) -> None:
        self.ping_samples.extend(message.result.rtts_ms)
        for screen in self.screen_stack:
            if isinstance(screen, InfoScreen):
                screen.query_one(PingPane).add_result(message.result)

    # ------------------------------------------------------------- helpers

    def _main(self) -> MainScreen:
        if self.main is None:
            raise RuntimeError("not logged in")
        return self.main

    def _fill_info(self) -> None:
        for screen in self.screen_stack:
            if not isinstance(screen, InfoScreen) or not screen.is_mounted:
                continue
            screen.query_one(WhoAmIPane).whoami = self.whoami_info
            health = screen.query_one(HealthPane)
            health.health = self.health_info
            health.last_error = self.last_error

    def open_info(self, tab: str) -> None:
        """Show the whoami/health/ping panes on ``tab`` and refresh them."""
        screen = InfoScreen(tab)

        def filled() -> None:
            self._fill_info()
            if self.ping_samples:
                samples = tuple(self.ping_samples)
                screen.query_one(PingPane).add_result(PingResult(rtts_ms=samples))

        self.push_screen(screen)
        self.call_after_refresh(filled)
        if self.engine is not None:
            self.refresh_info()
        else:
            self.refresh_info_bare()

    def _welcome_server(self) -> str:
        """The server typed in the welcome form ("" = the local node)."""
        for screen in self.screen_stack:
            if isinstance(screen, WelcomeScreen):
                return screen.query_one("#server", Input).value.strip()
        return self.factory.default_server

    @work(exclusive=True, group="info", exit_on_error=False, name="info")
    async def refresh_info_bare(self) -> None:
        """Before login: health and one ping of the welcome form's server, no account."""
        server = self._welcome_server()
        self.health_info = await self.factory.health(server)
        self._fill_info()
        self.post_message(PingSampled(await self.factory.ping(server)))
