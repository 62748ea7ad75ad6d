"""The CLI's command table and the typed config built once from argv."""

from __future__ import annotations

from pathlib import Path

from proto.crypto.atrest import DEFAULT_PARAMS, FAST_TEST_PARAMS
from tui.cli.commands import COMMANDS
from tui.cli.config import CliConfig, CommandArgs, cli_config
from tui.cli.main import build_parser


def _config(argv: list[str], **env: str) -> CliConfig:
    return cli_config(build_parser().parse_args(argv), env)


def test_every_command_runs_one_way() -> None:
    for c in COMMANDS.values():
        ways = [
            c.with_engine is not None,
            c.standalone is not None,
            c.tui,
            c.own_config is not None,
        ]
        assert ways.count(True) == 1, c.name
    assert {c.name for c in COMMANDS.values() if c.creates_profile} == {"register", "login"}
    usage = build_parser().format_help()
    for name in COMMANDS:
        assert f"    {name} " in usage or f"    {name}\n" in usage, name


def test_config_is_typed_and_global_options_go_anywhere(tmp_path: Path) -> None:
    a = _config(["--server", "h:1", "--json", "--profile", str(tmp_path), "invite", "c", "x", "y"])
    b = _config(["invite", "c", "x", "y", "--server", "h:1", "--json", "--profile", str(tmp_path)])
    assert a == b
    assert a == CliConfig(
        command="invite",
        server="h:1",
        profile_dir=tmp_path,
        json=True,
        args=CommandArgs(channel="c", users=("x", "y")),
    )
    assert a.engine_config().profile_dir == tmp_path and a.engine_config().server == "h:1"


def test_profile_and_kdf_come_from_the_environment(tmp_path: Path) -> None:
    cfg = _config(["ping"], QPC_PROFILE=str(tmp_path / "p"), QPC_KDF="fast")
    assert cfg.profile_dir == tmp_path / "p"
    assert cfg.kdf == FAST_TEST_PARAMS and cfg.args.count == 3
    assert _config(["listen", "--count", "2"]).args.count == 2
    assert _config(["whoami"]).kdf == DEFAULT_PARAMS
    assert _config([]).command is None
