"""A config agent tried as a new user would: the scripted LLM server, `caxton start`, then
`caxton chat` streaming the answer (all real processes)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from processes import run_cli_async, start_llm_server, start_server, wait_exit, write_config

if TYPE_CHECKING:
    import trio

REPO = Path(__file__).parents[2]


async def test_chat_streams_a_config_agent_answer(nursery: trio.Nursery, tmp_path: Path) -> None:
    llm, llm_url = await start_llm_server(nursery, REPO / "tools" / "llm-demo.yaml")
    agents = tmp_path / "agents"
    agents.mkdir()
    text = (REPO / "agents" / "assistant.toml").read_text()
    (agents / "assistant.toml").write_text(
        text.replace('model = "llama3.2"', f'model = "llama3.2"\nbase_url = "{llm_url}/v1"')
    )
    (agents / "offline.toml").write_text(
        text.replace('name = "assistant"', 'name = "offline"').replace(
            'model = "llama3.2"', 'model = "llama3.2"\nbase_url = "http://127.0.0.1:9/v1"'
        )
    )
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    config.write_text(config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n"))
    server = await start_server(nursery, "--config", str(config))

    result = await run_cli_async("--url", server.api_url, "chat", "assistant", "hello there")
    assert result.returncode == 0, result.stderr.decode()
    assert "Hello! I am a scripted stand-in for an LLM" in result.stdout.decode()

    as_json = await run_cli_async(
        "--url", server.api_url, "chat", "assistant", "please remember this", "-o", "json"
    )
    assert as_json.returncode == 0, as_json.stderr.decode()
    assert json.loads(as_json.stdout)["content"] == "Stored in memory."
    search = await run_cli_async("--url", server.api_url, "memory", "search", "demo note")
    assert "demo" in search.stdout.decode()

    down = await run_cli_async("--url", server.api_url, "chat", "offline", "hello")
    assert down.returncode == 1
    stderr = down.stderr.decode()
    assert "LLM_UNAVAILABLE" in stderr
    assert "http://127.0.0.1:9/v1" in stderr
    assert "Traceback" not in stderr

    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0
    llm.send_signal(signal.SIGTERM)
    await wait_exit(llm)
