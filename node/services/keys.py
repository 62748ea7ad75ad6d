"""Devices, their hybrid keys and their MLS KeyPackages."""

from __future__ import annotations

import logging

from node.services.common import (
    Caller,
    NodeContext,
    check_blob,
    check_device_id,
    key_hash,
    normalize_username,
)
from node.store import DeviceRecord, KeyPackageCount
from proto.crypto.identity import verify_device_registration
from proto.errors import (
    BadRequest,
    BadSignature,
    InvalidSignature,
    LimitExceeded,
    NotFound,
    PermissionDenied,
)

log = logging.getLogger(__name__)

HYBRID_KEY_BYTES = 1216
SIGNATURE_BYTES = 64
ACCESS_KEY_BYTES = 32


class KeysService:
    """registerDevice, KeyPackages, device directory."""

    def __init__(self, ctx: NodeContext) -> None:
        """Args: the node context."""
        self._ctx = ctx

    async def register_device(
        self, caller: Caller, hybrid_key: bytes, signature: bytes, access_key: bytes
    ) -> None:
        """Register (or re-key) the token's device after checking its signature.

        Raises:
            BadRequest: a field has the wrong length.
            InvalidSignature: the signature does not verify (nothing is stored).
            AlreadyExists: another account holds this device id.
        """
        session = await self._ctx.authenticate(caller)
        if len(hybrid_key) != HYBRID_KEY_BYTES:
            raise BadRequest(f"hybridKey must be {HYBRID_KEY_BYTES} bytes")
        if len(signature) != SIGNATURE_BYTES:
            raise BadRequest(f"signature must be {SIGNATURE_BYTES} bytes")
        if access_key and len(access_key) != ACCESS_KEY_BYTES:
            raise BadRequest(f"deliveryAccessKey must be {ACCESS_KEY_BYTES} bytes or empty")
        self._ctx.limit_write(caller, session.username)
        try:
            verify_device_registration(session.device_id, hybrid_key, signature)
        except BadSignature:
            raise InvalidSignature("device signature does not verify") from None
        device = DeviceRecord(
            device_id=session.device_id,
            username=session.username,
            hybrid_key=hybrid_key,
            signature=signature,
            access_key_hash=key_hash(access_key) if access_key else None,
        )
        await self._ctx.store.upsert_device(device, self._ctx.now_ms())
        log.info("device registered")

    async def unlink_device(self, caller: Caller, device_id: bytes) -> None:
        """Remove another device of the caller's account (docs/PROTOCOL.md, "Linked devices").

        Raises:
            PermissionDenied: ``device_id`` is the caller's own device (log out instead).
            NotFound: the account holds no such device.
        """
        session, _ = await self._ctx.authenticate_device(caller)
        check_device_id(device_id)
        if device_id == session.device_id:
            raise PermissionDenied("a device cannot unlink itself; unlink it from another device")
        self._ctx.limit_write(caller, session.username)
        if not await self._ctx.store.delete_device(session.username, device_id):
            raise NotFound("no such device in this account")
        log.info("device unlinked")

    async def upload_key_packages(
        self, caller: Caller, packages: tuple[bytes, ...], last_resort: bytes
    ) -> int:
        """Store a batch of one-time KeyPackages (and a new last-resort one); return the stock."""
        session, device = await self._ctx.authenticate_device(caller)
        limits = self._ctx.config
        if len(packages) > limits.max_key_packages_per_upload:
            raise LimitExceeded(
                f"at most {limits.max_key_packages_per_upload} KeyPackages per upload"
            )
        if not packages and not last_resort:
            raise BadRequest("nothing to upload")
        for package in packages:
            check_blob(package, limits.max_key_package_bytes, "KeyPackage")
        if last_resort:
            check_blob(last_resort, limits.max_key_package_bytes, "lastResort")
        self._ctx.limit_write(caller, session.username)
        return await self._ctx.store.add_key_packages(
            device.device_id, packages, last_resort or None, limits.max_key_package_stock
        )

    async def fetch_key_package(
        self, caller: Caller, username: str, device_id: bytes
    ) -> tuple[bytes, bool]:
        """Consume one KeyPackage of ``username``'s device; ``(package, isLastResort)``."""
        session = await self._ctx.authenticate(caller)
        name = normalize_username(username)
        check_device_id(device_id)
        self._ctx.limit_write(caller, session.username)
        device = await self._ctx.store.get_device(device_id)
        if device is None or device.username != name:
            raise NotFound("no such device")
        found = await self._ctx.store.consume_key_package(device_id)
        if found is None:
            raise NotFound("the device has no KeyPackages")
        return found

    async def key_package_count(self, caller: Caller) -> KeyPackageCount:
        """The token's device's stock."""
        _, device = await self._ctx.authenticate_device(caller)
        return await self._ctx.store.key_package_count(device.device_id)

    async def list_devices(self, caller: Caller, username: str) -> list[DeviceRecord]:
        """A user's devices (``notFound`` for an unknown user)."""
        await self._ctx.authenticate(caller)
        name = normalize_username(username)
        devices = await self._ctx.store.list_devices(name)
        if not devices and not await self._ctx.store.account_exists(name):
            raise NotFound("no such user")
        return devices

    async def fetch_hybrid_key(self, caller: Caller, device_id: bytes) -> DeviceRecord:
        """A device's hybrid key and signature."""
        await self._ctx.authenticate(caller)
        check_device_id(device_id)
        device = await self._ctx.store.get_device(device_id)
        if device is None:
            raise NotFound("no such device")
        return device
