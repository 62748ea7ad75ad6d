"""Application data carried inside MLS application messages.

The node never sees any of this: channel names, kinds and access keys travel
only as MLS application messages, encrypted to the group and then sealed per
device in the hybrid envelope. Plaintext is compact JSON::

    {"t": "msg",   "text": str, "ts": int}            a chat message
    {"t": "meta",  "name": str, "kind": "group"|"dm", "aks": {hex: hex}}
                                                       channel name, kind, members' access keys
    {"t": "hello", "ak": hex}                          the sender device's access key

Unknown ``t`` values are ignored (forward compatible); anything malformed is
rejected with :class:`proto.errors.MalformedInput`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from proto.errors import MalformedInput

__all__ = ["ChatText", "Hello", "Meta", "Unknown", "decode", "encode"]

MAX_TEXT_CHARS = 16_000
"""Longest chat message accepted."""
MAX_NAME_CHARS = 64
"""Longest channel name accepted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatText:
    """A chat message."""

    text: str
    """The text."""
    ts: int
    """Sender's clock, Unix ms."""


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
class Unknown:
    """A payload type this version does not know (ignored)."""

    kind: str
    """The ``t`` value."""


AppData = ChatText | Meta | Hello | Unknown


def encode(item: ChatText | Meta | Hello) -> bytes:
    """Serialise one item."""
    if isinstance(item, ChatText):
        doc: dict[str, object] = {"t": "msg", "text": item.text, "ts": item.ts}
    elif isinstance(item, Meta):
        doc = {"t": "meta", "name": item.name, "kind": item.kind, "aks": item.access_keys}
    else:
        doc = {"t": "hello", "ak": item.access_key.hex()}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> AppData:
    """Parse one item from untrusted (but MLS-authenticated) bytes.

    Raises:
        MalformedInput: not the expected JSON shape.
    """
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
        return Unknown(kind=str(kind))
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedInput("application data is not valid") from exc
