"""The deployment files in deploy/ (they cannot run here): each parses, and
every node setting they carry is accepted by qpc-node's own config loader."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from node.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_compose_file_parses_and_its_node_environment_is_a_valid_config() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert set(compose["services"]) == {"postgres", "node"}
    node = compose["services"]["node"]
    assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = {
        k: str(v).replace("${QPC_PG_PASSWORD}", "secret") for k, v in node["environment"].items()
    }
    config = load_config([], environ=env)
    assert config.store.startswith("postgresql://") and config.workers == 2
    assert config.metrics_port == 9400
    assert "7000:7000/udp" in node["ports"]


def test_node_toml_is_a_valid_config() -> None:
    config = load_config(["--config", str(DEPLOY / "node.toml")], environ={})
    assert config.store.startswith("postgresql://") and config.workers == 2


def test_systemd_unit_parses_and_its_command_line_is_valid() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "qpc-node.service").read_text(encoding="utf-8"))
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/qpc-node")
    args = [str(DEPLOY / "node.toml") if a.endswith("node.toml") else a for a in argv[1:]]
    load_config(args, environ={})
    assert unit["Service"]["User"] == "qpc-node"
    assert "postgresql.service" in unit["Unit"]["Requires"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_finds_only_the_missing_binary(tmp_path: Path) -> None:
    unit = tmp_path / "qpc-node.service"
    unit.write_text((DEPLOY / "qpc-node.service").read_text(encoding="utf-8"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if line.strip() and "is not executable" not in line and "qpc-node" in line
    ]
    assert not problems, problems
