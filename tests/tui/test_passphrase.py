"""Passphrase sources for the CLI: --passphrase-fd, QPC_PASSPHRASE, prompt."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from proto.errors import ConfigError
from tui.client import passphrase as pp


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_fd_reads_one_line_and_no_further(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, "pässword\nrest".encode())
    assert pp.read_passphrase_fd(r) == "pässword"
    assert os.read(r, 10) == b"rest"


def test_fd_until_eof_and_crlf(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"secret\r\n")
    assert pp.read_passphrase_fd(r) == "secret"
    r2, w2 = os.pipe()
    os.write(w2, b"no newline")
    os.close(w2)
    assert pp.read_passphrase_fd(r2) == "no newline"
    os.close(r2)


@pytest.mark.parametrize("data", [b"\n", b"", b"\xff\xfe\n", b"x" * (pp.MAX_PASSPHRASE_BYTES + 1)])
def test_fd_bad_input(pipe: tuple[int, int], data: bytes) -> None:
    r, w = pipe
    os.write(w, data)
    os.close(w)
    with pytest.raises(ConfigError):
        pp.read_passphrase_fd(r)


def test_fd_not_open() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        pp.read_passphrase_fd(987_654)  # far above any fd this process opens


def test_env() -> None:
    assert pp.passphrase_from_env({pp.ENV_VAR: "from env"}) == "from env"
    assert pp.passphrase_from_env({pp.ENV_VAR: ""}) is None
    assert pp.passphrase_from_env({}) is None


def test_prompt_and_confirm() -> None:
    answers = iter(["one", "one"])
    assert pp.prompt_passphrase(confirm=True, getpass_fn=lambda _: next(answers)) == "one"
    answers = iter(["one", "two"])
    with pytest.raises(ConfigError, match="do not match"):
        pp.prompt_passphrase(confirm=True, getpass_fn=lambda _: next(answers))
    with pytest.raises(ConfigError, match="empty"):
        pp.prompt_passphrase(getpass_fn=lambda _: "")


def test_resolve_precedence(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"from fd\n")
    env = {pp.ENV_VAR: "from env"}

    def never(_: str) -> str:
        raise AssertionError("must not prompt")

    assert pp.resolve_passphrase(fd=r, environ=env, getpass_fn=never) == "from fd"
    assert pp.resolve_passphrase(environ=env, interactive=True, getpass_fn=never) == "from env"
    assert pp.resolve_passphrase(environ={}, interactive=True, getpass_fn=lambda _: "typed") == (
        "typed"
    )
    with pytest.raises(ConfigError, match="--passphrase-fd"):
        pp.resolve_passphrase(environ={}, interactive=False, getpass_fn=never)
