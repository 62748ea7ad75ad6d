"""The welcome screen: log in or register (server, username, password, passphrase)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Input, Label, LoadingIndicator, Static

from tui.session import LoginForm
from tui.widgets.steady import steady_input

__all__ = ["WelcomeScreen"]

_INTRO = (
    "End-to-end encrypted group chat. Your keys and history never leave this "
    "machine unencrypted; the server only relays sealed messages."
)
_HOSTED_INTRO = (
    "End-to-end encrypted group chat, hosted: this client runs on the host you "
    "connected to, so that host sees your messages while you are connected. "
    "Your profile there is encrypted with your passphrase; the node only relays "
    "sealed messages."
)


class WelcomeScreen(Screen[None]):
    """First screen: collects credentials and asks the app to log in."""

    BINDINGS = [
        # Priority, so focus moves before the keys typed after Tab are routed
        # (a normal binding runs only once the field has drained its queue).
        Binding("tab", "app.focus_next", "Next", show=False, priority=True, id="welcome.next"),
        Binding(
            "shift+tab", "app.focus_previous", "Prev", show=False, priority=True, id="welcome.prev"
        ),
        Binding("ctrl+r", "register", "Register", id="welcome.register"),
        Binding("ctrl+l", "login", "Log in", id="welcome.login"),
        # Before login too: the first thing a person checks against a new node.
        Binding("f3", "app.info('health')", "Health", show=False, id="welcome.health"),
        Binding("f4", "app.info('ping')", "Ping", show=False, id="welcome.ping"),
    ]

    busy: reactive[bool] = reactive(False)
    """True while the app is connecting; the form is disabled."""

    @dataclass
    class Submitted(Message):
        """The user asked to log in or register."""

        form: LoginForm
        """What was entered."""

    def __init__(
        self,
        *,
        server: str = "",
        user: str = "",
        profile_exists: bool = False,
        hosted: bool = False,
    ) -> None:
        """Prefill ``server`` and ``user``; mention an existing profile; say if hosted."""
        super().__init__()
        self._hosted = hosted
        self._server = server
        self._user = user
        self._profile_exists = profile_exists
        self._wait_until = 0.0
        self._wait_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        """The form, centred."""
        with VerticalScroll(id="welcome"), Vertical(id="welcome-box"):
            yield Label("quicnprotochat", id="welcome-title")
            intro = _HOSTED_INTRO if self._hosted else _INTRO
            if self._profile_exists:
                intro += " This profile exists: Log in with its passphrase."
            yield Static(intro, id="welcome-intro")
            yield Label("Server (empty: a local node on this machine)")
            yield steady_input(self._server, placeholder="host:port", id="server", compact=True)
            yield Label("Username")
            yield steady_input(self._user, placeholder="your name", id="user", compact=True)
            if self._profile_exists:
                yield Label("Password (empty: resume this profile's session)")
            else:
                yield Label("Password (for the server, never sent in clear)")
            yield steady_input(password=True, id="password", compact=True)
            yield Label("Passphrase (encrypts this profile on disk)")
            yield steady_input(password=True, id="passphrase", compact=True)
            yield Static("", id="welcome-error", classes="dialog-error")
            yield Static("", id="welcome-wait")
            yield LoadingIndicator(id="welcome-busy")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Log in", variant="primary", id="login")
                yield Button("Register", id="register")
                yield Button("Link to an existing account", id="link")
        yield Footer()

    def on_mount(self) -> None:
        """Focus the first empty field."""
        for field_id in ("server", "user", "password", "passphrase"):
            field = self.query_one(f"#{field_id}", Input)
            if field_id != "server" and not field.value:
                field.focus()
                return
        self.query_one("#password", Input).focus()

    def watch_busy(self, busy: bool) -> None:
        """Grey out the form while connecting."""
        self.query_one("#welcome-busy").display = busy
        for widget in self.query("Input, Button"):
            widget.disabled = busy

    def show_rate_limit_wait(self, seconds: float) -> None:
        """The node asked us to slow down: count down to the automatic retry."""
        self._wait_until = time.monotonic() + seconds
        self._tick_wait()
        if self._wait_timer is None:
            self._wait_timer = self.set_interval(0.5, self._tick_wait)

    def _tick_wait(self) -> None:
        left = max(0, math.ceil(self._wait_until - time.monotonic()))
        text = f"The server asks us to slow down: retrying in {left} s…" if left else ""
        wait = self.query_one("#welcome-wait", Static)
        wait.update(text)
        wait.display = bool(text)
        if not left and self._wait_timer is not None:
            self._wait_timer.stop()
            self._wait_timer = None

    def _clear_wait(self) -> None:
        self._wait_until = 0.0
        if self._wait_timer is not None:
            self._wait_timer.stop()
            self._wait_timer = None
        wait = self.query_one("#welcome-wait", Static)
        wait.update("")
        wait.display = False

    def show_error(self, text: str, field: str = "password") -> None:
        """Show ``text`` under the form, re-enable it and focus ``field``."""
        self._clear_wait()
        self.busy = False
        self.query_one("#welcome-error", Static).update(text)
        target = self.query_one(f"#{field}", Input)
        target.focus()
        target.action_select_all()

    def _form(self, register: bool, *, link: bool = False) -> LoginForm | None:
        values = {i.id: i.value for i in self.query(Input) if i.id}
        # With an existing profile, logging in without a password resumes its session.
        needed: tuple[str, ...] = ("user", "password", "passphrase")
        if self._profile_exists and not register:
            needed = ("user", "passphrase")
        missing = [name for name in needed if not values.get(name)]
        if missing:
            self.query_one("#welcome-error", Static).update(f"Please enter a {missing[0]}.")
            self.query_one(f"#{missing[0]}", Input).focus()
            return None
        return LoginForm(
            server=values.get("server", "").strip(),
            user=values["user"].strip(),
            password=values["password"],
            passphrase=values["passphrase"],
            register=register,
            link=link,
        )

    def _submit(self, register: bool, *, link: bool = False) -> None:
        if self.busy:
            return
        form = self._form(register, link=link)
        if form is None:
            return
        self.query_one("#welcome-error", Static).update("")
        self.busy = True
        self.post_message(self.Submitted(form))

    @on(Button.Pressed, "#login")
    def action_login(self) -> None:
        """Log in with the form's values."""
        self._submit(register=False)

    @on(Button.Pressed, "#register")
    def action_register(self) -> None:
        """Create the account with the form's values."""
        self._submit(register=True)

    @on(Button.Pressed, "#link")
    def action_link(self) -> None:
        """Log in (the account exists on another device), then enter that device's link code."""
        self._submit(register=False, link=True)

    @on(Input.Submitted)
    def _enter(self, event: Input.Submitted) -> None:
        if event.input.id == "passphrase":
            self._submit(register=False)
        else:
            self.focus_next()
