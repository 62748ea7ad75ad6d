"""The main screen: channel list, message log, composer, member list.

This screen only shows things. The app (``tui.controller``) does the engine
calls in workers and calls the methods here with the results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from tui.client.api import ChannelInfo, ChannelKind, ConnectionState, DeliveryState, Member, Message
from tui.kinds_view import message_text, quote, seen_by, typing_text
from tui.notifications import mentions
from tui.widgets.channel_list import ChannelList, ChannelRow
from tui.widgets.composer import Composer
from tui.widgets.member_list import MemberList
from tui.widgets.message_log import DeliveryMark, LogItem, MessageLog
from tui.widgets.status_bar import StatusBar

__all__ = ["MainScreen", "log_item"]

_MARKS = {
    DeliveryState.PENDING: DeliveryMark.PENDING,
    DeliveryState.SENT: DeliveryMark.SENT,
    DeliveryState.FAILED: DeliveryMark.FAILED,
    DeliveryState.RECEIVED: DeliveryMark.NONE,
}

_EMPTY_HINT = (
    "No channel open.\n\n"
    "Ctrl+N  create a group\n"
    "Ctrl+O  start a direct message\n"
    "Ctrl+P  every command\n"
    "F1      all keys"
)


def mark_for(state: DeliveryState) -> DeliveryMark:
    """The log glyph for a delivery state."""
    return _MARKS[state]


def log_item(message: Message, user: str = "", parent: Message | None = None) -> LogItem:
    """How the log shows an engine message (``user``: the reader, for mentions;
    ``parent``: the message it replies to)."""
    return LogItem(
        key=str(message.id),
        sender=message.sender,
        text=message_text(message, parent),
        time=datetime.fromtimestamp(message.time),
        mark=mark_for(message.state) if message.outgoing else DeliveryMark.NONE,
        own=message.outgoing,
        mention=not message.outgoing and mentions(user, message.text),
    )


class MainScreen(Screen[None]):
    """Channels on the left, the open channel in the middle, members on the right."""

    BINDINGS = [
        Binding("ctrl+n", "app.new_group", "New group", id="main.new_group"),
        Binding("ctrl+t", "app.invite", "Invite", id="main.invite"),
        Binding("ctrl+o", "app.new_dm", "DM", id="main.new_dm"),
        Binding("f5", "toggle_members", "Members", id="main.members"),
        # Priority: the composer (a TextArea) binds F6/F7 to selection otherwise.
        Binding(
            "f6", "app.verify_keys", "Verify", show=False, priority=True, id="main.verify_keys"
        ),
        Binding("f8", "app.leave", "Leave", show=False, id="main.leave"),
        Binding("f7", "app.devices", "Devices", show=False, priority=True, id="main.devices"),
        Binding("f9", "app.link_device", "Link device", show=False, id="main.link_device"),
        Binding("f2", "app.info('whoami')", "Whoami", show=False, id="main.whoami"),
        Binding("f3", "app.info('health')", "Health", show=False, id="main.health"),
        Binding("f4", "app.info('ping')", "Ping", show=False, id="main.ping"),
        Binding("alt+down", "cycle_channel(1)", "Next", show=False, id="main.next_channel"),
        Binding("alt+up", "cycle_channel(-1)", "Prev", show=False, id="main.prev_channel"),
        Binding("pageup", "log_page(-1)", "Older", show=False, id="main.log_page_up"),
        Binding("pagedown", "log_page(1)", "Newer", show=False, id="main.log_page_down"),
        Binding("alt+a", "hotlist", "Next active", show=False, id="main.hotlist"),
        # Priority: the composer (a TextArea) binds Ctrl+F to "delete word right".
        Binding("ctrl+f", "app.search", "Search", show=False, priority=True, id="main.search"),
        Binding("ctrl+l", "app.links", "Links", show=False, priority=True, id="main.links"),
        Binding("escape", "focus_composer", "Compose", show=False, id="main.focus_composer"),
        Binding("alt+left", "select_message(-1)", "Older msg", show=False, id="main.select_older"),
        Binding("alt+right", "select_message(1)", "Newer msg", show=False, id="main.select_newer"),
        Binding("alt+r", "app.reply", "Reply", show=False, id="main.reply"),
        Binding("alt+m", "app.react", "React", show=False, id="main.react"),
        Binding("alt+e", "app.edit_message", "Edit", show=False, id="main.edit"),
        Binding("alt+x", "app.delete_message", "Delete", show=False, id="main.delete"),
        Binding("alt+p", "jump_to_parent", "Parent", show=False, id="main.jump_parent"),
    ]

    active_channel: reactive[str | None] = reactive(None, init=False)
    """Hex id of the open channel (``None``: nothing open)."""
    show_members: reactive[bool] = reactive(False, init=False)
    """Whether the member list is visible."""

    def __init__(self, *, user: str = "") -> None:
        """Create the screen for ``user``."""
        super().__init__()
        self.user = user
        self._rows: dict[str, ChannelRow] = {}
        self._notices: dict[str, list[tuple[int, LogItem]]] = {}
        self._newest_id = 0
        self.oldest_id: int | None = None
        """Local id of the oldest message loaded in the open channel."""
        self.messages: list[Message] = []
        # Indexes of ``messages`` (by local id; by message id, for the quoted
        # parents of replies): a page of history costs its own length.
        self._ids: set[int] = set()
        self._by_msg_id: dict[str, Message] = {}
        """The open channel's loaded messages, oldest first."""
        self.selected: int | None = None
        """Local id of the selected message (the reply/react/edit/delete target)."""
        self.composing: tuple[str, Message] | None = None
        """``("reply"|"edit", message)`` while the composer replies to or edits one."""
        self.typing: dict[str, float] = {}
        """Who is typing in the open channel -> monotonic time of their last notice."""
        self.seen: dict[str, str] = {}
        """Members' read positions (username -> message id) in the open channel."""

    def compose(self) -> ComposeResult:
        """Status line, three columns, footer."""
        yield StatusBar(id="status")
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield Label("Channels", classes="pane-title")
                yield ChannelList(id="channels")
            with Vertical(id="chat"):
                yield Label("", id="channel-title", classes="pane-title")
                yield Static(_EMPTY_HINT, id="empty-hint")
                yield MessageLog(id="log")
                yield Static("", id="selection")
                yield Static("", id="activity")
                yield Composer(
                    id="composer", placeholder="Write a message (Enter sends, Ctrl+J new line)"
                )
            with Vertical(id="members-pane"):
                yield Label("Members", classes="pane-title")
                yield MemberList(id="members")
        yield Footer()

    def on_mount(self) -> None:
        """Start with nothing open."""
        self.query_one(Composer).users = self.member_names
        self._show_channel_widgets(False)
        self.query_one("#members-pane").display = False
        self.query_one(StatusBar).title = self.user
        self.query_one(ChannelList).focus()

    # ------------------------------------------------------------- channels

    @property
    def rows(self) -> dict[str, ChannelRow]:
        """Rows currently shown, by channel id."""
        return dict(self._rows)

    def set_channels(self, channels: Iterable[ChannelInfo]) -> None:
        """Merge the engine's channel list; unread counts seen here are kept."""
        rows: dict[str, ChannelRow] = {}
        for info in channels:
            old = self._rows.get(info.id)
            named = 0
            if old is None:
                unread = 0 if info.id == self.active_channel else info.unread
                activity = info.last_activity_ms
            else:
                unread, named = old.unread, old.mentions
                activity = max(old.last_activity_ms, info.last_activity_ms)
            rows[info.id] = ChannelRow(
                info=info, unread=unread, last_activity_ms=activity, mentions=named
            )
        self._rows = rows
        self.query_one(ChannelList).set_rows(rows.values())
        self._update_title()

    def channel(self, channel_id: str) -> ChannelInfo | None:
        """The engine's info for ``channel_id``."""
        row = self._rows.get(channel_id)
        return None if row is None else row.info

    def bump(self, channel_id: str, time_ms: int, *, unread: bool, mention: bool = False) -> None:
        """A message arrived in ``channel_id`` (raise its unread and mention counts if asked)."""
        row = self._rows.get(channel_id)
        if row is None:
            return
        row = ChannelRow(
            info=row.info,
            unread=row.unread + (1 if unread else 0),
            last_activity_ms=max(row.last_activity_ms, time_ms),
            mentions=row.mentions + (1 if unread and mention else 0),
        )
        self._rows[channel_id] = row
        self.query_one(ChannelList).update_row(row)

    def mark_read(self, channel_id: str) -> None:
        """Clear the unread count of ``channel_id``."""
        row = self._rows.get(channel_id)
        if row is not None and (row.unread or row.mentions):
            row = ChannelRow(info=row.info, unread=0, last_activity_ms=row.last_activity_ms)
            self._rows[channel_id] = row
            self.query_one(ChannelList).update_row(row)

    def channel_label(self, channel_id: str) -> str:
        """``#name`` or ``@user`` for notifications and titles."""
        info = self.channel(channel_id)
        return "#" + channel_id[:8] if info is None else info.label

    # ------------------------------------------------------------ open one

    def open_channel(
        self, channel_id: str, history: list[Message], *, has_older: bool = False
    ) -> None:
        """Show ``channel_id`` with ``history`` (oldest first; ``has_older``: more exists)."""
        self.oldest_id = history[0].id if history else None
        self.messages = list(history)
        self._ids = {m.id for m in history}
        self._by_msg_id = {m.msg_id: m for m in reversed(history) if m.msg_id}
        self.selected = None
        self.composing = None
        self.typing.clear()
        self.seen = {}
        self._show_selection()
        self._show_activity()
        row = self._rows.get(channel_id)
        unread = min(row.unread if row else 0, len(history))
        self.active_channel = channel_id
        self.mark_read(channel_id)
        self.query_one(ChannelList).select_id(channel_id)
        self._show_channel_widgets(True)
        self._newest_id = history[-1].id if history else 0
        items = self._merged(history, history[0].id if has_older and history else None, None)
        if unread:
            # A marker above the first unread message, like other chat clients.
            first = str(history[-unread].id)
            at = next(n for n, i in enumerate(items) if i.key == first)
            marker = LogItem(
                key="unread-marker",
                sender="",
                text=f"{unread} new",
                time=items[at].time,
                system=True,
            )
            items.insert(at, marker)
        self.query_one(MessageLog).set_items(
            items, has_older=has_older, anchor="unread-marker" if unread else None
        )
        self._update_title()
        self.query_one(Composer).focus()

    def prepend_history(self, older: list[Message], *, has_older: bool) -> None:
        """Show ``older`` messages (oldest first) above what the open channel shows."""
        more = has_older and bool(older)
        fresh = [m for m in older if m.id not in self._ids]
        self.messages[:0] = fresh  # parents for quotes
        self._ids.update(m.id for m in fresh)
        self._by_msg_id.update((m.msg_id, m) for m in reversed(fresh) if m.msg_id)
        items = self._merged(older, older[0].id if more else None, self.oldest_id)
        if older:
            self.oldest_id = older[0].id
        self.query_one(MessageLog).prepend_items(items, has_older=more)

    def close_channel(self) -> None:
        """Show nothing (after leaving the open channel)."""
        self.active_channel = None
        self.query_one(MessageLog).clear()
        self.query_one(MemberList).clear_options()
        self._show_channel_widgets(False)
        self._update_title()

    def add_message(self, message: Message) -> None:
        """Append ``message`` to the open channel's log."""
        self._newest_id = max(self._newest_id, message.id)
        if message.id not in self._ids:
            self.messages.append(message)
            self._ids.add(message.id)
            if message.msg_id:
                self._by_msg_id.setdefault(message.msg_id, message)
        self.query_one(MessageLog).add_item(self._item(message))
        if message.sender in self.typing:
            del self.typing[message.sender]
        self._show_activity()

    def update_message(self, message: Message) -> None:
        """A shown message changed (edit, delete, reaction): redraw it and its replies."""
        self.messages = [message if m.id == message.id else m for m in self.messages]
        if message.id in self._ids and message.msg_id:
            self._by_msg_id[message.msg_id] = message
        log = self.query_one(MessageLog)
        log.update_item(self._item(message))
        for m in self.messages:
            if message.msg_id and m.reply_to == message.msg_id:
                log.update_item(self._item(m))
        self._show_selection()

    def by_msg_id(self, msg_id: str) -> Message | None:
        """The loaded message with this message id."""
        return self._by_msg_id.get(msg_id) if msg_id else None

    def _item(self, message: Message) -> LogItem:
        parent = self.by_msg_id(message.reply_to) if message.reply_to else None
        item = log_item(message, self.user, parent)
        return replace(item, selected=True) if message.id == self.selected else item

    # ----------------------------------------------------- selection, typing

    @property
    def selected_message(self) -> Message | None:
        """The message the reply/react/edit/delete keys act on."""
        return next((m for m in self.messages if m.id == self.selected), None)

    def action_select_message(self, step: int) -> None:
        """Select the next older (-1) or newer (1) message (none selected: the newest)."""
        real = [m for m in self.messages if m.msg_id]
        if not real:
            return
        ids = [m.id for m in real]
        if self.selected not in ids:
            index = len(ids) - 1
        else:
            index = max(0, min(len(ids) - 1, ids.index(self.selected) + step))
        self.select(ids[index])

    def select(self, message_id: int | None) -> None:
        """Select a message by local id (None: no selection) and scroll to it."""
        before, self.selected = self.selected, message_id
        for m in self.messages:
            if m.id in (before, message_id):
                self.query_one(MessageLog).update_item(self._item(m))
        self._show_selection()
        if message_id is not None:
            self.query_one(MessageLog).scroll_to_key(str(message_id))

    def action_jump_to_parent(self) -> None:
        """Select (and scroll to) the message the selected reply quotes."""
        m = self.selected_message
        if m is None or not m.reply_to:
            self.notify("Select a reply first (Alt+Left).", severity="warning")
            return
        parent = self.by_msg_id(m.reply_to)
        if parent is None:
            self.notify("The quoted message is not loaded.", severity="warning")
            return
        self.select(parent.id)

    def set_composing(self, mode: tuple[str, Message] | None) -> None:
        """Replying to or editing a message (shown above the composer), or None."""
        self.composing = mode
        self._show_selection()

    def _show_selection(self) -> None:
        line = self.query_one("#selection", Static)
        parts = []
        if self.composing is not None:
            verb, target = self.composing
            what = "Replying to" if verb == "reply" else "Editing"
            parts.append(f"{what} {quote(target)[2:]}  (Esc cancels)")
        m = self.selected_message
        if m is not None:
            parts.append(
                f"▶ {quote(m)[2:]}  Alt+R reply · Alt+M react · Alt+E edit · Alt+X delete"
                + (" · Alt+P parent" if m.reply_to else "")
            )
        line.update("\n".join(parts))
        line.display = bool(parts)

    def set_typing(self, users: Iterable[str], when: float) -> None:
        """These users are typing (as of monotonic time ``when``)."""
        for user in users:
            self.typing[user] = when
        self._show_activity()

    def expire_typing(self, now: float, ttl: float) -> None:
        """Forget typing notices older than ``ttl`` seconds."""
        stale = [u for u, t in self.typing.items() if now - t >= ttl]
        for u in stale:
            del self.typing[u]
        if stale:
            self._show_activity()

    def set_seen(self, seen: Iterable[tuple[str, str]]) -> None:
        """Members' read positions in the open channel."""
        self.seen = dict(seen)
        self._show_activity()

    def _show_activity(self) -> None:
        line = self.query_one("#activity", Static)
        parts = []
        typing = typing_text(sorted(self.typing))
        if typing:
            parts.append(typing)
        readers = seen_by(self.messages, self.seen)
        if readers:
            parts.append("seen by " + ", ".join(readers))
        line.update("   ".join(parts))
        line.display = bool(parts)

    def set_delivery(self, message_id: int, state: DeliveryState) -> None:
        """Update the delivery glyph of one of our messages."""
        self.query_one(MessageLog).set_mark(str(message_id), mark_for(state))

    def add_notice(self, key: str, text: str, when: datetime | None = None) -> None:
        """A system line in the open channel ("bob joined").

        Kept for the session, after the newest message shown when it happened,
        and shown there again whenever the channel is opened (the history
        store holds only messages).
        """
        item = LogItem(key=key, sender="", text=text, time=when or datetime.now(), system=True)
        if self.active_channel is not None:
            notices = self._notices.setdefault(self.active_channel, [])
            notices.append((self._newest_id, item))
        self.query_one(MessageLog).add_item(item)

    def _merged(self, history: list[Message], lo: int | None, hi: int | None) -> list[LogItem]:
        """``history`` as log items with the open channel's notices whose anchor
        message id is in ``[lo, hi)`` (``None``: unbounded) put after it."""
        notices = [
            (after, item)
            for after, item in self._notices.get(self.active_channel or "", ())
            if (lo is None or after >= lo) and (hi is None or after < hi)
        ]
        out: list[LogItem] = []
        i = 0
        for message in history:
            while i < len(notices) and notices[i][0] < message.id:
                out.append(notices[i][1])
                i += 1
            out.append(self._item(message))
        out.extend(item for _, item in notices[i:])
        return out

    def set_members(self, members: Iterable[Member]) -> None:
        """Replace the member list of the open channel (and its count in the title)."""
        members = tuple(members)
        self.query_one(MemberList).set_members(members)
        channel = self.active_channel
        row = None if channel is None else self._rows.get(channel)
        if row is not None:
            users = tuple(sorted(m.user for m in members))
            if users != row.info.members:
                info = replace(row.info, members=users)
                self._rows[info.id] = ChannelRow(
                    info=info, unread=row.unread, last_activity_ms=row.last_activity_ms
                )
                self._update_title()

    def set_connection(self, state: ConnectionState) -> None:
        """Show the engine's connection state."""
        self.query_one(StatusBar).state = state

    # -------------------------------------------------------------- actions

    def action_toggle_members(self) -> None:
        """Show or hide the member list."""
        self.show_members = not self.show_members

    def watch_show_members(self, show: bool) -> None:
        """Apply the member list's visibility."""
        self.query_one("#members-pane").display = show

    def action_cycle_channel(self, step: int) -> None:
        """Open the next (1) or previous (-1) channel in the list."""
        ids = self.query_one(ChannelList).channel_ids
        if not ids:
            return
        current = self.active_channel
        index = ids.index(current) if current in ids else -step
        target = ids[(index + step) % len(ids)]
        self.post_message(ChannelList.Opened(target))

    def action_log_page(self, step: int) -> None:
        """Scroll the log a page up (-1) or down (1), wherever the focus is."""
        log = self.query_one(MessageLog)
        if log.display:
            log.action_page_up() if step < 0 else log.action_page_down()

    def hotlist(self) -> list[str]:
        """Channels with unseen activity, WeeChat's hotlist order.

        Mentions first (most first), then unread messages (most recent
        activity first); the open channel is not in it.
        """
        rows = [
            r
            for r in self._rows.values()
            if (r.unread or r.mentions) and r.info.id != self.active_channel
        ]
        rows.sort(key=lambda r: (-r.mentions, -r.last_activity_ms))
        return [r.info.id for r in rows]

    def action_hotlist(self) -> None:
        """Alt+A: open the next channel with activity, mentions first."""
        hot = self.hotlist()
        if not hot:
            self.notify("No channel has new messages.")
            return
        self.post_message(ChannelList.Opened(hot[0]))

    def jump_to(self, message_id: int) -> bool:
        """Scroll the open channel to ``message_id`` (False: it is not loaded)."""
        return self.query_one(MessageLog).scroll_to_key(str(message_id))

    def flash(self, message_id: int, seconds: float = 2.0) -> None:
        """Highlight one message for a moment (where a search result jumped to)."""
        log = self.query_one(MessageLog)
        key = str(message_id)
        item = log.item(key)
        if item is None or item.mention:
            return
        log.update_item(replace(item, mention=True))

        def back() -> None:
            shown = log.item(key)
            if shown is not None:
                log.update_item(replace(shown, mention=False))

        self.set_timer(seconds, back)

    def member_names(self) -> list[str]:
        """Names Tab completes: the open channel's members, then everyone else known."""
        names: list[str] = []
        info = None if self.active_channel is None else self.channel(self.active_channel)
        if info is not None:
            names.extend(info.members)
        for row in self._rows.values():
            names.extend(row.info.members)
            if row.info.kind is ChannelKind.DM:
                names.append(row.info.name)
        return [n for n in dict.fromkeys(names) if n != self.user]

    def action_focus_composer(self) -> None:
        """Jump to the composer (or the channel list when nothing is open); cancel a
        reply or edit in progress and the selection."""
        if self.composing is not None or self.selected is not None:
            if self.composing is not None and self.composing[0] == "edit":
                self.query_one(Composer).text = ""
            self.composing = None
            self.select(None)
        if self.active_channel is None:
            self.query_one(ChannelList).focus()
        else:
            self.query_one(Composer).focus()

    # -------------------------------------------------------------- helpers

    def _show_channel_widgets(self, show: bool) -> None:
        if not show:
            self.query_one("#selection").display = False
            self.query_one("#activity").display = False
        self.query_one("#empty-hint").display = not show
        self.query_one(MessageLog).display = show
        self.query_one(Composer).display = show

    def _update_title(self) -> None:
        title = self.query_one("#channel-title", Label)
        bar = self.query_one(StatusBar)
        if self.active_channel is None:
            title.update("")
            bar.title = self.user
            return
        info = self.channel(self.active_channel)
        label = self.channel_label(self.active_channel)
        count = len(info.members) if info else 0
        members = f"  ({count} member{'s' if count != 1 else ''})" if count else ""
        left = "" if info is None or info.active else "  — you left this channel"
        topic = f"  — {info.topic}" if info is not None and info.topic else ""
        title.update(f"{label}{members}{left}{topic}")
        bar.title = f"{self.user} · {label}"
