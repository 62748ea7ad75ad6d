"""Application data carried inside MLS application messages.

The records and their codec live in :mod:`proto.appdata` (schema
``proto/schemas/appdata.capnp``); this module re-exports them for the client.
"""

from __future__ import annotations

from proto.appdata import (
    ID_BYTES,
    MAX_EMOJI_CHARS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOPIC_CHARS,
    AppData,
    ChatText,
    Delete,
    DeviceCert,
    Edit,
    Hello,
    Known,
    Meta,
    Reaction,
    Receipt,
    Topic,
    Typing,
    Unknown,
    decode,
    encode,
    message_id,
    new_nonce,
)

__all__ = [
    "ID_BYTES",
    "MAX_EMOJI_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TOPIC_CHARS",
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
