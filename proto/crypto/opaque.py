"""Typed wrappers over ``opaque_ke_py`` (OPAQUE aPAKE) for the client and node halves.

Flows (messages in brackets travel over the wire, see docs/PROTOCOL.md)::

    registration: client_registration_start -> [request] -> server_registration_start
                  -> [response] -> client_registration_finish -> [upload]
                  -> server_registration_finish -> password file (node stores it)
    login:        client_login_start -> [request] -> server_login_start
                  -> [response] -> client_login_finish -> [finalization]
                  -> server_login_finish -> session key on both sides

``opaque_ke_py`` raises bare ``ValueError``; here a failed authentication becomes
:class:`~proto.errors.OpaqueLoginFailed` (also a ``LoginFailed``) and anything
else :class:`~proto.errors.OpaqueError`.

Unknown users: ``server_login_start`` needs a password file, and the binding does
not expose opaque-ke's built-in fake record. :class:`DecoyPasswordFiles` makes,
per username, a real password file for a password nobody knows
(``HKDF(node secret, username)``), so an unknown user's CredentialResponse has the
same size and structure as a real one and the login fails just like a wrong
password. Making one costs a registration (~16 ms, docs/perf/crypto.md); a
bounded cache keeps one file per name, and an optional pre-made pool hides the
cost of the first probe of a name.

Caution: ``ServerSetupData.get_public_key()`` of opaque-ke-py 0.1.0 returns the
whole serialized setup, private keys included; this module never calls it.
"""

from __future__ import annotations

import collections
import os
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import opaque_ke_py as _ok
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proto.errors import LocalError, OpaqueError, OpaqueLoginFailed

__all__ = [
    "ClientLoginFinish",
    "ClientLoginStart",
    "ClientRegistrationFinish",
    "ClientRegistrationStart",
    "DecoyPasswordFiles",
    "ServerLoginStart",
    "ServerSetup",
    "client_login_finish",
    "client_login_start",
    "client_registration_finish",
    "client_registration_start",
    "decoy_password_file",
    "server_login_finish",
    "server_login_start",
    "server_registration_finish",
    "server_registration_start",
]

_T = TypeVar("_T")


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Translate the binding's ValueErrors into our classes (h11-style map_exceptions)."""
    try:
        yield
    except ValueError as exc:
        if "InvalidLogin" in str(exc):
            raise OpaqueLoginFailed("login failed") from exc
        raise OpaqueError(f"OPAQUE {what} failed") from exc


def _call(what: str, fn: Callable[[], _T]) -> _T:
    with _mapped(what):
        return fn()


def _password(password: str | bytes) -> bytes:
    if isinstance(password, str):
        password = unicodedata.normalize("NFKC", password).encode()
    if not password:
        raise LocalError("password must not be empty")
    return password


def _name(username: str | bytes) -> bytes:
    return username.encode() if isinstance(username, str) else username


# ------------------------------------------------------------------------- server


class ServerSetup:
    """The node's long-term OPAQUE secrets (OPRF seed and key pair). Secret."""

    __slots__ = ("_data",)

    def __init__(self, data: _ok.ServerSetupData) -> None:
        self._data = data

    @classmethod
    def generate(cls) -> ServerSetup:
        """Create a new setup (once per node; persist it with :meth:`to_bytes`)."""
        return cls(_ok.server_setup())

    @classmethod
    def from_bytes(cls, data: bytes) -> ServerSetup:
        """Load a setup written by :meth:`to_bytes`.

        Raises:
            OpaqueError: the bytes are not a valid setup.
        """
        return cls(_call("server setup load", lambda: _ok.ServerSetupData.from_bytes(data)))

    def to_bytes(self) -> bytes:
        """Serialize (secret: store with file mode 0600)."""
        return self._data.to_bytes()

    def __repr__(self) -> str:
        return "ServerSetup(<secret>)"


def server_registration_start(setup: ServerSetup, request: bytes, username: str | bytes) -> bytes:
    """Answer a RegistrationRequest; returns the RegistrationResponse."""
    return _call(
        "registration start",
        lambda: _ok.server_registration_start(setup._data, request, _name(username)).get_message(),
    )


def server_registration_finish(upload: bytes) -> bytes:
    """Turn the client's RegistrationUpload into the password file to store."""
    return _call(
        "registration finish",
        lambda: _ok.server_registration_finish(upload).get_password_file(),
    )


@dataclass(frozen=True, slots=True)
class ServerLoginStart:
    """Result of :func:`server_login_start`."""

    response: bytes
    """CredentialResponse for the client."""
    state: bytes = field(repr=False)
    """Server login state, kept until ``loginFinish`` (secret)."""


def server_login_start(
    setup: ServerSetup, password_file: bytes, request: bytes, username: str | bytes
) -> ServerLoginStart:
    """Answer a CredentialRequest with the user's (or a decoy) password file."""
    with _mapped("login start"):
        result = _ok.server_login_start(setup._data, password_file, request, _name(username))
        return ServerLoginStart(result.get_message(), result.get_state())


def server_login_finish(state: bytes, finalization: bytes) -> bytes:
    """Check the client's CredentialFinalization; returns the session key.

    Raises:
        OpaqueLoginFailed: wrong password, unknown user (decoy file) or forged message.
    """
    with _mapped("login finish"):
        try:
            return _ok.server_login_finish(state, finalization).get_session_key()
        except ValueError as exc:
            # Every failure here means "this client did not prove the password".
            raise OpaqueLoginFailed("login failed") from exc


def decoy_password_file(setup: ServerSetup, node_secret: bytes, username: str | bytes) -> bytes:
    """A real password file for ``username`` under a password nobody knows.

    The password is ``HKDF-SHA256(node_secret, info = "qpc-opaque-decoy-v1\\0" ‖ username)``.
    The file itself is randomised (OPAQUE envelope nonce), so cache it per name:
    see :class:`DecoyPasswordFiles`.
    """
    if len(node_secret) < 32:
        raise LocalError("node secret must be at least 32 bytes")
    name = _name(username)
    password = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"qpc-opaque-decoy-v1\x00" + name,
    ).derive(node_secret)
    start = client_registration_start(password)
    response = server_registration_start(setup, start.request, name)
    finish = client_registration_finish(password, start.state, response)
    return server_registration_finish(finish.upload)


class DecoyPasswordFiles:
    """Decoy password files for unknown usernames: a bounded LRU cache plus a spare pool.

    The same name gets the same file while it stays cached, so repeated probes of
    an unknown user look like repeated logins to one real account. Making a file
    costs one OPAQUE registration (~16 ms), which would make the *first* probe of
    an unknown name measurably slower than a real login; with ``pool_size > 0``
    the node calls :meth:`refill` in a worker thread (at start and after use) and
    :meth:`get` hands out a pre-made file instead. A pooled file was registered
    under another (random) name: the client cannot tell, because the OPRF key is
    derived per username at login and the rest of the response is masked with a
    key only the password holder can compute.
    """

    def __init__(
        self,
        setup: ServerSetup,
        node_secret: bytes,
        *,
        max_entries: int = 4096,
        pool_size: int = 0,
    ) -> None:
        """Args: the node's setup, a >= 32-byte node secret, cache and pool sizes."""
        if len(node_secret) < 32:
            raise LocalError("node secret must be at least 32 bytes")
        self._setup = setup
        self._secret = node_secret
        self._max = max_entries
        self._pool_size = pool_size
        self._pool: list[bytes] = []
        self._cache: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, username: str | bytes) -> bytes:
        """The decoy password file for ``username`` (pooled or made on first use)."""
        name = _name(username)
        with self._lock:
            found = self._cache.get(name)
            if found is not None:
                self._cache.move_to_end(name)
                return found
            made = self._pool.pop() if self._pool else None
        if made is None:
            made = decoy_password_file(self._setup, self._secret, name)
        with self._lock:
            made = self._cache.setdefault(name, made)
            self._cache.move_to_end(name)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return made

    def refill(self) -> int:
        """Top the spare pool up to ``pool_size``; blocking, run it in a thread.

        Returns how many files were made.
        """
        made = 0
        while True:
            with self._lock:
                if len(self._pool) >= self._pool_size:
                    return made
            spare = decoy_password_file(self._setup, self._secret, os.urandom(16))
            with self._lock:
                self._pool.append(spare)
            made += 1

    @property
    def pooled(self) -> int:
        """Spare files ready to hand out."""
        return len(self._pool)

    def __len__(self) -> int:
        return len(self._cache)


# ------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class ClientRegistrationStart:
    """Result of :func:`client_registration_start`."""

    request: bytes
    """RegistrationRequest for the node."""
    state: bytes = field(repr=False)
    """Client state for :func:`client_registration_finish` (secret)."""


@dataclass(frozen=True, slots=True)
class ClientRegistrationFinish:
    """Result of :func:`client_registration_finish`."""

    upload: bytes
    """RegistrationUpload for the node."""
    export_key: bytes = field(repr=False)
    """A key only the password holder can recompute (secret; equal at every login)."""


@dataclass(frozen=True, slots=True)
class ClientLoginStart:
    """Result of :func:`client_login_start`."""

    request: bytes
    """CredentialRequest for the node."""
    state: bytes = field(repr=False)
    """Client state for :func:`client_login_finish` (secret)."""


@dataclass(frozen=True, slots=True)
class ClientLoginFinish:
    """Result of :func:`client_login_finish`."""

    finalization: bytes
    """CredentialFinalization for the node."""
    session_key: bytes = field(repr=False)
    """Shared with the node after its ``server_login_finish`` (secret)."""
    export_key: bytes = field(repr=False)
    """Same value as at registration (secret)."""


def client_registration_start(password: str | bytes) -> ClientRegistrationStart:
    """Blind the password; send ``request`` to ``registerStart``."""
    with _mapped("registration start"):
        result = _ok.client_registration_start(_password(password))
        return ClientRegistrationStart(result.get_message(), result.get_state())


def client_registration_finish(
    password: str | bytes, state: bytes, response: bytes
) -> ClientRegistrationFinish:
    """Finish registration with the node's response; send ``upload`` to ``registerFinish``."""
    with _mapped("registration finish"):
        result = _ok.client_registration_finish(_password(password), state, response)
        return ClientRegistrationFinish(result.get_message(), result.get_export_key())


def client_login_start(password: str | bytes) -> ClientLoginStart:
    """Start a login; send ``request`` to ``loginStart``."""
    with _mapped("login start"):
        result = _ok.client_login_start(_password(password))
        return ClientLoginStart(result.get_message(), result.get_state())


def client_login_finish(password: str | bytes, state: bytes, response: bytes) -> ClientLoginFinish:
    """Finish a login with the node's CredentialResponse.

    Raises:
        OpaqueLoginFailed: wrong password or unknown user (indistinguishable).
        OpaqueError: the response is malformed.
    """
    with _mapped("login finish"):
        result = _ok.client_login_finish(_password(password), state, response)
        return ClientLoginFinish(
            result.get_message(), result.get_session_key(), result.get_export_key()
        )
