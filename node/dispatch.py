"""The node's implementation of the wire handler protocol (:class:`proto.rpc.NodeHandler`).

Adapts typed wire params to service calls and service results to typed wire
results, and counts, times and classifies every call for the metrics. Every
exception leaving a handler is an :class:`~proto.errors.RpcError`; anything
else is logged here and answered as ``internal`` without details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator

from node.services.auth import AuthService
from node.services.common import Caller, NodeContext
from node.services.delivery import DeliveryService
from node.services.keys import KeysService
from node.services.misc import MiscService
from node.store import StoredEnvelope, WelcomeParts
from proto.codec import (
    AckParams,
    AckResult,
    CommitChannelParams,
    CommitChannelResult,
    Device,
    EnqueueCommitParams,
    EnqueueCommitResult,
    EnqueueParams,
    EnqueueResult,
    Envelope,
    FetchHybridKeyParams,
    FetchHybridKeyResult,
    FetchKeyPackageParams,
    FetchKeyPackageResult,
    FetchParams,
    FetchResult,
    FetchWaitParams,
    FetchWaitResult,
    FetchWelcomeParams,
    FetchWelcomeResult,
    HealthParams,
    HealthResult,
    KeyPackageCountParams,
    KeyPackageCountResult,
    ListDevicesParams,
    ListDevicesResult,
    LoginFinishParams,
    LoginFinishResult,
    LoginStartParams,
    LoginStartResult,
    LogoutParams,
    LogoutResult,
    PingParams,
    PingResult,
    PostChannelParams,
    PostChannelResult,
    RegisterDeviceParams,
    RegisterDeviceResult,
    RegisterFinishParams,
    RegisterFinishResult,
    RegisterStartParams,
    RegisterStartResult,
    SetChannelKeyParams,
    SetChannelKeyResult,
    UnlinkDeviceParams,
    UnlinkDeviceResult,
    UploadKeyPackagesParams,
    UploadKeyPackagesResult,
    WhoamiParams,
    WhoamiResult,
)
from proto.errors import InternalError, RpcError
from proto.rpc import CallContext

log = logging.getLogger(__name__)


def _envelopes(stored: list[StoredEnvelope]) -> tuple[Envelope, ...]:
    return tuple(Envelope(seq=e.seq, channel_id=e.channel_id, data=e.data) for e in stored)


class NodeDispatcher:
    """Implements :class:`proto.rpc.NodeHandler` on top of the services."""

    def __init__(
        self,
        ctx: NodeContext,
        auth: AuthService,
        keys: KeysService,
        delivery: DeliveryService,
        misc: MiscService,
    ) -> None:
        """Args: the node context and its services."""
        self._ctx = ctx
        self.auth = auth
        self.keys = keys
        self.delivery = delivery
        self.misc = misc

    @classmethod
    async def create(cls, ctx: NodeContext) -> NodeDispatcher:
        """Build every service (loads the OPAQUE secrets from the store)."""
        return cls(
            ctx,
            await AuthService.create(ctx),
            KeysService(ctx),
            DeliveryService(ctx),
            MiscService(ctx),
        )

    @staticmethod
    def _caller(ctx: CallContext) -> Caller:
        return Caller(token=ctx.auth, address=ctx.peer[0])

    @contextlib.contextmanager
    def _observe(self, method: str, *, timed: bool = True) -> Iterator[None]:
        metrics = self._ctx.metrics
        started = time.perf_counter()
        try:
            yield
        except RpcError as exc:
            metrics.errors.labels(method, exc.code.name.lower()).inc()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            metrics.errors.labels(method, "internal").inc()
            log.exception("%s failed", method)
            raise InternalError("internal error") from exc
        finally:
            metrics.observe_call(method, time.perf_counter() - started if timed else None)

    # ------------------------------------------------------------------ misc

    async def health(self, ctx: CallContext, params: HealthParams) -> HealthResult:
        """Node status."""
        with self._observe(ctx.method):
            h = await self.misc.health()
            return HealthResult(
                status=h.status,
                version=h.version,
                uptime_ms=h.uptime_ms,
                store_backend=h.store_backend,
            )

    async def ping(self, ctx: CallContext, params: PingParams) -> PingResult:
        """Echo."""
        with self._observe(ctx.method):
            payload, now_ms = self.misc.ping(params.payload)
            return PingResult(payload=payload, server_time_ms=now_ms)

    async def whoami(self, ctx: CallContext, params: WhoamiParams) -> WhoamiResult:
        """The session's identity."""
        with self._observe(ctx.method):
            w = await self.misc.whoami(self._caller(ctx))
            return WhoamiResult(
                username=w.username,
                device_id=w.device_id,
                device_registered=w.device_registered,
                session_expires_ms=w.session_expires_ms,
            )

    # ------------------------------------------------------------------ auth

    async def register_start(
        self, ctx: CallContext, params: RegisterStartParams
    ) -> RegisterStartResult:
        """OPAQUE registration step 1."""
        with self._observe(ctx.method):
            response = await self.auth.register_start(
                self._caller(ctx), params.username, params.request
            )
            return RegisterStartResult(response=response)

    async def register_finish(
        self, ctx: CallContext, params: RegisterFinishParams
    ) -> RegisterFinishResult:
        """OPAQUE registration step 2."""
        with self._observe(ctx.method):
            await self.auth.register_finish(self._caller(ctx), params.username, params.upload)
            return RegisterFinishResult()

    async def login_start(self, ctx: CallContext, params: LoginStartParams) -> LoginStartResult:
        """OPAQUE login step 1."""
        with self._observe(ctx.method):
            login_id, response = await self.auth.login_start(
                self._caller(ctx), params.username, params.request
            )
            return LoginStartResult(login_id=login_id, response=response)

    async def login_finish(self, ctx: CallContext, params: LoginFinishParams) -> LoginFinishResult:
        """OPAQUE login step 2: a session token."""
        with self._observe(ctx.method):
            token, expires_ms = await self.auth.login_finish(
                self._caller(ctx), params.login_id, params.finalization, params.device_id
            )
            return LoginFinishResult(token=token, expires_ms=expires_ms)

    async def logout(self, ctx: CallContext, params: LogoutParams) -> LogoutResult:
        """End the session."""
        with self._observe(ctx.method):
            session = await self._ctx.authenticate(self._caller(ctx))
            await self.auth.logout(session)
            return LogoutResult()

    # ------------------------------------------------------------------ keys

    async def register_device(
        self, ctx: CallContext, params: RegisterDeviceParams
    ) -> RegisterDeviceResult:
        """Register the token's device."""
        with self._observe(ctx.method):
            await self.keys.register_device(
                self._caller(ctx), params.hybrid_key, params.signature, params.delivery_access_key
            )
            return RegisterDeviceResult()

    async def upload_key_packages(
        self, ctx: CallContext, params: UploadKeyPackagesParams
    ) -> UploadKeyPackagesResult:
        """Upload a batch of KeyPackages."""
        with self._observe(ctx.method):
            stock = await self.keys.upload_key_packages(
                self._caller(ctx), params.packages, params.last_resort
            )
            return UploadKeyPackagesResult(stock=stock)

    async def fetch_key_package(
        self, ctx: CallContext, params: FetchKeyPackageParams
    ) -> FetchKeyPackageResult:
        """Consume one KeyPackage."""
        with self._observe(ctx.method):
            package, last_resort = await self.keys.fetch_key_package(
                self._caller(ctx), params.username, params.device_id
            )
            return FetchKeyPackageResult(package=package, last_resort=last_resort)

    async def key_package_count(
        self, ctx: CallContext, params: KeyPackageCountParams
    ) -> KeyPackageCountResult:
        """The device's KeyPackage stock."""
        with self._observe(ctx.method):
            c = await self.keys.key_package_count(self._caller(ctx))
            return KeyPackageCountResult(count=c.count, has_last_resort=c.has_last_resort)

    async def list_devices(self, ctx: CallContext, params: ListDevicesParams) -> ListDevicesResult:
        """A user's devices."""
        with self._observe(ctx.method):
            devices = await self.keys.list_devices(self._caller(ctx), params.username)
            return ListDevicesResult(
                devices=tuple(
                    Device(device_id=d.device_id, hybrid_key=d.hybrid_key, signature=d.signature)
                    for d in devices
                )
            )

    async def fetch_hybrid_key(
        self, ctx: CallContext, params: FetchHybridKeyParams
    ) -> FetchHybridKeyResult:
        """A device's hybrid key."""
        with self._observe(ctx.method):
            d = await self.keys.fetch_hybrid_key(self._caller(ctx), params.device_id)
            return FetchHybridKeyResult(hybrid_key=d.hybrid_key, signature=d.signature)

    # -------------------------------------------------------------- delivery

    async def enqueue(self, ctx: CallContext, params: EnqueueParams) -> EnqueueResult:
        """Enqueue one payload."""
        with self._observe(ctx.method):
            seq = await self.delivery.enqueue(
                self._caller(ctx),
                params.recipient,
                params.channel_id,
                params.payload,
                params.access_key,
            )
            return EnqueueResult(seq=seq)

    async def enqueue_commit(
        self, ctx: CallContext, params: EnqueueCommitParams
    ) -> EnqueueCommitResult:
        """Epoch-checked commit fan-out."""
        with self._observe(ctx.method):
            result = await self.delivery.enqueue_commit(
                self._caller(ctx),
                params.channel_id,
                params.epoch,
                [(r.recipient, r.payload) for r in params.fanout],
            )
            return EnqueueCommitResult(seqs=result.seqs, new_epoch=result.new_epoch)

    async def fetch(self, ctx: CallContext, params: FetchParams) -> FetchResult:
        """Envelopes after a cursor."""
        with self._observe(ctx.method):
            stored = await self.delivery.fetch(self._caller(ctx), params.after_seq, params.limit)
            return FetchResult(envelopes=_envelopes(stored))

    async def fetch_wait(
        self, ctx: CallContext, params: FetchWaitParams
    ) -> AsyncIterator[FetchWaitResult]:
        """Streaming subscription to the caller's inbox."""
        with self._observe(ctx.method, timed=False):
            batches = await self.delivery.fetch_wait(
                self._caller(ctx), params.after_seq, params.timeout_ms
            )
        try:
            async for batch in batches:
                yield FetchWaitResult(envelopes=_envelopes(batch))
        except RpcError as exc:
            self._ctx.metrics.errors.labels(ctx.method, exc.code.name.lower()).inc()
            raise
        finally:
            await batches.aclose()

    async def ack(self, ctx: CallContext, params: AckParams) -> AckResult:
        """Delete envelopes up to a seq."""
        with self._observe(ctx.method):
            await self.delivery.ack(self._caller(ctx), params.upto_seq)
            return AckResult()

    async def post_channel(self, ctx: CallContext, params: PostChannelParams) -> PostChannelResult:
        """One channel message, stored once."""
        with self._observe("postChannel"):
            stored = await self.delivery.post_channel(
                self._caller(ctx),
                params.channel_id,
                params.post_key,
                params.recipients,
                params.payload,
                recipient_ids=params.recipient_ids,
            )
            return PostChannelResult(stored=stored)

    async def commit_channel(
        self, ctx: CallContext, params: CommitChannelParams
    ) -> CommitChannelResult:
        """Epoch- and capability-checked commit, stored once."""
        with self._observe("commitChannel"):
            new_epoch = await self.delivery.commit_channel(
                self._caller(ctx),
                params.channel_id,
                params.epoch,
                params.post_key,
                params.commit,
                params.members,
                params.welcome,
                params.joiners,
                WelcomeParts(group_info=params.group_info, entries=params.joiner_entries)
                if params.group_info
                else None,
                ratchet_tree=params.ratchet_tree,
                tree_delta=params.tree_delta,
                member_ids=params.member_ids,
            )
            return CommitChannelResult(new_epoch=new_epoch)

    async def set_channel_key(
        self, ctx: CallContext, params: SetChannelKeyParams
    ) -> SetChannelKeyResult:
        """The committer sets the new epoch's post capability hash."""
        with self._observe("setChannelKey"):
            await self.delivery.set_channel_key(
                self._caller(ctx), params.channel_id, params.epoch, params.key_hash
            )
            return SetChannelKeyResult()

    async def fetch_welcome(
        self, ctx: CallContext, params: FetchWelcomeParams
    ) -> FetchWelcomeResult:
        """A joiner fetches the shared parts of its Welcome (by reference)."""
        with self._observe("fetchWelcome"):
            found = await self.delivery.fetch_welcome(
                self._caller(ctx), params.channel_id, params.epoch
            )
            return FetchWelcomeResult(
                group_info=found.group_info,
                ratchet_tree=found.ratchet_tree,
                tree_deltas=found.tree_deltas,
            )

    async def unlink_device(
        self, ctx: CallContext, params: UnlinkDeviceParams
    ) -> UnlinkDeviceResult:
        """Remove another device of the caller's account."""
        with self._observe(ctx.method):
            await self.keys.unlink_device(self._caller(ctx), params.device_id)
            return UnlinkDeviceResult()
