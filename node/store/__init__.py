"""Node persistence: the backend-neutral :class:`Store` protocol and its backends."""

from __future__ import annotations

from node.store.base import (
    CommitResult,
    DeviceRecord,
    FanoutItem,
    KeyPackageCount,
    SessionRecord,
    Store,
    StoredEnvelope,
)

__all__ = [
    "CommitResult",
    "DeviceRecord",
    "FanoutItem",
    "KeyPackageCount",
    "SessionRecord",
    "Store",
    "StoredEnvelope",
]
