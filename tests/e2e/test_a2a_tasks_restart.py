"""A one-node server (DuckDB) keeps its A2A tasks in its store (issue #19): after a SIGKILL and
a restart, GetTask and ListTasks still answer for a task it finished, and the task that was
running when it died is failed, not left working forever."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2
from google.protobuf import json_format
from processes import REPO, start_server, wait_exit, write_config
from servers import write_slow_agent

if TYPE_CHECKING:
    from pathlib import Path

    from a2a.client import Client

pytestmark = pytest.mark.slow


async def client_for(http: httpx.AsyncClient, base_url: str, agent: str) -> Client:
    card = await A2ACardResolver(http, f"{base_url}/a2a/{agent}").get_agent_card()
    return ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)


def request(text: str, *, now: bool = False) -> a2a_pb2.SendMessageRequest:
    message = a2a_pb2.Message(message_id=f"m-{time.monotonic_ns()}", role=a2a_pb2.ROLE_USER)
    message.parts.add(text=text)
    sent = a2a_pb2.SendMessageRequest(message=message)
    sent.configuration.return_immediately = now
    return sent


def state(task: a2a_pb2.Task) -> str:
    return a2a_pb2.TaskState.Name(task.status.state)


async def test_tasks_outlive_a_killed_one_node_server(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    write_slow_agent(agents)
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO / "agents" / name, agents / name)
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    config.write_text(
        config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n", 1)
    )
    server = await start_server(nursery, "--config", str(config))
    async with httpx.AsyncClient(timeout=30) as http:
        echo = await client_for(http, server.api_url, "echo")
        (done,) = [e async for e in echo.send_message(request("kept across restarts"))]
        finished = done.task
        assert state(finished) == "TASK_STATE_COMPLETED"
        slow = await client_for(http, server.api_url, "slow")
        (started,) = [e async for e in slow.send_message(request("work", now=True))]
        running = started.task
        with trio.fail_after(10):
            while state(await slow.get_task(a2a_pb2.GetTaskRequest(id=running.id))) != (
                "TASK_STATE_WORKING"
            ):
                await trio.sleep(0.05)
    server.process.kill()
    await wait_exit(server.process)

    again = await start_server(nursery, "--config", str(config))
    async with httpx.AsyncClient(timeout=30) as http:
        echo = await client_for(http, again.api_url, "echo")
        got = await echo.get_task(a2a_pb2.GetTaskRequest(id=finished.id))
        assert state(got) == "TASK_STATE_COMPLETED"
        assert got.context_id == finished.context_id
        reply = json_format.MessageToDict(got.artifacts[0].parts[0].data)
        assert reply["content"] == "kept across restarts"
        listed = await echo.list_tasks(a2a_pb2.ListTasksRequest())
        assert [t.id for t in listed.tasks] == [finished.id]
        slow = await client_for(http, again.api_url, "slow")
        lost = await slow.get_task(a2a_pb2.GetTaskRequest(id=running.id))
        assert state(lost) == "TASK_STATE_FAILED"
        assert "stopped before it ended" in lost.status.message.parts[0].text
    again.process.terminate()
    assert await wait_exit(again.process) == 0
