"""The session part: profile, node connection, account and device, keys of peers.

:class:`Session` owns the unlocked :class:`~tui.client.profile.Profile`, the
:class:`~tui.client.state.EngineState` document (loaded once, then the same
object for the engine's lifetime), the MLS client and the RPC connection
(embedded node or ``--server``, TOFU pin, reconnect). The other parts
(:mod:`tui.client.delivery`, :mod:`tui.client.sending`,
:mod:`tui.client.channels`) receive it and call its methods; it calls none
of theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from proto import files, mls, tls
from proto.codec import Device
from proto.crypto import opaque
from proto.crypto.atrest import DEFAULT_PARAMS, KdfParams
from proto.crypto.envelope import ContentType, HybridPrivateKey, HybridPublicKey, seal
from proto.crypto.identity import IdentityKey, fingerprint, verify_device_registration
from proto.errors import (
    AlreadyExists,
    BadSignature,
    ConfigError,
    ConnectionLost,
    InvalidKey,
    LocalError,
    ProfileError,
    QpcError,
    RateLimited,
    TransportError,
)
from proto.rpc_client import ClientConfig, RpcClient
from tui.client import api
from tui.client.localnode import NodeLease, ensure_local_node, read_local_node
from tui.client.profile import ChatMessage, Profile
from tui.client.state import ChannelRecord, DeviceRecord, EngineState

__all__ = ["EMBEDDED", "EngineConfig", "Session", "normalize_user"]

log = logging.getLogger("tui.client")
T = TypeVar("T")

EMBEDDED = "embedded"
"""``server`` value meaning the shared local node."""
PINS_FILE = "pins.json"


def parse_servers(server: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]`` -> [(host, port), ...] (IPv6 literals in brackets).

    Several addresses name the processes or machines of one deployment (one
    TLS key, pinned under the first): the connection moves to the next when
    one cannot be reached or dies.

    Raises:
        ConfigError: an entry is not ``HOST:PORT``.
    """
    out = []
    for entry in server.split(","):
        host, sep, port_text = entry.strip().rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"the server must be HOST:PORT[,HOST:PORT...], not {server!r}")
        out.append((host.strip("[]"), int(port_text)))
    return out


"""TOFU pin store of node keys inside the profile."""
LOCK_FILE = "engine.lock"

LOCAL_NODE_WATCH_S = 0.5
"""How often an engine on the embedded node checks that the node still runs."""
"""Held while an engine has the profile open (one writer per profile)."""


def normalize_user(user: str) -> str:
    """The node's username normalisation (NFKC + case fold)."""
    return unicodedata.normalize("NFKC", user).casefold().strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Settings of one engine; every field has a default except the profile."""

    profile_dir: Path
    """The profile directory."""
    server: str | None = None
    """``host:port``; None = the profile's server, else the embedded local node."""
    trust_new_key: bool = False
    """Accept (and re-pin) a changed node key."""
    kdf: KdfParams = DEFAULT_PARAMS
    """Argon2id cost for a new profile (tests use ``FAST_TEST_PARAMS``)."""
    keypackage_batch: int = 20
    """KeyPackages uploaded per refill."""
    keypackage_low: int = 5
    """Refill when the node holds fewer than this."""
    sealed_sender: bool = True
    """Send application messages with the recipient's access key, no token."""
    self_update_s: float = 7 * 24 * 3600.0
    """Commit a self-update in a channel when our last one is older than this."""
    reconnect_wait_s: float = 3.0
    """How long a call waits for the node before the message goes to the outbox."""
    dead_timeout_s: float = 6.0
    """Declare the node dead after this long without a packet from it (the
    keepalive; ``ClientConfig.dead_timeout``). bench/groups.py runs hundreds
    of devices on one event loop per worker and gives them longer."""
    lock_wait_s: float = 30.0
    """How long to wait for another engine holding the profile."""
    data_dir: Path | None = None
    """Where the embedded node lives (default: ``QPC_DATA_DIR`` / platform dir)."""
    local_node_args: tuple[str, ...] = field(default_factory=tuple)
    """Extra ``qpc-node`` flags when the engine starts the embedded node."""


@functools.lru_cache(maxsize=4096)
def _parsed_hybrid_key(hex_key: str) -> HybridPublicKey:
    """A verified device's X-Wing key, parsed once (parsing checks it, ~0.1 ms)."""
    return HybridPublicKey.from_bytes(bytes.fromhex(hex_key))


class _WaitBudget:
    """Waits out ``rateLimited`` answers of one register/login, within a total budget.

    Only the first step of an attempt (``registerStart``, ``loginStart``) is
    charged by the node, so only those are retried; waiting the node's
    ``retryAfterMs`` is enough for the whole attempt to go through.
    """

    def __init__(self, on_wait: api.RateLimitWait | None) -> None:
        self._on_wait = on_wait
        self._left = api.MAX_RATE_LIMIT_WAIT_S

    async def retry(self, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                return await call()
            except RateLimited as exc:
                wait = max(exc.retry_after_ms, 50) / 1000
                if wait > self._left:
                    raise
                self._left -= wait
                if self._on_wait is not None:
                    self._on_wait(wait)
                log.info("rate limited by the node; retrying in %.1f s", wait)
                await asyncio.sleep(wait)


class Session:
    """Profile, state, MLS client and node connection (see module docstring)."""

    def __init__(self, config: EngineConfig, profile: Profile, lock: IO[str]) -> None:
        """Internal: use :meth:`tui.client.engine.Engine.open`."""
        self.config = config
        self.profile = profile
        self.state = EngineState()
        self._lock_file = lock
        self._rpc: RpcClient | None = None
        self._server_addr = ""
        self._identity: IdentityKey | None = None
        self._hybrid: HybridPrivateKey | None = None
        self._mls: mls.Client | None = None
        self.mutex = asyncio.Lock()
        """Serialises everything touching MLS state or the engine state."""
        self._lease: NodeLease | None = None
        self._watch: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def acquire_lock(path: Path, wait_s: float) -> IO[str]:
        """Hold the profile's lock file (one engine per profile), waiting up to ``wait_s``."""
        files.private_dir(path)
        fh = files.open_private(path / LOCK_FILE, "a")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fh
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.close()
                    raise ProfileError("the profile is in use by another qpc process") from None
                time.sleep(0.05)

    async def load(self) -> None:
        """Load the state document, device keys and MLS client (once, before use)."""
        self.state = await EngineState.load(self.profile)
        self._identity = await self.profile.get_identity()
        self._hybrid = await self.profile.get_hybrid_key()
        if self.profile.mls_state_path.exists() and self.state.user:
            self._mls = await asyncio.to_thread(
                mls.Client.open, str(self.profile.mls_state_path), self.profile.mls_storage_key
            )
            # Receipts of batches whose history committed (a crash came before
            # they were forgotten); later ones are replayed by the inbox.
            await asyncio.to_thread(self._mls.forget_receipts, self.state.cursor)
            # A crash can leave a joined group without its record: recreate it.
            for gid in self._mls.group_ids():
                self.state.channels.setdefault(gid.hex(), ChannelRecord())

    async def close(self) -> None:
        """Close the connection, the MLS client and the profile; release the lock."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._lease is not None:
            await asyncio.to_thread(self._lease.release)
            self._lease = None
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        if self._mls is not None:
            self._mls.close()
            self._mls = None
        await self.profile.close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    async def save(self) -> None:
        """Persist the engine state (encrypted); returns once committed.

        Concurrent saves and appends share one group commit (see
        ``tui.client.dbwriter``) and apply in call order.
        """
        await self.state.save(self.profile)

    async def append_message(self, msg: ChatMessage) -> int:
        """Append to the encrypted history; returns the local id once committed."""
        return await self.profile.append_message(msg)

    async def list_messages(
        self, channel: bytes, *, limit: int, before_id: int | None
    ) -> list[ChatMessage]:
        """A page of a channel's history, oldest first."""
        return await self.profile.list_messages(channel, limit=limit, before_id=before_id)

    async def search_messages(
        self, query: str, channels: list[bytes], *, channel: bytes | None, limit: int
    ) -> list[ChatMessage]:
        """Stored messages containing every word of ``query``, newest first."""
        return await self.profile.search_messages(query, channels, channel_id=channel, limit=limit)

    # ------------------------------------------------------------------ connection

    @property
    def server(self) -> str:
        """Configured server (``host:port`` or ``embedded``)."""
        return self.config.server or self.state.server or EMBEDDED

    def server_info(self) -> api.ServerInfo:
        """The node's ``host:port`` and whether it is the embedded local node (no I/O)."""
        embedded = self.server == EMBEDDED
        address = self._server_addr
        if not address and not embedded:
            address = self.server
        return api.ServerInfo(address=address, embedded=embedded)

    @property
    def server_addr(self) -> str:
        """``host:port`` of the current connection ("" before the first)."""
        return self._server_addr

    async def rpc(self) -> RpcClient:
        """The node connection (created on first use; reconnects by itself).

        On the embedded node, while the connection is down, the node is
        ensured again (:func:`ensure_local_node`: restarted if it died, under
        the start lock, so of several clients noticing only the first starts
        it); a node now on another port (or with another key) replaces the
        connection, which then reconnects there. While connected, a watcher
        (:meth:`_watch_local_node`) notices the node's death within
        ``LOCAL_NODE_WATCH_S`` instead of ``dead_timeout``.
        """
        current = self._rpc
        if current is not None and not current.connected and self.server == EMBEDDED:
            node = await asyncio.to_thread(
                ensure_local_node, self.config.data_dir, extra_args=self.config.local_node_args
            )
            cfg = current.config
            if self._rpc is current and (
                (node.host, node.port) != (cfg.host, cfg.port)
                or node.fingerprint != cfg.trust.fingerprint
            ):
                log.info("the local node moved to %s; reconnecting there", node.address)
                self._rpc = None
                await current.close()
        if self._rpc is not None:
            return self._rpc
        server = self.server
        alternates: tuple[tuple[str, int], ...] = ()
        if server == EMBEDDED:
            node = await asyncio.to_thread(
                ensure_local_node, self.config.data_dir, extra_args=self.config.local_node_args
            )
            if self._lease is None:
                self._lease = NodeLease(self.config.data_dir)
                await asyncio.to_thread(self._lease.acquire)
            if self._watch is None:
                self._watch = asyncio.get_running_loop().create_task(self._watch_local_node())
            host, port = node.host, node.port
            trust = tls.TrustConfig(fingerprint=node.fingerprint)
        else:
            addresses = parse_servers(server)
            (host, port), alternates = addresses[0], tuple(addresses[1:])
            trust = tls.TrustConfig(
                pin_store=self.profile.path / PINS_FILE, trust_new_key=self.config.trust_new_key
            )
        self._server_addr = f"{host}:{port}"
        cfg = ClientConfig(
            host=host,
            port=port,
            alternates=alternates,
            trust=trust,
            reconnect_wait=self.config.reconnect_wait_s,
            connect_timeout=min(5.0, self.config.reconnect_wait_s),
            dead_timeout=self.config.dead_timeout_s,
        )
        made = self._made_rpc()
        if made is not None:  # another caller made one while we awaited the node
            return made
        self._rpc = RpcClient(cfg, token=bytes.fromhex(self.state.token))
        return self._rpc

    def _made_rpc(self) -> RpcClient | None:
        """The connection object as it is now (read again after an await)."""
        return self._rpc

    async def _watch_local_node(self) -> None:
        """While this engine uses the embedded node: notice its death, restart it.

        A lock probe every ``LOCAL_NODE_WATCH_S`` (no I/O beyond an ``open``
        and a non-blocking ``flock``). On death the connection is dropped at
        once (the live subscription reports "reconnecting") and the node is
        ensured again, which restarts it unless another client already did.
        """
        base = self.config.data_dir
        while True:
            await asyncio.sleep(LOCAL_NODE_WATCH_S)
            if read_local_node(base) is not None:
                continue
            rpc = self._rpc
            if rpc is not None:
                rpc.drop("the local node stopped")
            log.info("the local node stopped; starting it again")
            try:
                await asyncio.to_thread(
                    ensure_local_node, base, extra_args=self.config.local_node_args
                )
            except QpcError as exc:
                log.warning("could not restart the local node: %s", exc)

    def connection_state(self) -> api.ConnectionState:
        """Current connection state (no I/O)."""
        out = len(self.state.outbox)
        rpc = self._rpc
        if rpc is not None and rpc.connected:
            host, port = rpc.address  # of a server list: the one in use
            return api.ConnectionState.connected(server=f"{host}:{port}", outbox_count=out)
        return api.ConnectionState.offline(out, server=self._server_addr)

    # ------------------------------------------------------------------ identity

    @property
    def has_device(self) -> bool:
        """Whether this profile holds a device identity key."""
        return self._identity is not None

    @property
    def identity(self) -> IdentityKey:
        """Our device identity key."""
        if self._identity is None:
            raise LocalError("no device in this profile: run `qpc register` or `qpc login`")
        return self._identity

    @property
    def hybrid(self) -> HybridPrivateKey:
        """Our device's X-Wing private key."""
        if self._hybrid is None:
            raise LocalError("no device in this profile: run `qpc register` or `qpc login`")
        return self._hybrid

    @property
    def device_id(self) -> bytes:
        """Our device id (Ed25519 public key)."""
        return self.identity.public_key

    @property
    def has_mls(self) -> bool:
        """Whether the MLS client is open (logged in)."""
        return self._mls is not None

    @property
    def mls(self) -> mls.Client:
        """Our MLS client."""
        if self._mls is None:
            raise LocalError("not logged in: run `qpc register` or `qpc login`")
        return self._mls

    @property
    def user(self) -> str:
        """Our username."""
        if not self.state.user:
            raise LocalError("not logged in: run `qpc register` or `qpc login`")
        return self.state.user

    async def _ensure_device_keys(self) -> None:
        if self._identity is None:
            self._identity = IdentityKey.generate()
            await self.profile.put_identity(self._identity)
        if self._hybrid is None:
            self._hybrid = HybridPrivateKey.generate()
            await self.profile.put_hybrid_key(self._hybrid)
        if not self.state.access_key:
            self.state.access_key = os.urandom(32).hex()
            await self.save()

    async def register(
        self, user: str, password: str, *, on_wait: api.RateLimitWait | None = None
    ) -> api.WhoAmI:
        """Create the account (OPAQUE), then log in as in :meth:`login`."""
        user = normalize_user(user)
        start = opaque.client_registration_start(password)
        rpc = await self.rpc()
        budget = _WaitBudget(on_wait)
        resp = await budget.retry(
            lambda: rpc.register_start(username=user, request=start.request, auth=b"")
        )
        finish = opaque.client_registration_finish(password, start.state, resp.response)
        await rpc.register_finish(username=user, upload=finish.upload, auth=b"")
        log.info("account registered")
        return await self._login(user, password, budget)

    async def login(
        self, user: str, password: str, *, on_wait: api.RateLimitWait | None = None
    ) -> api.WhoAmI:
        """OPAQUE login; creates and registers this device and tops up KeyPackages."""
        return await self._login(user, password, _WaitBudget(on_wait))

    async def _login(self, user: str, password: str, budget: _WaitBudget) -> api.WhoAmI:
        user = normalize_user(user)
        if self.state.user and self.state.user != user:
            raise LocalError(f"this profile belongs to {self.state.user!r}; use another --profile")
        await self._ensure_device_keys()
        rpc = await self.rpc()
        start = opaque.client_login_start(password)
        resp = await budget.retry(
            lambda: rpc.login_start(username=user, request=start.request, auth=b"")
        )
        finish = opaque.client_login_finish(password, start.state, resp.response)
        res = await rpc.login_finish(
            login_id=resp.login_id,
            finalization=finish.finalization,
            device_id=self.device_id,
            auth=b"",
        )
        rpc.token = res.token
        self.state.token = res.token.hex()
        self.state.token_expires_ms = res.expires_ms
        self.state.user = user
        if self.config.server:
            self.state.server = self.config.server
        elif not self.state.server:
            self.state.server = EMBEDDED
        if self._mls is None:
            path = str(self.profile.mls_state_path)
            key = self.profile.mls_storage_key
            if self.profile.mls_state_path.exists():
                self._mls = await asyncio.to_thread(mls.Client.open, path, key)
            else:
                ident = self.identity.private_bytes()
                # 0600 before the binding's SQLite opens it (its journal follows)
                files.ensure_private_file(self.profile.mls_state_path)
                try:
                    self._mls = await asyncio.to_thread(
                        lambda: mls.Client.create(path, key, user.encode(), signature_key=ident)
                    )
                except BaseException:
                    with contextlib.suppress(OSError):  # not left empty for open() later
                        if self.profile.mls_state_path.stat().st_size == 0:
                            self.profile.mls_state_path.unlink()
                    raise
        await self.save()
        who = await rpc.whoami()
        if not who.device_registered:
            hybrid = self.hybrid.public_key.to_bytes()
            with contextlib.suppress(AlreadyExists):
                await rpc.register_device(
                    hybrid_key=hybrid,
                    signature=self.identity.sign_device_registration(hybrid),
                    delivery_access_key=bytes.fromhex(self.state.access_key),
                )
        self.state.device_registered = True
        await self.save()
        await self.top_up_keypackages()
        log.info("logged in; device registered")
        return await self.whoami()

    # ------------------------------------------------------------------ KeyPackages

    async def top_up_keypackages(self, *, force: bool = False) -> api.KeyStock:
        """Upload a batch when the node's stock is low (or ``force``)."""
        rpc = await self.rpc()
        count = await (await self.rpc()).key_package_count()
        stock, last = count.count, count.has_last_resort
        if force or stock < self.config.keypackage_low or not last:
            want = max(self.config.keypackage_batch - stock, 1 if force else 0)
            client = self.mls
            packages = await asyncio.to_thread(client.key_packages, want) if want else []
            last_resort = b"" if last and not force else client.last_resort_key_package()
            res = await rpc.upload_key_packages(packages=packages, last_resort=last_resort)
            stock, last = res.stock, True
            log.info("uploaded %d KeyPackages; stock %d", len(packages), stock)
        return api.KeyStock(count=stock, has_last_resort=last)

    async def refresh_keypackages(self) -> api.KeyStock:
        """Force a refill up to the batch size and a fresh last-resort package."""
        return await self.top_up_keypackages(force=True)

    # ------------------------------------------------------------------ peers

    def _verified_device(self, user: str, dev: Device) -> DeviceRecord:
        verify_device_registration(dev.device_id, dev.hybrid_key, dev.signature)
        known = self.state.devices.get(dev.device_id.hex())
        if known is not None and known.user != user:
            raise BadSignature("a device moved between users")
        rec = known or DeviceRecord(user=user)
        rec.hybrid = dev.hybrid_key.hex()
        self.state.devices[dev.device_id.hex()] = rec
        return rec

    async def user_devices(self, user: str) -> list[bytes]:
        """The user's devices as listed by the node (hybrid keys verified and cached)."""
        user = normalize_user(user)
        res = await (await self.rpc()).list_devices(username=user)
        out = []
        for dev in res.devices:
            try:
                self._verified_device(user, dev)
            except (BadSignature, InvalidKey) as exc:
                log.warning("ignoring a device with a bad registration signature: %s", exc)
                continue
            out.append(dev.device_id)
        if out and not self.state.pins.get(user):
            self.state.pins[user] = [d.hex() for d in out]  # trust on first use
        return out

    async def hybrid_key_of(self, device_id: bytes, user: str) -> HybridPublicKey:
        """A member device's verified X-Wing key (cached after the first fetch)."""
        rec = self.state.devices.get(device_id.hex())
        if rec is None or not rec.hybrid:
            res = await (await self.rpc()).fetch_hybrid_key(device_id=device_id)
            dev = Device(device_id=device_id, hybrid_key=res.hybrid_key, signature=res.signature)
            rec = self._verified_device(user, dev)
        return _parsed_hybrid_key(rec.hybrid)

    async def seal_for(
        self, device_id: bytes, user: str, channel: bytes, ctype: ContentType, body: bytes
    ) -> bytes:
        """Seal ``body`` for one device in the hybrid envelope."""
        key = await self.hybrid_key_of(device_id, user)
        return seal(
            sender=self.identity,
            recipient_key=key,
            recipient_id=device_id,
            channel_id=channel,
            content_type=ctype,
            body=body,
        ).data

    # ------------------------------------------------------------------ info

    async def whoami(self) -> api.WhoAmI:
        """Identity, KeyPackage stock and the pinned server fingerprint."""
        rpc = await self.rpc()
        stock: api.KeyStock | None = None
        registered, expires = self.state.device_registered, self.state.token_expires_ms
        with contextlib.suppress(TransportError, ConnectionLost, LocalError):
            who = await (await self.rpc()).whoami()
            registered, expires = who.device_registered, who.session_expires_ms
            if registered:
                kc = await (await self.rpc()).key_package_count()
                stock = api.KeyStock(count=kc.count, has_last_resort=kc.has_last_resort)
        return api.WhoAmI(
            user=self.user,
            device=self.device_id.hex(),
            device_fingerprint=fingerprint(self.device_id),
            server=self._server_addr,
            server_fingerprint=rpc.fingerprint or "",
            key_stock=stock,
            device_registered=registered,
            session_expires_ms=expires,
        )

    async def health(self) -> api.Health:
        """The node's health report."""
        res = await (await self.rpc()).health(auth=b"")
        return api.Health(
            status=res.status,
            version=res.version,
            uptime_ms=res.uptime_ms,
            store_backend=res.store_backend,
            server=self._server_addr,
        )

    async def ping(self, count: int = 1) -> api.PingResult:
        """``count`` round trips (the first one also connects, and is not timed)."""
        rpc = await self.rpc()
        await rpc.connect()
        rtts, server_ms = [], 0
        for i in range(max(1, count)):
            t0 = time.perf_counter()
            res = await rpc.ping(payload=i.to_bytes(4, "big"), auth=b"")
            rtts.append((time.perf_counter() - t0) * 1000)
            server_ms = res.server_time_ms
        return api.PingResult(rtts_ms=tuple(rtts), server_time_ms=server_ms)
