"""Configuration: defaults, TOML file, environment, flags (flags win), --help."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.__main__ import main
from node.config import FIELDS, NodeConfig, build_parser, load_config, parse_hostport
from proto.errors import ConfigError


def test_defaults() -> None:
    c = load_config([], environ={})
    assert (c.host, c.port) == ("127.0.0.1", 7000)
    assert c.max_payload_bytes == 256 * 1024
    assert c.max_queue_depth == 1000
    assert c.metrics_port == 0
    assert "quicnprotochat" in str(c.data_dir)
    for f in dataclasses.fields(NodeConfig):  # every field has a default
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(
        '[node]\nlisten = "0.0.0.0:7100"\nmax_queue_depth = 10\nretention = 60\n'
        'data_dir = "/tmp/qpc-a"\nmax-payload-bytes = 1000\n'
    )
    env = {"QPC_NODE_MAX_QUEUE_DEPTH": "20", "QPC_NODE_METRICS_PORT": "9100"}
    c = load_config(["--config", str(toml)], environ=env)
    assert (c.host, c.port) == ("0.0.0.0", 7100)
    assert c.max_queue_depth == 20  # env beats file
    assert c.retention_s == 60
    assert c.max_payload_bytes == 1000
    assert c.metrics_port == 9100
    assert c.data_dir == Path("/tmp/qpc-a")
    c = load_config(
        ["--config", str(toml), "--max-queue-depth", "30", "--listen", "[::1]:0"], environ=env
    )
    assert c.max_queue_depth == 30  # flags beat env
    assert (c.host, c.port) == ("::1", 0)
    assert c.listen == "[::1]:0"
    env2 = {"QPC_NODE_CONFIG": str(toml)}
    assert load_config([], environ=env2).port == 7100


@pytest.mark.parametrize(
    ("argv", "env", "toml"),
    [
        (["--listen", "nope"], {}, None),
        (["--listen", "h:99999"], {}, None),
        (["--max-queue-depth", "0"], {}, None),
        (["--cert", "/x.pem"], {}, None),
        ([], {"QPC_NODE_NO_SUCH": "1"}, None),
        ([], {"QPC_NODE_PORT": "abc"}, None),
        ([], {}, "no_such = 1\n"),
        ([], {}, "port = [\n"),
        ([], {}, 'data_dir = "~qpc-no-such-user/data"\n'),  # "~user" of no user
        (["--log-level", "LOUD"], {}, None),
    ],
)
def test_bad_config(tmp_path: Path, argv: list[str], env: dict[str, str], toml: str | None) -> None:
    if toml is not None:
        f = tmp_path / "c.toml"
        f.write_text(toml)
        argv = [*argv, "--config", str(f)]
    with pytest.raises(ConfigError):
        load_config(argv, environ=env)


def test_config_file_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b'data_dir = "\xff"\n')
    with pytest.raises(ConfigError):
        load_config(["--config", str(f)], environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(["--config", str(tmp_path / "missing.toml")], environ={})
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2


def test_parse_hostport() -> None:
    assert parse_hostport("localhost:1") == ("localhost", 1)
    assert parse_hostport("[::]:7000") == ("::", 7000)


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        for opt in action.option_strings:
            assert opt in text
        if action.option_strings and action.dest != "help":
            assert action.help
    settable = {a.dest for a in build_parser()._actions} | {"host", "port"}
    settable.discard("listen")
    assert set(FIELDS) <= settable | {"listen"}, set(FIELDS) - settable
