"""OPAQUE registration and login, session tokens, logout.

The node never sees a password: it stores the OPAQUE password file. A login
for an unknown user runs against a decoy password file derived from a node
secret and the username, so its ``loginStart`` answer has the same shape as a
real one and its ``loginFinish`` fails with the same ``loginFailed``.

Rate limits: one attempt costs one token, charged at its first step
(``registerStart``, ``loginStart``) to the source address and the account
name. The second step is bound to a first step that was charged (a pending
login id, a pending registration of that name) and is not charged again, so
a client that waits the ``retryAfterMs`` it was told finishes the whole
attempt. A second step without its first step is charged like an attempt
and refused.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import secrets

from node.services.common import (
    Caller,
    NodeContext,
    Session,
    check_device_id,
    key_hash,
    normalize_username,
)
from proto import memory
from proto.crypto import opaque
from proto.errors import (
    AlreadyExists,
    BadRequest,
    Expired,
    LoginFailed,
    OpaqueError,
    OpaqueLoginFailed,
    PermissionDenied,
)

log = logging.getLogger(__name__)

OPAQUE_SETUP_ROW = "opaque_server_setup"
DECOY_ROW = "opaque_decoy_key"
LOGIN_ID_BYTES = 16
MAX_OPAQUE_MESSAGE = 1024
MAX_PENDING_LOGINS = 10_000
MAX_PENDING_REGISTRATIONS = 10_000
DECOY_CACHE = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class _PendingLogin:
    username: str
    state: bytes = dataclasses.field(repr=False)
    expires: float
    known: bool


class AuthService:
    """Account registration, login and logout."""

    def __init__(
        self, ctx: NodeContext, setup: opaque.ServerSetup, decoys: opaque.DecoyPasswordFiles
    ) -> None:
        """Use :meth:`create` to load or make the persisted OPAQUE secrets."""
        self._ctx = ctx
        self._setup = setup
        self._decoys = decoys
        self._pending: collections.OrderedDict[bytes, _PendingLogin] = collections.OrderedDict()
        self._pending_reg: collections.OrderedDict[str, float] = collections.OrderedDict()
        """Names whose (charged) ``registerStart`` awaits its ``registerFinish``: expiry."""
        # One thread for all decoys: the OPAQUE key-stretching function allocates
        # large buffers, and every extra thread would keep its own malloc arena.
        self._decoy_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="qpc-decoy"
        )

    @classmethod
    async def create(cls, ctx: NodeContext) -> AuthService:
        """Load the OPAQUE server setup and decoy key from the store (made on first start)."""
        setup_bytes = await ctx.store.get_or_create_secret(
            OPAQUE_SETUP_ROW, opaque.ServerSetup.generate().to_bytes()
        )
        decoy_key = await ctx.store.get_or_create_secret(DECOY_ROW, secrets.token_bytes(32))
        setup = opaque.ServerSetup.from_bytes(setup_bytes)
        return cls(ctx, setup, opaque.DecoyPasswordFiles(setup, decoy_key, max_entries=DECOY_CACHE))

    def _decoy_for(self, name: str) -> bytes:
        """On the decoy thread: the cached decoy, made first if needed."""
        before = len(self._decoys)
        decoy = self._decoys.get(name)
        if len(self._decoys) != before or before >= DECOY_CACHE:
            # OPAQUE's key stretching just freed large buffers (~15 MiB per
            # decoy would otherwise stay on the heap): proto/memory.py
            memory.trim_heap()  # a decoy was made
        return decoy

    @staticmethod
    def _check_message(value: bytes, what: str) -> bytes:
        if not value or len(value) > MAX_OPAQUE_MESSAGE:
            raise BadRequest(f"{what} must be 1-{MAX_OPAQUE_MESSAGE} bytes")
        return value

    # -------------------------------------------------------------- register

    async def register_start(self, caller: Caller, username: str, request: bytes) -> bytes:
        """OPAQUE registration step 1; returns the RegistrationResponse."""
        name = normalize_username(username)
        self._check_message(request, "request")
        self._ctx.limit_login(caller, name)
        if await self._ctx.store.account_exists(name):
            raise AlreadyExists("username is taken")
        try:
            response = opaque.server_registration_start(self._setup, request, name)
        except OpaqueError:
            raise BadRequest("malformed registration request") from None
        self._expire_pending()
        while len(self._pending_reg) >= MAX_PENDING_REGISTRATIONS:
            self._pending_reg.popitem(last=False)
        self._pending_reg.pop(name, None)
        self._pending_reg[name] = self._ctx.mono_clock() + self._ctx.config.login_ttl_s
        return response

    async def register_finish(self, caller: Caller, username: str, upload: bytes) -> None:
        """OPAQUE registration step 2: store the password file (``alreadyExists`` if taken)."""
        name = normalize_username(username)
        self._check_message(upload, "upload")
        expires = self._pending_reg.pop(name, None)
        if expires is None:
            self._ctx.limit_login(caller, name)
            raise BadRequest("registration not started (registerStart first)")
        if expires <= self._ctx.mono_clock():
            raise Expired("registration took too long, start again")
        try:
            password_file = opaque.server_registration_finish(upload)
        except OpaqueError:
            raise BadRequest("malformed registration upload") from None
        await self._ctx.store.create_account(name, password_file, self._ctx.now_ms())
        log.info("account registered")

    # ----------------------------------------------------------------- login

    async def login_start(
        self, caller: Caller, username: str, request: bytes
    ) -> tuple[bytes, bytes]:
        """OPAQUE login step 1; returns ``(loginId, CredentialResponse)``."""
        name = normalize_username(username)
        self._check_message(request, "request")
        self._ctx.limit_login(caller, name)
        # Every name gets its decoy made (and cached), known or not: a first
        # decoy costs one OPAQUE registration (~20 ms), and doing it only for
        # unknown names would let response time tell them apart. Off the event
        # loop, on one thread (which also serialises access to the cache).
        decoy = await asyncio.get_running_loop().run_in_executor(
            self._decoy_thread, self._decoy_for, name
        )
        password_file = await self._ctx.store.get_password_file(name)
        known = password_file is not None
        if password_file is None:
            password_file = decoy
        try:
            started = opaque.server_login_start(self._setup, password_file, request, name)
        except OpaqueLoginFailed:
            raise LoginFailed("login failed") from None
        except OpaqueError:
            raise BadRequest("malformed credential request") from None
        self._expire_pending()
        while len(self._pending) >= MAX_PENDING_LOGINS:
            self._pending.popitem(last=False)
        login_id = secrets.token_bytes(LOGIN_ID_BYTES)
        self._pending[login_id] = _PendingLogin(
            name, started.state, self._ctx.mono_clock() + self._ctx.config.login_ttl_s, known
        )
        return login_id, started.response

    async def login_finish(
        self, caller: Caller, login_id: bytes, finalization: bytes, device_id: bytes
    ) -> tuple[bytes, int]:
        """OPAQUE login step 2; returns ``(token, expiresMs)`` bound to ``device_id``."""
        self._check_message(finalization, "finalization")
        check_device_id(device_id)
        pending = self._pending.pop(login_id, None)
        if pending is None:
            self._ctx.limit_login(caller, "?")
            raise LoginFailed("login failed")
        if pending.expires <= self._ctx.mono_clock():
            raise Expired("login took too long, start again")
        try:
            opaque.server_login_finish(pending.state, finalization)
        except OpaqueError:
            raise LoginFailed("login failed") from None
        if not pending.known:  # unreachable unless the decoy password was guessed
            raise LoginFailed("login failed")
        device = await self._ctx.store.get_device(device_id)
        if device is not None and device.username != pending.username:
            raise PermissionDenied("device is registered to another account")
        token = secrets.token_bytes(32)
        now_ms = self._ctx.now_ms()
        expires_ms = now_ms + self._ctx.config.session_ttl_s * 1000
        await self._ctx.store.create_session(
            key_hash(token), pending.username, device_id, now_ms, expires_ms
        )
        log.info("login succeeded")
        return token, expires_ms

    async def logout(self, session: Session) -> None:
        """Invalidate the session."""
        await self._ctx.store.delete_session(session.token_hash)

    # ------------------------------------------------------------ housekeeping

    def close(self) -> None:
        """Stop the decoy thread (pending decoys are finished first)."""
        self._decoy_thread.shutdown(wait=True)

    def _expire_pending(self) -> None:
        now = self._ctx.mono_clock()
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.expires > now:
                break
            self._pending.popitem(last=False)
        while self._pending_reg:
            if next(iter(self._pending_reg.values())) > now:
                break
            self._pending_reg.popitem(last=False)

    async def purge(self) -> int:
        """Drop expired sessions and login states; return sessions deleted."""
        self._expire_pending()
        self._ctx.login_limiter.prune()
        self._ctx.write_limiter.prune()
        return await self._ctx.store.purge_sessions(self._ctx.now_ms())
