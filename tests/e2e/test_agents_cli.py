"""The agents commands against a real server process, as an operator types them."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from processes import run_cli_async, start_server, wait_exit, write_config

if TYPE_CHECKING:
    import trio

REPO_AGENTS = Path(__file__).parents[2] / "agents"


def prepare(tmp_path: Path) -> tuple[Path, Path]:
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("echo", "counter"):
        shutil.copy(REPO_AGENTS / f"{name}.toml", agents)
        shutil.copy(REPO_AGENTS / f"{name}.wat", agents)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "greeter.wat").write_text((REPO_AGENTS / "echo.wat").read_text())
    (extra / "greeter.toml").write_text(
        'name = "greeter"\nversion = "1.0.0"\ncapabilities = ["greeting"]\n'
        '[wasm]\nmodule = "greeter.wat"\n'
    )
    config = write_config(
        tmp_path / "caxton.yaml", tmp_path / "data", "  \nagents:\n  debounce: 50ms\n"
    )
    text = config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n")
    config.write_text(text)
    return config, extra


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    result = await run_cli_async("--url", url, *args)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_agents_commands(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, extra = prepare(tmp_path)
    server = await start_server(nursery, "--config", str(config))
    url = server.api_url

    code, out, _ = await cli(url, "agents", "list")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "NAME",
        "TYPE",
        "VERSION",
        "CANARY",
        "STATUS",
        "CAPABILITIES",
        "LAST",
        "RELOAD",
    ]
    assert any(
        line.split()[:5] == ["echo", "wasm", "1.0.0", "-", "running"] for line in out.splitlines()
    )
    code, out, _ = await cli(url, "agents", "list", "-o", "json")
    assert {a["name"] for a in json.loads(out)["agents"]} == {"echo", "counter"}

    code, out, _ = await cli(url, "chat", "echo", "hello over websocket")
    assert code == 0
    assert json.loads(out)["content"] == "hello over websocket"

    code, out, err = await cli(url, "agents", "deploy", str(extra / "greeter.toml"))
    assert code == 0, err
    assert "deployed greeter 1.0.0 (running)" in out
    code, _, err = await cli(url, "agents", "deploy", str(extra / "greeter.toml"))
    assert code == 1
    assert "already exists" in err
    assert "HTTP 409" in err

    (extra / "greeter.toml").write_text(
        (extra / "greeter.toml").read_text().replace("1.0.0", "1.1.0")
    )
    code, out, err = await cli(url, "agents", "deploy", "--replace", str(extra / "greeter.toml"))
    assert code == 0, err
    code, out, _ = await cli(url, "agents", "versions", "greeter")
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["1.1.0", "3"],
        ["1.0.0", "2"],
    ] or [line.split()[0] for line in out.splitlines()[1:]] == ["1.1.0", "1.0.0"]
    code, out, _ = await cli(url, "agents", "rollback", "greeter")
    assert code == 0
    assert "now 1.0.0" in out
    code, out, _ = await cli(url, "agents", "show", "greeter", "--verbose")
    assert "status:       running" in out
    assert "versions:" in out

    code, out, _ = await cli(url, "agents", "performance-report")
    assert code == 0
    echo_row = next(line.split() for line in out.splitlines() if line.startswith("echo "))
    assert echo_row[:5] == ["echo", "wasm", "running", "1", "0"]
    assert echo_row[8] == "fuel"
    assert int(echo_row[7]) > 0

    code, out, _ = await cli(url, "logs", "counter", "--tail", "3")
    assert code == 0
    assert "loading -> running" in out
    code, out, _ = await cli(url, "agents", "restart", "counter")
    assert (code, out.strip()) == (0, "counter: running")
    code, out, _ = await cli(url, "agents", "restart", "--failing-only")
    assert (code, out.strip()) == (0, "no failing agents")
    code, _, err = await cli(url, "agents", "remove", "echo")
    assert code == 1
    assert "delete or rename that file" in err

    # API-deployed agents come back after a restart; file agents come back from the files
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0
    again = await start_server(nursery, "--config", str(config))
    code, out, _ = await cli(again.api_url, "agents", "list", "-o", "json")
    listed = {a["name"]: a for a in json.loads(out)["agents"]}
    assert set(listed) == {"echo", "counter", "greeter"}
    assert listed["greeter"]["version"] == "1.0.0"
    code, out, _ = await cli(again.api_url, "chat", "greeter", "back again")
    assert json.loads(out)["content"] == "back again"
    code, out, _ = await cli(again.api_url, "agents", "remove", "greeter")
    assert code == 0
    again.process.send_signal(signal.SIGTERM)
    assert await wait_exit(again.process) == 0


async def test_validate_commands_need_no_server(tmp_path: Path) -> None:
    _config, _extra = prepare(tmp_path)
    agents = tmp_path / "agents"
    ok = await run_cli_async("agents", "validate", str(agents / "echo.toml"))
    assert ok.returncode == 0
    assert b"echo.toml: valid" in ok.stdout
    broken = agents / "broken.toml"
    broken.write_text(
        'name = "broken"\nversion = "1.0.0"\ntools = ["http_clinet"]\n'
        'system_prompt = "hi"\n[llm]\ntemprature = 0.5\n'
    )
    bad = await run_cli_async("agents", "validate", str(broken))
    assert bad.returncode == 1
    stderr = bad.stderr.decode()
    assert "line 3" in stderr
    assert "http_client" in stderr  # the suggestion
    assert "temperature" in stderr
    every = await run_cli_async("agents", "validate-all", "--dir", str(agents))
    assert every.returncode == 1
    assert b"3 files, 1 invalid" in every.stdout
    as_json = await run_cli_async("agents", "validate-all", "--dir", str(agents), "-o", "json")
    files = {Path(f["file"]).name: f["valid"] for f in json.loads(as_json.stdout)["files"]}
    assert files == {"broken.toml": False, "counter.toml": True, "echo.toml": True}
