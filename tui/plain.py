"""``qpc --plain``: a line-mode interface for screen-reader users (docs/TUI.md, "Plain mode").

No full-screen drawing, no box characters, no colour, no cursor movement:
every output is one complete line of text written once, so a screen reader
(or a braille display) reads each as it appears and the terminal's own
scroll-back is the history. Each new message is announced as one line
(``New in #team from bob: hello``). Input is a line: text is sent to the
current channel; a line starting with ``/`` is a command (``/help``).

Message-by-message navigation keeps a position in the current channel:
``/p`` reads the previous message, ``/n`` the next one, ``/r`` repeats the
current one, ``/last`` jumps to the newest; each message is read as
``3 of 20. bob, 14:02: hello``. Delivery states are words, never colours.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from proto.errors import QpcError
from tui.client import api
from tui.client.engine import Engine

__all__ = ["HELP", "PlainSession", "run_plain"]

HELP = (
    "Commands: /channels lists channels. /go NAME switches channel. "
    "/p previous message, /n next message, /r repeat, /last newest, /first oldest. "
    "/h N reads the last N messages. /who lists members. /help this text. /quit leaves. "
    "Any other line is sent to the current channel; start it with // to send a slash."
)
HISTORY_LIMIT = 500


def _clock(m: api.Message) -> str:
    return time.strftime("%H:%M", time.localtime(m.time))


def _state_word(m: api.Message) -> str:
    if not m.outgoing or m.state in (api.DeliveryState.SENT, api.DeliveryState.RECEIVED):
        return ""
    return f" ({m.state.value})"


@dataclass(slots=True)
class PlainSession:
    """The line interface over one engine; output goes to ``out``."""

    engine: Engine
    out: TextIO
    channel: str = ""
    """Current channel id (hex), empty before one is chosen."""
    messages: list[api.Message] = field(default_factory=list)
    """The current channel's history, oldest first."""
    pos: int = -1
    """Index of the message last read in :attr:`messages`."""
    names: dict[str, str] = field(default_factory=dict)

    def say(self, line: str) -> None:
        """Write one line (flushed: a screen reader speaks it at once)."""
        self.out.write(line.replace("\n", " ") + "\n")
        self.out.flush()

    async def start(self) -> None:
        """Announce who we are and open the most recent channel."""
        chans = await self.engine.channels()
        self.names = {c.id: c.name for c in chans}
        self.say(f"Plain mode. Signed in as {self.engine.user}. {len(chans)} channel(s).")
        if chans:
            await self.open(chans[0].id)
        else:
            self.say("No channels yet. Type /help for commands.")

    async def open(self, channel: str) -> None:
        """Switch to ``channel`` and say where we are."""
        cid = self.engine.resolve(channel).hex()
        self.channel = cid
        history = await self.engine.history(cid, limit=HISTORY_LIMIT)
        # /p and /n walk the messages; join/leave/topic notices are announced live only.
        self.messages = [m for m in history if not m.system]
        self.pos = len(self.messages) - 1
        name = self.names.get(cid) or self.engine.channel_info(bytes.fromhex(cid)).name
        self.names[cid] = name
        self.say(
            f"Channel #{name}, {len(self.messages)} message(s). "
            "/p reads the previous message, /h 5 the last five."
        )

    def read(self, index: int) -> None:
        """Read message ``index`` of the current channel as one line."""
        if not self.messages:
            self.say("No messages in this channel.")
            return
        if index < 0:
            self.say("Start of channel.")
            index = 0
        elif index >= len(self.messages):
            self.say("End of channel.")
            index = len(self.messages) - 1
        self.pos = index
        m = self.messages[index]
        who = "you" if m.outgoing else m.sender
        self.say(
            f"{index + 1} of {len(self.messages)}. {who}, {_clock(m)}: {m.text}{_state_word(m)}"
        )

    def on_event(self, ev: api.EngineEvent) -> None:
        """Announce what a screen-reader user must hear: new messages, warnings, connection."""
        if isinstance(ev, api.MessageReceived) and not ev.message.outgoing:
            m = ev.message
            name = self.names.get(m.channel, m.channel[:8])
            if m.channel == self.channel and not m.system:
                self.messages.append(m)
            said = f"#{name}: {m.text}" if m.system else f"New in #{name} from {m.sender}: {m.text}"
            self.say(said)
        elif isinstance(ev, api.ChannelsChanged):
            for c in ev.channels:
                if c.id not in self.names:
                    self.say(f"You joined #{c.name}.")
                self.names[c.id] = c.name
        elif isinstance(ev, api.SecurityWarning):
            self.say(f"Warning: {ev.reason}")
        elif isinstance(ev, api.ConnectionChanged):
            self.say(f"Connection: {ev.state.status.value}.")

    async def command(self, line: str) -> bool:
        """Run one input line; False when the user quits."""
        text = line.rstrip("\n")
        if not text.strip():
            return True
        if text.startswith("//"):
            await self.send(text[1:])
            return True
        if not text.startswith("/"):
            await self.send(text)
            return True
        verb, _, arg = text[1:].partition(" ")
        arg = arg.strip()
        match verb.lower():
            case "quit" | "q" | "exit":
                self.say("Goodbye.")
                return False
            case "help" | "?":
                self.say(HELP)
            case "channels" | "c":
                chans = await self.engine.channels()
                self.names.update({c.id: c.name for c in chans})
                for i, c in enumerate(chans, 1):
                    unread = f", {c.unread} unread" if c.unread else ""
                    current = ", current" if c.id == self.channel else ""
                    self.say(f"{i}. #{c.name}, {len(c.members)} member(s){unread}{current}")
                if not chans:
                    self.say("No channels.")
            case "go" | "j":
                chans = await self.engine.channels()
                if arg.isdigit() and 1 <= int(arg) <= len(chans):
                    arg = chans[int(arg) - 1].id
                await self.open(arg.lstrip("#"))
            case "p":
                self.read(self.pos - 1)
            case "n":
                self.read(self.pos + 1)
            case "r":
                self.read(self.pos)
            case "last":
                self.read(len(self.messages) - 1)
            case "first":
                self.read(0)
            case "h":
                n = int(arg) if arg.isdigit() else 5
                start = max(0, len(self.messages) - n)
                for i in range(start, len(self.messages)):
                    self.read(i)
                if not self.messages:
                    self.say("No messages in this channel.")
            case "who":
                if not self.channel:
                    self.say("No channel open.")
                else:
                    ms = await self.engine.members(self.channel)
                    self.say("Members: " + ", ".join(m.user for m in ms) + ".")
            case _:
                self.say(f"Unknown command /{verb}. Type /help.")
        return True

    async def send(self, text: str) -> None:
        """Send ``text`` to the current channel and say how it went."""
        if not self.channel:
            self.say("No channel open: /channels, then /go NAME.")
            return
        m = await self.engine.send(self.channel, text)
        self.messages.append(m)
        self.pos = len(self.messages) - 1
        self.say(f"Sent{_state_word(m) or ''}.")


async def run_plain(engine: Engine, out: TextIO = sys.stdout) -> int:
    """Run the line interface on stdin until ``/quit`` or end of input."""
    session = PlainSession(engine=engine, out=out)
    await session.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def listen() -> None:
        async for ev in engine.events():
            session.on_event(ev)

    listener = asyncio.ensure_future(listen())
    try:
        while True:
            raw = await reader.readline()
            if not raw:
                break
            try:
                if not await session.command(raw.decode("utf-8", "replace")):
                    break
            except QpcError as exc:
                session.say(
                    f"Error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                )
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, QpcError):
            await listener
    return 0
