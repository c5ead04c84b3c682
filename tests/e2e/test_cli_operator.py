"""What surprised an operator running the guide's commands, as real subprocesses (issue #13)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import trio
from processes import caxton_env, run_cli, run_cli_async, start_server, write_config

if TYPE_CHECKING:
    from pathlib import Path

GOOD_AGENT = 'name = "ok"\nsystem_prompt = "x"\n'
BAD_AGENT = 'name = "bad agent"\nsystem_prompt = "x"\n'


def test_validate_all_uses_the_agents_dir_of_caxton_config_path(tmp_path: Path) -> None:
    agents = tmp_path / "server-agents"
    agents.mkdir()
    (agents / "ok.toml").write_text(GOOD_AGENT)
    (agents / "bad.toml").write_text(BAD_AGENT)
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    config.write_text(config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n"))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()  # no ./agents here
    env = caxton_env(CAXTON_CONFIG_PATH=str(config))
    result = run_cli("agents", "validate-all", "-o", "json", env=env, cwd=elsewhere)
    assert result.returncode == 1, result.stderr  # bad.toml is invalid
    report = json.loads(result.stdout)
    assert report["directory"] == str(agents)
    assert {f["valid"] for f in report["files"]} == {True, False}


async def test_a_client_reads_only_the_server_address_from_the_config(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    server = await start_server(nursery, "--config", str(config))
    port = server.api_url.rsplit(":", 1)[1]
    # the same file as the client sees it: the port the server got, and a ${VAR} only the
    # server's environment defines
    client_config = tmp_path / "client.yaml"
    client_config.write_text(
        config.read_text().replace("port: 0", f"port: {port}", 1)
        + "logging:\n  file: ${SERVER_ONLY_LOG_DIR}/caxton.log\n"
    )
    env = caxton_env(CAXTON_CONFIG_PATH=str(client_config))
    with trio.fail_after(30):
        health = await run_cli_async("health", "-o", "json", env=env)
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["url"] == f"http://127.0.0.1:{port}"
    # the file is still checked in full where that is the point
    validated = run_cli("validate", env=env)
    assert validated.returncode == 1
    assert "SERVER_ONLY_LOG_DIR is not set" in validated.stderr
    server.process.terminate()


def test_validate_warns_about_every_setting_without_effect(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "caxton.yaml",
        tmp_path / "data",
        "  tracing_enabled: false\n"
        "  otlp_endpoint: http://collector:4317\n"
        "security:\n"
        "  authentication:\n"
        "    enabled: false\n"
        "    token_expiry: 1h\n"
        "  api_keys:\n"
        "    key_file: keys.yaml\n"
        "  rate_limiting:\n"
        "    requests_per_minute: 10\n"
        "  tls:\n"
        "    enabled: false\n"
        "    cert_file: cert.pem\n"
        "  cors:\n"
        "    max_age: 1h\n"
        "memory:\n"
        "  backend: embedded\n"
        "  qdrant_config:\n"
        "    url: http://qdrant:6333\n"
        "llm:\n"
        "  provider: none\n"
        "  model: gpt-4o\n",
    )
    result = run_cli("validate", "--config", str(config), "-o", "json")
    assert result.returncode == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    no_effect = sorted(w.split(" has no effect")[0] for w in warnings if "has no effect" in w)
    assert no_effect == [
        "llm.model",
        "observability.otlp_endpoint",
        "security.api_keys.key_file",
        "security.authentication.token_expiry",
        "security.cors.max_age",
        "security.rate_limiting.requests_per_minute",
        "security.tls.cert_file",
    ]
    quiet = run_cli("validate", "--config", str(write_config(tmp_path / "q.yaml", tmp_path / "d")))
    assert "has no effect" not in quiet.stdout
