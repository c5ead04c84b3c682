"""CLI commands that need no server, run as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

from processes import run_cli

SEED_CONFIGS = Path(__file__).parents[1] / "unit" / "seed_configs"
REPO = Path(__file__).parents[2]


def test_validate_accepts_the_seed_production_file() -> None:
    result = run_cli("validate", "--config", str(SEED_CONFIGS / "minimal-production.yaml"))
    assert result.returncode == 0, result.stderr
    assert "minimal-production.yaml: valid" in result.stdout


def test_validate_warns_about_missing_files_but_passes() -> None:
    result = run_cli("validate", "--config", str(SEED_CONFIGS / "security.yaml"), "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert any("jwt_secret_file" in w and "does not exist yet" in w for w in report["warnings"])


def test_validate_reports_errors_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "caxton.yaml"
    bad.write_text("server:\n  port: 8080\n  shutdown_timout: 5s\nlogging:\n  format: jsn\n")
    result = run_cli("validate", "--config", str(bad))
    assert result.returncode == 1
    assert "unknown key server.shutdown_timout at line 3; did you mean shutdown_timeout?" in (
        result.stderr
    )
    assert "logging.format at line 5: expected one of json, text" in result.stderr
    as_json = run_cli("validate", "--config", str(bad), "-o", "json")
    assert as_json.returncode == 1
    assert len(json.loads(as_json.stdout)["errors"]) == 2


def test_conf_files_validate() -> None:
    for name in ("caxton.yaml", "production.yaml"):
        result = run_cli("validate", "--config", str(REPO / "conf" / name))
        assert result.returncode == 0, (name, result.stderr)


def test_usage_errors_exit_2() -> None:
    assert run_cli("validate").returncode == 2
    assert run_cli("no-such-command").returncode == 2


def test_version() -> None:
    result = run_cli("version", "-o", "json")
    assert result.returncode == 0
    from caxton import __version__

    assert json.loads(result.stdout)["version"] == __version__
    assert __version__ in run_cli("--version").stdout
