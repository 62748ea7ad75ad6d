"""Node persistence: the backend-neutral :class:`Store` protocol and its backends."""

from __future__ import annotations

from node.store.base import (
    ChannelCommitResult,
    CommitResult,
    DeviceRecord,
    FanoutItem,
    KeyPackageCount,
    SessionRecord,
    Store,
    StoredEnvelope,
    TreePart,
    WelcomeParts,
    WelcomeTree,
)

__all__ = [
    "ChannelCommitResult",
    "CommitResult",
    "DeviceRecord",
    "FanoutItem",
    "KeyPackageCount",
    "SessionRecord",
    "Store",
    "StoredEnvelope",
    "TreePart",
    "WelcomeParts",
    "WelcomeTree",
]
