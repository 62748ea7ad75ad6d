"""OPAQUE wrappers: registration, login, wrong password, decoy files, setup persistence."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.crypto import opaque as op
from proto.errors import ErrorCode, LocalError, LoginFailed, OpaqueError, OpaqueLoginFailed

SETUP = op.ServerSetup.generate()
NODE_SECRET = bytes(range(32))


def _register(setup: op.ServerSetup, username: str, password: str) -> tuple[bytes, bytes]:
    start = op.client_registration_start(password)
    response = op.server_registration_start(setup, start.request, username)
    finish = op.client_registration_finish(password, start.state, response)
    return op.server_registration_finish(finish.upload), finish.export_key


def _login(
    setup: op.ServerSetup, password_file: bytes, username: str, password: str
) -> tuple[op.ClientLoginFinish, bytes]:
    start = op.client_login_start(password)
    server = op.server_login_start(setup, password_file, start.request, username)
    client = op.client_login_finish(password, start.state, server.response)
    return client, op.server_login_finish(server.state, client.finalization)


PASSWORD_FILE, EXPORT_KEY = _register(SETUP, "alice", "correct horse")


def test_register_and_login() -> None:
    client, server_key = _login(SETUP, PASSWORD_FILE, "alice", "correct horse")
    assert client.session_key == server_key
    assert len(client.session_key) == 64
    assert client.export_key == EXPORT_KEY


def test_secrets_not_in_repr() -> None:
    client, _ = _login(SETUP, PASSWORD_FILE, "alice", "correct horse")
    assert client.session_key.hex() not in repr(client)
    assert "secret" in repr(SETUP)


def test_wrong_password_fails_on_client() -> None:
    start = op.client_login_start("wrong horse")
    server = op.server_login_start(SETUP, PASSWORD_FILE, start.request, "alice")
    with pytest.raises(OpaqueLoginFailed) as info:
        op.client_login_finish("wrong horse", start.state, server.response)
    assert isinstance(info.value, LoginFailed)
    assert info.value.code == ErrorCode.LOGIN_FAILED


def test_server_rejects_forged_finalization() -> None:
    start = op.client_login_start("correct horse")
    server = op.server_login_start(SETUP, PASSWORD_FILE, start.request, "alice")
    with pytest.raises(OpaqueLoginFailed):
        op.server_login_finish(server.state, bytes(64))
    with pytest.raises(OpaqueLoginFailed):
        op.server_login_finish(server.state, b"short")


def test_username_is_bound() -> None:
    with pytest.raises(OpaqueLoginFailed):
        _login(SETUP, PASSWORD_FILE, "mallory", "correct horse")


def test_unknown_user_decoy_looks_like_a_real_account() -> None:
    decoys = op.DecoyPasswordFiles(SETUP, NODE_SECRET)
    decoy = decoys.get("nobody")
    assert len(decoy) == len(PASSWORD_FILE)
    assert decoys.get("nobody") == decoy  # cached: repeated probes see the same account
    assert decoys.get("somebody") != decoy
    start = op.client_login_start("any password")
    real = op.server_login_start(SETUP, PASSWORD_FILE, start.request, "alice")
    fake = op.server_login_start(SETUP, decoy, start.request, "nobody")
    assert len(fake.response) == len(real.response)
    assert len(fake.state) == len(real.state)
    with pytest.raises(OpaqueLoginFailed):
        op.client_login_finish("any password", start.state, fake.response)


def test_decoy_cache_is_bounded() -> None:
    decoys = op.DecoyPasswordFiles(SETUP, NODE_SECRET, max_entries=2)
    first = decoys.get("a")
    decoys.get("b")
    decoys.get("c")
    assert len(decoys) == 2
    assert decoys.get("a") != first  # evicted, then remade (randomised file)


def test_decoy_needs_a_real_secret() -> None:
    with pytest.raises(LocalError):
        op.DecoyPasswordFiles(SETUP, b"short")
    with pytest.raises(LocalError):
        op.decoy_password_file(SETUP, b"short", "x")


def test_server_setup_round_trips() -> None:
    raw = SETUP.to_bytes()
    again = op.ServerSetup.from_bytes(raw)
    assert again.to_bytes() == raw
    # A node restarted from the stored setup still logs in existing users.
    client, server_key = _login(again, PASSWORD_FILE, "alice", "correct horse")
    assert client.session_key == server_key
    with pytest.raises(OpaqueLoginFailed):
        _login(op.ServerSetup.generate(), PASSWORD_FILE, "alice", "correct horse")


def test_bad_setup_bytes() -> None:
    with pytest.raises(OpaqueError):
        op.ServerSetup.from_bytes(b"x")


def test_empty_password_is_local_misuse() -> None:
    with pytest.raises(LocalError):
        op.client_login_start("")


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_garbage_messages_fail_cleanly(data: bytes) -> None:
    # Messages that are only group elements and keys (a blinded element, an
    # upload, a registration response) cannot be told from garbage: random
    # bytes of the right length are sometimes valid encodings, and then the
    # call succeeds. "Cleanly" means: a result or OpaqueError, nothing else.
    def result_or_opaque_error(call: Callable[[], object]) -> None:
        with contextlib.suppress(OpaqueError):
            call()

    result_or_opaque_error(lambda: op.server_registration_start(SETUP, data, "alice"))
    result_or_opaque_error(lambda: op.server_registration_finish(data))
    result_or_opaque_error(lambda: op.server_login_start(SETUP, PASSWORD_FILE, data, "alice"))
    reg = op.client_registration_start("p")
    result_or_opaque_error(lambda: op.client_registration_finish("p", reg.state, data))
    request = op.client_login_start("p").request
    result_or_opaque_error(lambda: op.server_login_start(SETUP, data, request, "alice"))
    # A login response carries the server's MAC: a wrong one never passes.
    start = op.client_login_start("p")
    with pytest.raises(OpaqueError):
        op.client_login_finish("p", start.state, data)


def test_decoy_pool_hands_out_premade_files() -> None:
    decoys = op.DecoyPasswordFiles(SETUP, NODE_SECRET, pool_size=3)
    assert decoys.pooled == 0
    assert decoys.refill() == 3
    assert decoys.refill() == 0
    first = decoys.get("ghost")
    assert decoys.pooled == 2
    assert decoys.get("ghost") == first
    assert decoys.pooled == 2
    # A pooled file (registered under a random name) still answers like a real account.
    start = op.client_login_start("guess")
    server = op.server_login_start(SETUP, first, start.request, "ghost")
    real = op.server_login_start(SETUP, PASSWORD_FILE, start.request, "alice")
    assert len(server.response) == len(real.response)
    with pytest.raises(OpaqueLoginFailed):
        op.client_login_finish("guess", start.state, server.response)
    assert decoys.refill() == 1
