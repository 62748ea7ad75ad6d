"""The engine's own state, kept as one encrypted JSON document in the profile.

Everything the engine must remember between runs (account, session token,
delivery cursor, channels, peer devices and their pinned keys, held messages,
outbox) lives in :class:`EngineState`. It is written with
:meth:`tui.client.profile.Profile.put_secret`, so it is encrypted at rest with
the profile's record key like every other secret; nothing here is ever logged.

The document is small (one entry per channel and per peer device) and is
rewritten after each processed batch, *before* the batch is acked.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from proto.errors import ProfileError
from tui.client.profile import Profile

__all__ = [
    "STATE_SECRET",
    "ChannelRecord",
    "DeviceCertRecord",
    "DeviceRecord",
    "EngineState",
    "HeldEnvelope",
    "OutboxEntry",
]

STATE_SECRET = "engine.state"  # noqa: S105 (a name, not a secret)
"""Secret name of the engine state document."""

_VERSION = 1


@dataclass(slots=True, kw_only=True)
class ChannelRecord:
    """What the engine knows about a channel beyond the MLS state."""

    name: str = ""
    """Display name, learned from the channel's meta message (inside MLS)."""
    kind: str = "group"
    """``group`` or ``dm``."""
    active: bool = True
    """False once we left or were removed."""
    unread: int = 0
    """Received messages since the last :meth:`history` call."""
    last_ms: int = 0
    """Time of the newest activity."""
    updated_ms: int = 0
    """When we last committed a self-update (or joined/created)."""
    topic: str = ""
    """The channel topic (set by any member)."""
    seen: dict[str, str] = field(default_factory=dict)
    """Username -> hex id of the newest message that member read (read receipts)."""
    read_sent: str = ""
    """Hex id of the newest message our last read receipt named (one per read position)."""


@dataclass(slots=True, kw_only=True)
class DeviceCertRecord:
    """A device certificate received in a channel (docs/PROTOCOL.md "Linked devices")."""

    user: str
    """The account the device was linked to (the issuer's MLS identity)."""
    issuer: str
    """Hex id of the device that linked it and signed."""
    issued_ms: int
    """When (issuer's clock)."""
    signature: str
    """Hex Ed25519 signature, re-checked whenever it is used."""


@dataclass(slots=True, kw_only=True)
class DeviceRecord:
    """A peer device we have seen: its user, verified hybrid key, access key."""

    user: str
    """Username the node (and the MLS credential) associate with the device."""
    hybrid: str = ""
    """Hex X-Wing public key, verified against the device's signature."""
    access_key: str = ""
    """Hex delivery access key the device shared inside a channel (sealed sender)."""


@dataclass(slots=True, kw_only=True)
class HeldEnvelope:
    """An opened envelope whose MLS epoch is ahead of our group state."""

    seq: int
    """Delivery seq it arrived with."""
    channel: str
    """Hex channel id."""
    content_type: int
    """Envelope content type."""
    sender: str
    """Hex sender device id (verified envelope signature)."""
    body: str
    """Base64 MLS message."""

    def body_bytes(self) -> bytes:
        """The MLS message bytes."""
        return base64.b64decode(self.body)


@dataclass(slots=True, kw_only=True)
class OutboxEntry:
    """A message written while the node was unreachable."""

    id: int
    """Local history id."""
    channel: str
    """Hex channel id."""
    text: str
    """Plaintext (encrypted at rest with the whole state)."""
    ts: int
    """Time written, Unix ms."""
    devices: list[str] = field(default_factory=list)
    """Hex device ids still to reach (empty: every member device)."""
    nonce: str = ""
    """Hex nonce of the chat text (its id's input; kept so a resend has the same id)."""
    reply_to: str = ""
    """Hex message id of the parent, or ""."""
    action: bool = False
    """An action (``/me``)."""


@dataclass(slots=True, kw_only=True)
class EngineState:
    """The whole engine state document."""

    server: str = ""
    """``host:port`` of the node, or ``embedded``."""
    user: str = ""
    """Our username (empty before register/login)."""
    token: str = ""
    """Hex session token."""
    token_expires_ms: int = 0
    """Session expiry."""
    device_registered: bool = False
    """Whether registerDevice succeeded."""
    access_key: str = ""
    """Hex of our delivery access key (shared with channel members)."""
    cursor: int = 0
    """Highest delivery seq processed and persisted."""
    acked: int = 0
    """Highest seq acked on the node."""
    channels: dict[str, ChannelRecord] = field(default_factory=dict)
    """Hex channel id -> record."""
    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    """Hex device id -> peer device."""
    pins: dict[str, list[str]] = field(default_factory=dict)
    """Username -> hex device ids accepted for that user (check-key)."""
    verified: dict[str, list[str]] = field(default_factory=dict)
    """Username -> hex device ids the user marked verified after comparing
    safety numbers (``check-key --verify``); a subset of ``pins``."""
    device_certs: dict[str, DeviceCertRecord] = field(default_factory=dict)
    """Hex certified device id -> the certificate a device of its account sent."""
    held: list[HeldEnvelope] = field(default_factory=list)
    """Future-epoch envelopes waiting for their commit."""
    outbox: list[OutboxEntry] = field(default_factory=list)
    """Messages waiting to be sent."""
    failed: list[int] = field(default_factory=list)
    """Local ids of messages that could not be sent."""
    send_receipts: bool = True
    """Privacy setting: send read receipts (``qpc privacy --receipts off``)."""
    send_typing: bool = True
    """Privacy setting: send typing notices (``qpc privacy --typing off``)."""

    def to_json(self) -> bytes:
        """Serialise (compact JSON)."""
        doc: dict[str, Any] = asdict(self)
        doc["v"] = _VERSION
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> EngineState:
        """Parse a document written by :meth:`to_json`.

        Raises:
            ProfileError: the document is damaged or of an unknown version.
        """
        try:
            doc = json.loads(data)
            if doc.pop("v", None) != _VERSION:
                raise ProfileError("engine state has an unsupported version")
            doc["channels"] = {k: ChannelRecord(**v) for k, v in doc["channels"].items()}
            doc["devices"] = {k: DeviceRecord(**v) for k, v in doc["devices"].items()}
            doc["device_certs"] = {
                k: DeviceCertRecord(**v) for k, v in doc.get("device_certs", {}).items()
            }
            doc["held"] = [HeldEnvelope(**h) for h in doc["held"]]
            doc["outbox"] = [OutboxEntry(**o) for o in doc["outbox"]]
            return cls(**doc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProfileError("engine state is damaged") from exc

    @classmethod
    async def load(cls, profile: Profile) -> EngineState:
        """Read the state from the profile (a fresh state if none was saved)."""
        raw = await profile.get_secret(STATE_SECRET)
        return cls() if raw is None else cls.from_json(raw)

    async def save(self, profile: Profile) -> None:
        """Write the state to the profile (encrypted, atomic)."""
        await profile.put_secret(STATE_SECRET, self.to_json())
