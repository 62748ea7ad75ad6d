"""Application-data records: the plaintext of MLS application messages.

The node never sees any of this. Each MLS application message carries one
``AppRecord`` (``proto/schemas/appdata.capnp``), Cap'n Proto like the node
protocol, decoded with the same three steps (framing, the Rust structure
walk ``proto._mls.capnp_validate``, then the typed read; docs/PROTOCOL.md,
"Application data"). A record of a kind this version does not know decodes
to :class:`Unknown` (the client shows a placeholder); anything malformed
raises :class:`proto.errors.MalformedInput`.

Readers also accept the older compact-JSON records (first byte ``{``:
``msg``/``meta``/``hello``) so a profile's held or queued messages from
before the Cap'n Proto records still decode; writers only write Cap'n Proto.

Message ids: a chat text carries a 16-byte random ``nonce``; its id is
``SHA-256("qpc msg id v1" || author signature key || nonce)[:16]`` (see
:func:`message_id`). Every member computes the same id from the same MLS
message, and because the author's MLS-authenticated signature key is part
of the hash, no other member can make a message with somebody else's id.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import capnp

from proto.codec import CodecLimits, _open, _validate
from proto.errors import MalformedInput, ProtocolError

__all__ = [
    "ID_BYTES",
    "MAX_EMOJI_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TOPIC_CHARS",
    "RECORD_VERSION",
    "SCHEMA_PATH",
    "AppData",
    "ChatText",
    "Delete",
    "DeviceCert",
    "Edit",
    "Hello",
    "Known",
    "Meta",
    "Reaction",
    "Receipt",
    "Topic",
    "Typing",
    "Unknown",
    "decode",
    "encode",
    "message_id",
    "new_nonce",
]

SCHEMA_PATH: Final = Path(__file__).with_name("schemas") / "appdata.capnp"
"""Path of the record schema."""
RECORD_VERSION: Final = 1
"""Version written into every record."""
MAX_TEXT_CHARS: Final = 16_000
"""Longest chat message accepted."""
MAX_NAME_CHARS: Final = 64
"""Longest channel name accepted."""
MAX_TOPIC_CHARS: Final = 300
"""Longest channel topic accepted."""
MAX_EMOJI_CHARS: Final = 16
"""Longest reaction accepted (one emoji, possibly with joiners and modifiers)."""
ID_BYTES: Final = 16
"""Length of a message id and of a chat text's nonce."""
_LIMITS: Final = CodecLimits(max_message_bytes=256 * 1024, max_segments=8)

_schema: Any = capnp.load(str(SCHEMA_PATH))
_Record: Any = _schema.AppRecord


def new_nonce() -> bytes:
    """A fresh random nonce for a chat text."""
    return os.urandom(ID_BYTES)


def message_id(author_key: bytes, nonce: bytes) -> bytes:
    """The message id every member computes for a chat text (16 bytes)."""
    return hashlib.sha256(b"qpc msg id v1" + author_key + nonce).digest()[:ID_BYTES]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatText:
    """A chat message (or an action, ``/me``)."""

    text: str
    """The text."""
    ts: int
    """Author's clock, Unix ms."""
    nonce: bytes = b""
    """16 random bytes (the id's input); empty only in legacy records."""
    reply_to: bytes = b""
    """The parent's message id, or empty."""
    action: bool = False
    """True for an action (``/me waves``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """Channel name and kind, sent by whoever creates or invites."""

    name: str
    """Display name."""
    kind: str
    """``group`` or ``dm``."""
    access_keys: dict[str, str] = field(default_factory=dict)
    """Hex device id -> hex delivery access key, for members' sealed sender."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """A device announcing its delivery access key to the channel."""

    access_key: bytes
    """32-byte delivery access key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """Add (or with ``remove``, take back) an emoji on a message."""

    target: bytes
    """Message id."""
    emoji: str
    """The emoji."""
    remove: bool = False
    """Take the reaction back."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """A new text for a message (accepted only from its author)."""

    target: bytes
    """Message id."""
    text: str
    """The new text."""
    ts: int
    """Author's clock, Unix ms."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    """Delete a message everywhere (accepted only from its author)."""

    target: bytes
    """Message id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """The sender has read the channel up to ``up_to`` (not stored as a chat line)."""

    up_to: bytes
    """Message id of the newest message read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing:
    """The sender is typing (not stored; expires after a few seconds)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Topic:
    """A new channel topic (any member may set it)."""

    text: str
    """The topic (empty clears it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCert:
    """The sender's account linked ``device``: signed by the sender's device key."""

    device: bytes
    """The certified device's id."""
    issued_ms: int
    """When it was linked (issuer's clock, Unix ms)."""
    signature: bytes
    """Ed25519 over :func:`proto.crypto.identity.device_cert_message`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown:
    """A record kind this version does not know (shown as a placeholder)."""

    kind: str
    """What is known of the kind (``future`` for an unknown union member)."""


Known = ChatText | Meta | Hello | Reaction | Edit | Delete | Receipt | Typing | Topic | DeviceCert
AppData = Known | Unknown


def _id(value: bytes, what: str, *, empty: bool = False) -> bytes:
    if (empty and not value) or len(value) == ID_BYTES:
        return value
    raise MalformedInput(f"bad {what}")


def _text(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise MalformedInput(f"{what} too long")
    return value


def encode(item: Known) -> bytes:
    """Serialise one record (Cap'n Proto, one segment)."""
    rec = _Record.new_message(version=RECORD_VERSION)
    body = rec.body
    match item:
        case ChatText():
            t = body.init("text")
            t.nonce = item.nonce
            t.text = item.text
            t.ts = item.ts
            t.replyTo = item.reply_to
            t.action = item.action
        case Meta():
            m = body.init("meta")
            m.name = item.name
            m.kind = item.kind
            keys = m.init("accessKeys", len(item.access_keys))
            for i, (dev, key) in enumerate(sorted(item.access_keys.items())):
                keys[i].device = bytes.fromhex(dev)
                keys[i].key = bytes.fromhex(key)
        case Hello():
            body.init("hello").accessKey = item.access_key
        case Reaction():
            r = body.init("reaction")
            r.target = item.target
            r.emoji = item.emoji
            r.remove = item.remove
        case Edit():
            e = body.init("edit")
            e.target = item.target
            e.text = item.text
            e.ts = item.ts
        case Delete():
            body.init("delete").target = item.target
        case Receipt():
            body.init("receipt").upTo = item.up_to
        case Typing():
            body.typing = None
        case Topic():
            body.init("topic").text = item.text
        case DeviceCert():
            c = body.init("deviceCert")
            c.device = item.device
            c.issuedMs = item.issued_ms
            c.signature = item.signature
    return bytes(rec.to_bytes())


def decode(data: bytes) -> AppData:
    """Parse one record from untrusted (but MLS-authenticated) bytes.

    Raises:
        MalformedInput: not a valid record (never a capnp exception).
    """
    if data[:1] == b"{":
        return _decode_json(data)
    try:
        reader = _open(_Record, data, _LIMITS)
        _validate(data, _LIMITS)
        return _read(reader)
    except MalformedInput:
        raise
    except ProtocolError as exc:
        raise MalformedInput("application data is not a valid record") from exc
    except Exception as exc:  # capnp.KjException, UnicodeDecodeError, ...
        raise MalformedInput("application data is not a valid record") from exc


def _read(reader: Any) -> AppData:
    body = reader.body
    try:
        which = body.which()
    except capnp.KjException:  # a union member from a newer schema
        return Unknown(kind="future")
    if which == "text":
        t = body.text
        return ChatText(
            text=_text(t.text, MAX_TEXT_CHARS, "chat message"),
            ts=int(t.ts),
            nonce=_id(bytes(t.nonce), "message nonce", empty=True),
            reply_to=_id(bytes(t.replyTo), "reply target", empty=True),
            action=bool(t.action),
        )
    if which == "meta":
        m = body.meta
        kind = str(m.kind)
        if kind not in ("group", "dm"):
            raise MalformedInput("bad channel kind")
        aks: dict[str, str] = {}
        for ak in m.accessKeys:
            if len(ak.key) != 32 or not 0 < len(ak.device) <= 64:
                raise MalformedInput("bad access key")
            aks[bytes(ak.device).hex()] = bytes(ak.key).hex()
        return Meta(name=_text(m.name, MAX_NAME_CHARS, "channel name"), kind=kind, access_keys=aks)
    if which == "hello":
        ak = bytes(body.hello.accessKey)
        if len(ak) != 32:
            raise MalformedInput("bad access key")
        return Hello(access_key=ak)
    if which == "reaction":
        r = body.reaction
        emoji = _text(r.emoji, MAX_EMOJI_CHARS, "reaction")
        if not emoji:
            raise MalformedInput("empty reaction")
        return Reaction(target=_id(bytes(r.target), "message id"), emoji=emoji, remove=r.remove)
    if which == "edit":
        e = body.edit
        return Edit(
            target=_id(bytes(e.target), "message id"),
            text=_text(e.text, MAX_TEXT_CHARS, "chat message"),
            ts=int(e.ts),
        )
    if which == "delete":
        return Delete(target=_id(bytes(body.delete.target), "message id"))
    if which == "receipt":
        return Receipt(up_to=_id(bytes(body.receipt.upTo), "message id"))
    if which == "typing":
        return Typing()
    if which == "topic":
        return Topic(text=_text(body.topic.text, MAX_TOPIC_CHARS, "topic"))
    if which == "deviceCert":
        c = body.deviceCert
        device, sig = bytes(c.device), bytes(c.signature)
        if len(device) != 32 or len(sig) != 64 or c.issuedMs < 0:
            raise MalformedInput("bad device certificate")
        return DeviceCert(device=device, issued_ms=int(c.issuedMs), signature=sig)
    return Unknown(kind=str(which))  # pragma: no cover - every member of this schema is handled


def _decode_json(data: bytes) -> AppData:
    """The compact-JSON records written before the Cap'n Proto ones."""
    try:
        doc = json.loads(data)
        kind = doc["t"]
        if kind == "msg":
            text, ts = doc["text"], doc["ts"]
            if not isinstance(text, str) or not isinstance(ts, int) or len(text) > MAX_TEXT_CHARS:
                raise MalformedInput("bad chat message")
            return ChatText(text=text, ts=ts)
        if kind == "meta":
            name, ck = doc["name"], doc["kind"]
            if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or ck not in ("group", "dm"):
                raise MalformedInput("bad channel meta")
            aks = doc.get("aks", {})
            if not isinstance(aks, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and len(bytes.fromhex(v)) == 32
                for k, v in aks.items()
            ):
                raise MalformedInput("bad access keys")
            return Meta(name=name, kind=ck, access_keys=aks)
        if kind == "hello":
            ak = bytes.fromhex(doc["ak"])
            if len(ak) != 32:
                raise MalformedInput("bad access key")
            return Hello(access_key=ak)
        return Unknown(kind=str(kind)[:32])
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedInput("application data is not valid") from exc
