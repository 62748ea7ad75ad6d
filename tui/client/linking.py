"""Linking a second device to an account with a short code (docs/PROTOCOL.md, "Linked devices").

The existing device opens an *offer* (:meth:`Linker.offer`) and shows a
ten-digit code; the new device, logged in to the same account, enters it
(:meth:`Linker.join`). The code is the password of a one-off OPAQUE run
(an augmented PAKE) between the two devices, carried in sealed ``CONTROL``
envelopes on the pseudo-channel :data:`~tui.client.receive.LINK_CHANNEL`:

1. new -> existing ``REQUEST``: OPAQUE CredentialRequest (code blinded);
2. existing -> new ``RESPONSE``: CredentialResponse from a registration
   record the existing device made from the code;
3. new -> existing ``FINISH``: CredentialFinalization and
   ``HMAC(K, "qpc-link-new" ‖ user ‖ existing id ‖ new id)``;
4. existing -> new ``ACCEPT``: ``HMAC(K, "qpc-link-existing" ‖ ...)``.

``K`` is derived from the OPAQUE session key, which only the two holders of
the code share. A wrong code fails at step 2 on the new device (and counts
as one attempt on the existing one); the node sees only sealed envelopes and
gets at most one online guess per attempt (no offline guessing: that is
what the PAKE is for). An offer takes :data:`MAX_ATTEMPTS` requests, then is
closed. After ``ACCEPT`` the existing device adds the new one to every
channel it is in (:meth:`tui.client.channels.Channels.add_own_device`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import struct
import time
from dataclasses import dataclass, field

from proto.crypto import opaque
from proto.crypto.envelope import ContentType
from proto.errors import LocalError, OpaqueError, OpaqueLoginFailed
from tui.client.core import Session
from tui.client.receive import LINK_CHANNEL

__all__ = [
    "CODE_DIGITS",
    "CODE_TTL_S",
    "MAX_ATTEMPTS",
    "LinkFailed",
    "Linker",
    "format_code",
    "parse_code",
]

log = logging.getLogger(__name__)

CODE_DIGITS = 10
"""Digits of a link code (~33 bits; with the PAKE only online guesses count)."""
CODE_TTL_S = 300.0
"""How long an offer stays open."""
MAX_ATTEMPTS = 3
"""Link requests one offer answers before it closes (wrong codes included)."""

REQUEST, RESPONSE, FINISH, ACCEPT, REJECT = 1, 2, 3, 4, 5
_MAX_FIELD = 4096
_LEN = struct.Struct(">H")


class LinkFailed(LocalError):
    """Linking did not complete (wrong code, offer closed, no answer)."""


def format_code(code: str) -> str:
    """``0123456789`` -> ``01234-56789``."""
    return f"{code[:5]}-{code[5:]}"


def parse_code(text: str) -> str:
    """The digits of a typed code (spaces and dashes ignored).

    Raises:
        LinkFailed: not exactly :data:`CODE_DIGITS` digits.
    """
    digits = "".join(ch for ch in text if ch not in " -")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        raise LinkFailed(f"a link code is {CODE_DIGITS} digits, like 01234-56789")
    return digits


def _encode(kind: int, *fields: bytes) -> bytes:
    out = bytearray([kind])
    for f in fields:
        out += _LEN.pack(len(f)) + f
    return bytes(out)


def _decode(body: bytes) -> tuple[int, list[bytes]]:
    if not body:
        raise ValueError("empty")
    kind, pos, fields = body[0], 1, []
    while pos < len(body):
        if pos + 2 > len(body):
            raise ValueError("truncated")
        (n,) = _LEN.unpack_from(body, pos)
        pos += 2
        if n > _MAX_FIELD or pos + n > len(body):
            raise ValueError("bad field")
        fields.append(body[pos : pos + n])
        pos += n
    return kind, fields


def _server_name(user: str, existing: bytes) -> bytes:
    return b"qpc-link-v1\x00" + user.encode() + b"\x00" + existing


def _mac(session_key: bytes, role: bytes, user: str, existing: bytes, new: bytes) -> bytes:
    key = hmac.new(session_key, b"qpc-link-v1 key", hashlib.sha256).digest()
    msg = role + b"\x00" + user.encode() + b"\x00" + existing + new
    return hmac.new(key, msg, hashlib.sha256).digest()


@dataclass(slots=True)
class _Offer:
    code: str = field(repr=False)
    setup: opaque.ServerSetup = field(repr=False)
    password_file: bytes = field(repr=False)
    expires: float
    attempts: int = 0
    states: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    done: asyncio.Future[bytes] = field(default_factory=asyncio.Future)
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Join:
    code: str = field(repr=False)
    states: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    keys: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    done: asyncio.Future[bytes] = field(default_factory=asyncio.Future)


class Linker:
    """Both ends of the link protocol for one session (see module docstring)."""

    def __init__(self, session: Session) -> None:
        """Args: the loaded session (our account and device)."""
        self._session = session
        self._offer: _Offer | None = None
        self._join: _Join | None = None

    # ---------------------------------------------------------------- existing

    def open_offer(self) -> str:
        """Open an offer on this (existing) device; returns the code to show."""
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        user, me = self._session.user, self._session.device_id
        setup = opaque.ServerSetup.generate()
        name = _server_name(user, me)
        reg = opaque.client_registration_start(code)
        resp = opaque.server_registration_start(setup, reg.request, name)
        fin = opaque.client_registration_finish(code, reg.state, resp)
        password_file = opaque.server_registration_finish(fin.upload)
        self._offer = _Offer(
            code=code,
            setup=setup,
            password_file=password_file,
            expires=time.monotonic() + CODE_TTL_S,
        )
        return code

    def offer_result(self) -> asyncio.Future[bytes]:
        """Resolves to the new device's id once it proved the code (or fails)."""
        if self._offer is None:
            raise LinkFailed("no link offer is open")
        return self._offer.done

    def close_offer(self) -> None:
        """Close the open offer (if any)."""
        if self._offer is not None and not self._offer.done.done():
            self._offer.done.set_exception(LinkFailed("the link offer was closed"))
        self._offer = None

    # --------------------------------------------------------------------- new

    async def start_join(self, code: str) -> asyncio.Future[bytes]:
        """On the new device: send a request to every other device of the account.

        Returns a future resolving to the existing device's id on ``ACCEPT``.
        """
        digits = parse_code(code)
        me, user = self._session.device_id, self._session.user
        others = [d for d in await self._session.user_devices(user) if d != me]
        if not others:
            raise LinkFailed("this account has no other device to link to")
        join = _Join(code=digits)
        self._join = join
        for dev in others:
            start = opaque.client_login_start(digits)
            join.states[dev] = start.state
            await self._send(dev, _encode(REQUEST, start.request))
        return join.done

    # ---------------------------------------------------------------- messages

    async def _send(self, device: bytes, body: bytes) -> None:
        payload = await self._session.seal_for(
            device, self._session.user, LINK_CHANNEL, ContentType.CONTROL, body
        )
        await (await self._session.rpc()).enqueue(
            recipient=device, channel_id=LINK_CHANNEL, payload=payload
        )

    async def handle(self, sender: bytes, body: bytes) -> None:
        """One received link message (from the inbox's follow-ups)."""
        try:
            kind, fields = _decode(body)
        except ValueError:
            log.warning("malformed link message ignored")
            return
        log.debug("link message kind %d", kind)
        if sender == self._session.device_id:
            return
        own = await self._session.user_devices(self._session.user)
        if sender not in own:
            log.warning("link message from a device of another account ignored")
            return
        if kind in (REQUEST, FINISH):
            await self._on_existing(sender, kind, fields)
        elif kind in (RESPONSE, ACCEPT, REJECT):
            await self._on_new(sender, kind, fields)

    async def _reject(self, sender: bytes, reason: str) -> None:
        await self._send(sender, _encode(REJECT, reason.encode()))

    async def _on_existing(self, sender: bytes, kind: int, fields: list[bytes]) -> None:
        offer = self._offer
        if offer is None or offer.done.done():
            return  # no offer open here: another device of ours may answer
        if time.monotonic() > offer.expires:
            offer.done.set_exception(LinkFailed("the link code expired"))
            await self._reject(sender, "the link code expired")
            return
        user, me = self._session.user, self._session.device_id
        if kind == REQUEST and len(fields) == 1:
            offer.attempts += 1
            if offer.attempts > MAX_ATTEMPTS:
                offer.done.set_exception(
                    LinkFailed(f"{MAX_ATTEMPTS} attempts used: the code is closed")
                )
                await self._reject(sender, "too many attempts: the code is closed, get a new one")
                return
            try:
                started = opaque.server_login_start(
                    offer.setup, offer.password_file, fields[0], _server_name(user, me)
                )
            except OpaqueError:
                await self._reject(sender, "malformed link request")
                return
            offer.states[sender] = started.state
            await self._send(sender, _encode(RESPONSE, started.response))
        elif kind == FINISH and len(fields) == 2:
            state = offer.states.pop(sender, None)
            if state is None:
                return
            try:
                key = opaque.server_login_finish(state, fields[0])
            except OpaqueError:
                offer.failures.append("wrong code")
                await self._reject(sender, "wrong code")
                return
            want = _mac(key, b"qpc-link-new", user, me, sender)
            if not hmac.compare_digest(want, fields[1]):
                offer.failures.append("bad confirmation")
                await self._reject(sender, "key confirmation failed")
                return
            await self._send(
                sender, _encode(ACCEPT, _mac(key, b"qpc-link-existing", user, me, sender))
            )
            offer.done.set_result(sender)
            log.info("device linked")

    async def _on_new(self, sender: bytes, kind: int, fields: list[bytes]) -> None:
        join = self._join
        if join is None or join.done.done():
            return
        user, me = self._session.user, self._session.device_id
        if kind == REJECT:
            reason = fields[0].decode("utf-8", "replace")[:200] if fields else "rejected"
            join.done.set_exception(LinkFailed(f"the other device refused: {reason}"))
        elif kind == RESPONSE and len(fields) == 1:
            state = join.states.pop(sender, None)
            if state is None:
                return
            try:
                fin = opaque.client_login_finish(join.code, state, fields[0])
            except OpaqueLoginFailed:
                join.done.set_exception(LinkFailed("wrong code"))
                return
            except OpaqueError:
                join.done.set_exception(LinkFailed("malformed answer from the other device"))
                return
            join.keys[sender] = fin.session_key
            mac = _mac(fin.session_key, b"qpc-link-new", user, sender, me)
            await self._send(sender, _encode(FINISH, fin.finalization, mac))
        elif kind == ACCEPT and len(fields) == 1:
            key = join.keys.pop(sender, None)
            if key is None:
                return
            want = _mac(key, b"qpc-link-existing", user, sender, me)
            if not hmac.compare_digest(want, fields[0]):
                join.done.set_exception(LinkFailed("key confirmation failed"))
                return
            join.done.set_result(sender)
