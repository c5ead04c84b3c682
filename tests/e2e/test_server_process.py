"""The server as operators run it: a real ``caxton start`` process, signals and all."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from processes import caxton_env, run_cli_async, start_server, wait_exit, write_config

if TYPE_CHECKING:
    from pathlib import Path


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def test_sigterm_lets_an_in_flight_request_finish(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    server = await start_server(nursery, "--config", str(config))
    body = json.dumps({"content": 'name = "slow-upload"\ndescription = "arrives late"\n'}).encode()
    host, port = _host_port(server.api_url)
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(
                b"POST /api/v1/agents/validate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            await trio.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            await server.wait_for_message("SIGTERM: stopping")
            await trio.sleep(0.3)  # the request is still in flight while the server drains
            await stream.send_all(body[10:])
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
                if b"\r\n\r\n" in response and response.endswith(b"}"):
                    break
        head, _, payload = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response
        assert json.loads(payload)["valid"] is True
        assert await wait_exit(server.process) == 0
    assert "Caxton stopped" in server.messages()


async def test_sigterm_closes_event_streams_with_1001_quickly(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    from trio_websocket import ConnectionClosed
    from wsclient import open_ws

    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    server = await start_server(nursery, "--config", str(config))
    url = server.api_url.replace("http://", "ws://") + "/ws/events"
    with trio.fail_after(
        8
    ):  # well under shutdown_timeout (10s): streams are closed, not waited out
        async with open_ws(url) as ws:
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1001
        assert await wait_exit(server.process) == 0


async def test_second_server_on_the_same_data_dir_is_refused(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    first = await start_server(nursery, "--config", str(config))
    second = await run_cli_async("start", "--config", str(config))
    assert second.returncode == 1
    stderr = second.stderr.decode()
    assert f"data_dir {tmp_path / 'data'} is already in use by another Caxton server" in stderr
    assert "Traceback" not in stderr
    async with httpx.AsyncClient() as client:  # the first one is untouched
        assert (await client.get(f"{first.api_url}/ready")).status_code == 200
    first.process.send_signal(signal.SIGTERM)
    assert await wait_exit(first.process) == 0


async def test_health_command_exit_codes(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    server = await start_server(nursery, "--config", str(config))
    up = await run_cli_async("--url", server.api_url, "health")
    assert up.returncode == 0, up.stderr
    assert b"healthy" in up.stdout
    as_json = await run_cli_async("--url", server.api_url, "health", "-o", "json")
    assert json.loads(as_json.stdout)["healthy"] is True
    env = caxton_env(CAXTON_URL=server.api_url)
    assert (await run_cli_async("health", env=env)).returncode == 0
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0
    down = await run_cli_async("--url", server.api_url, "health", "--timeout", "0.5")
    assert down.returncode == 1
    assert b"cannot connect" in down.stderr


async def test_sighup_rereads_the_log_level_and_keeps_serving(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data", "logging:\n  level: info\n")
    server = await start_server(nursery, "--config", str(config))
    config.write_text(config.read_text().replace("level: info", "level: debug"))
    server.process.send_signal(signal.SIGHUP)
    await server.wait_for_message("SIGHUP: configuration re-read; log level debug")
    config.write_text(config.read_text() + "bogus_section: 1\n")
    server.process.send_signal(signal.SIGHUP)
    record = await server.wait_for_message("SIGHUP: configuration not reloaded")
    assert "unknown key bogus_section" in record["message"]
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{server.api_url}/ready")).status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0


async def test_restart_after_a_crash_is_counted_and_reported(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    first = await start_server(nursery, "--config", str(config))
    first.process.kill()
    await wait_exit(first.process)
    second = await start_server(nursery, "--config", str(config))
    assert any("did not stop cleanly" in m for m in second.messages())
    assert second.metrics_url is not None
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(second.metrics_url)).text
    assert "\ncaxton_server_restarts_total 1.0\n" in metrics
    second.process.send_signal(signal.SIGTERM)
    assert await wait_exit(second.process) == 0
    third = await start_server(nursery, "--config", str(config))
    assert not any("did not stop cleanly" in m for m in third.messages())
    third.process.send_signal(signal.SIGINT)
    assert await wait_exit(third.process) == 0


async def test_flags_win_over_environment_over_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "from-file")
    env = caxton_env(CAXTON_DATA_DIR=str(tmp_path / "from-env"))
    with_env = await start_server(nursery, "--config", str(config), env=env)
    assert (tmp_path / "from-env" / "state.json").exists()
    assert not (tmp_path / "from-file").exists()
    with_env.process.send_signal(signal.SIGTERM)
    assert await wait_exit(with_env.process) == 0

    flag = await start_server(
        nursery, "--config", str(config), "--data-dir", str(tmp_path / "from-flag"), env=env
    )
    assert (tmp_path / "from-flag" / "state.json").exists()
    flag.process.send_signal(signal.SIGTERM)
    assert await wait_exit(flag.process) == 0


async def test_bad_config_fails_start_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "caxton.yaml"
    config.write_text("server:\n  port: 0\n  data_dir: x\nmemory:\n  embeding_model: y\n")
    result = await run_cli_async("start", "--config", str(config))
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "unknown key memory.embeding_model at line 5; did you mean embedding_model?" in stderr
    assert "Traceback" not in stderr


async def test_start_refuses_authentication_no_caller_could_pass(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "caxton.yaml",
        tmp_path / "data",
        "security:\n  authentication:\n    enabled: true\n",
    )
    result = await run_cli_async("start", "--config", str(config))
    assert result.returncode == 1
    assert b"no caller could ever authenticate" in result.stderr
    assert not (tmp_path / "data" / "state.json").exists()
