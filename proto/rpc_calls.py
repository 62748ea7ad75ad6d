"""Typed per-method wrappers shared by :class:`proto.rpc_client.RpcClient`.

Each method builds the params dataclass from keyword arguments, makes the call
and returns the method's result dataclass (or raises the node's
:class:`proto.errors.RpcError` subclass). ``auth`` overrides the client's token
for one call (``b""`` = unauthenticated, e.g. sealed-sender ``enqueue``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TypeVar

from proto import codec as c
from proto.errors import ProtocolError

T = TypeVar("T")


def _expect(result: c.Result, cls: type[T]) -> T:
    if not isinstance(result, cls):
        raise ProtocolError(f"expected {cls.__name__}, node sent {type(result).__name__}")
    return result


class NodeCalls(abc.ABC):
    """One ``async`` method per unary call of ``docs/PROTOCOL.md``."""

    @abc.abstractmethod
    async def call(self, params: c.Params, *, auth: bytes | None = None) -> c.Result:
        """Make one call (the connection class implements it)."""

    async def health(self, *, auth: bytes | None = None) -> c.HealthResult:
        """``health``: ``health`` has no parameters."""
        params = c.HealthParams()
        return _expect(await self.call(params, auth=auth), c.HealthResult)

    async def ping(self, *, payload: bytes = b"", auth: bytes | None = None) -> c.PingResult:
        """``ping``: Echo request (payload at most 1 KiB)."""
        params = c.PingParams(payload=payload)
        return _expect(await self.call(params, auth=auth), c.PingResult)

    async def whoami(self, *, auth: bytes | None = None) -> c.WhoamiResult:
        """``whoami``: ``whoami`` has no parameters."""
        params = c.WhoamiParams()
        return _expect(await self.call(params, auth=auth), c.WhoamiResult)

    async def register_start(
        self, *, username: str, request: bytes, auth: bytes | None = None
    ) -> c.RegisterStartResult:
        """``registerStart``: OPAQUE registration, first message."""
        params = c.RegisterStartParams(username=username, request=request)
        return _expect(await self.call(params, auth=auth), c.RegisterStartResult)

    async def register_finish(
        self, *, username: str, upload: bytes, auth: bytes | None = None
    ) -> c.RegisterFinishResult:
        """``registerFinish``: OPAQUE registration upload."""
        params = c.RegisterFinishParams(username=username, upload=upload)
        return _expect(await self.call(params, auth=auth), c.RegisterFinishResult)

    async def login_start(
        self, *, username: str, request: bytes, auth: bytes | None = None
    ) -> c.LoginStartResult:
        """``loginStart``: OPAQUE login, first message."""
        params = c.LoginStartParams(username=username, request=request)
        return _expect(await self.call(params, auth=auth), c.LoginStartResult)

    async def login_finish(
        self, *, login_id: bytes, finalization: bytes, device_id: bytes, auth: bytes | None = None
    ) -> c.LoginFinishResult:
        """``loginFinish``: OPAQUE finalization plus the device the token is bound to."""
        params = c.LoginFinishParams(
            login_id=login_id, finalization=finalization, device_id=device_id
        )
        return _expect(await self.call(params, auth=auth), c.LoginFinishResult)

    async def logout(self, *, auth: bytes | None = None) -> c.LogoutResult:
        """``logout``: ``logout`` has no parameters."""
        params = c.LogoutParams()
        return _expect(await self.call(params, auth=auth), c.LogoutResult)

    async def register_device(
        self,
        *,
        hybrid_key: bytes,
        signature: bytes,
        delivery_access_key: bytes = b"",
        auth: bytes | None = None,
    ) -> c.RegisterDeviceResult:
        """``registerDevice``: Register the token's device with its hybrid key."""
        params = c.RegisterDeviceParams(
            hybrid_key=hybrid_key, signature=signature, delivery_access_key=delivery_access_key
        )
        return _expect(await self.call(params, auth=auth), c.RegisterDeviceResult)

    async def upload_key_packages(
        self, *, packages: Sequence[bytes], last_resort: bytes = b"", auth: bytes | None = None
    ) -> c.UploadKeyPackagesResult:
        """``uploadKeyPackages``: a batch; empty ``last_resort`` keeps the current one."""
        params = c.UploadKeyPackagesParams(packages=tuple(packages), last_resort=last_resort)
        return _expect(await self.call(params, auth=auth), c.UploadKeyPackagesResult)

    async def fetch_key_package(
        self, *, username: str, device_id: bytes, auth: bytes | None = None
    ) -> c.FetchKeyPackageResult:
        """``fetchKeyPackage``: Consume one KeyPackage of a user's device."""
        params = c.FetchKeyPackageParams(username=username, device_id=device_id)
        return _expect(await self.call(params, auth=auth), c.FetchKeyPackageResult)

    async def key_package_count(self, *, auth: bytes | None = None) -> c.KeyPackageCountResult:
        """``keyPackageCount``: ``keyPackageCount`` has no parameters."""
        params = c.KeyPackageCountParams()
        return _expect(await self.call(params, auth=auth), c.KeyPackageCountResult)

    async def list_devices(
        self, *, username: str, auth: bytes | None = None
    ) -> c.ListDevicesResult:
        """``listDevices``: List a user's devices."""
        params = c.ListDevicesParams(username=username)
        return _expect(await self.call(params, auth=auth), c.ListDevicesResult)

    async def fetch_hybrid_key(
        self, *, device_id: bytes, auth: bytes | None = None
    ) -> c.FetchHybridKeyResult:
        """``fetchHybridKey``: Fetch a device's hybrid key."""
        params = c.FetchHybridKeyParams(device_id=device_id)
        return _expect(await self.call(params, auth=auth), c.FetchHybridKeyResult)

    async def enqueue(
        self,
        *,
        recipient: bytes,
        channel_id: bytes,
        payload: bytes,
        access_key: bytes = b"",
        auth: bytes | None = None,
    ) -> c.EnqueueResult:
        """``enqueue``: Enqueue one payload; ``access_key`` authorises sealed-sender calls."""
        params = c.EnqueueParams(
            recipient=recipient, channel_id=channel_id, payload=payload, access_key=access_key
        )
        return _expect(await self.call(params, auth=auth), c.EnqueueResult)

    async def enqueue_commit(
        self,
        *,
        channel_id: bytes,
        epoch: int,
        fanout: Sequence[c.Recipient],
        auth: bytes | None = None,
    ) -> c.EnqueueCommitResult:
        """``enqueueCommit``: Commit fan-out, accepted only at the channel's current epoch."""
        params = c.EnqueueCommitParams(channel_id=channel_id, epoch=epoch, fanout=tuple(fanout))
        return _expect(await self.call(params, auth=auth), c.EnqueueCommitResult)

    async def fetch(
        self, *, after_seq: int, limit: int, auth: bytes | None = None
    ) -> c.FetchResult:
        """``fetch``: Fetch envelopes after a cursor."""
        params = c.FetchParams(after_seq=after_seq, limit=limit)
        return _expect(await self.call(params, auth=auth), c.FetchResult)

    async def ack(self, *, upto_seq: int, auth: bytes | None = None) -> c.AckResult:
        """``ack``: Delete envelopes up to and including ``upto_seq``."""
        params = c.AckParams(upto_seq=upto_seq)
        return _expect(await self.call(params, auth=auth), c.AckResult)

    async def post_channel(
        self,
        *,
        channel_id: bytes,
        post_key: bytes,
        recipients: Sequence[bytes],
        payload: bytes,
        auth: bytes | None = b"",
    ) -> c.PostChannelResult:
        """``postChannel``: one MLS message stored once; sent without a token by default."""
        params = c.PostChannelParams(
            channel_id=channel_id, post_key=post_key, recipients=tuple(recipients), payload=payload
        )
        return _expect(await self.call(params, auth=auth), c.PostChannelResult)

    async def commit_channel(
        self,
        *,
        channel_id: bytes,
        epoch: int,
        post_key: bytes,
        commit: bytes,
        members: Sequence[bytes],
        welcome: bytes = b"",
        joiners: Sequence[bytes] = (),
        auth: bytes | None = None,
    ) -> c.CommitChannelResult:
        """``commitChannel``: epoch-checked commit and Welcome, each stored once."""
        params = c.CommitChannelParams(
            channel_id=channel_id,
            epoch=epoch,
            post_key=post_key,
            commit=commit,
            members=tuple(members),
            welcome=welcome,
            joiners=tuple(joiners),
        )
        return _expect(await self.call(params, auth=auth), c.CommitChannelResult)

    async def set_channel_key(
        self, *, channel_id: bytes, epoch: int, key_hash: bytes, auth: bytes | None = None
    ) -> c.SetChannelKeyResult:
        """``setChannelKey``: the committer of ``epoch`` sets its post capability hash."""
        params = c.SetChannelKeyParams(channel_id=channel_id, epoch=epoch, key_hash=key_hash)
        return _expect(await self.call(params, auth=auth), c.SetChannelKeyResult)
