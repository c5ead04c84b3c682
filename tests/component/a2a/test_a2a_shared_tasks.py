"""A2A tasks shared by the instances of a cluster (issue #19): two Caxton servers on one
PostgreSQL, the ``a2a-sdk`` client sending to one and getting, listing, following and
cancelling on the other; and a task whose instance is gone is marked failed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest
import trio
from a2a.types import a2a_pb2
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError
from a2a_servers import follow_and_cancel, sdk_client, start_a2a_server, user_message
from google.protobuf import json_format

if TYPE_CHECKING:
    from pathlib import Path

    from a2a.client import Client

pytestmark = pytest.mark.slow


async def send(client: Client, text: str, **options: str) -> a2a_pb2.Task:
    request = a2a_pb2.SendMessageRequest(message=user_message(text, **options))
    (event,) = [e async for e in client.send_message(request)]
    return event.task


def state(task: a2a_pb2.Task) -> str:
    return a2a_pb2.TaskState.Name(task.status.state)


def gone_instance_row(url: str, *, task_id: str, owner: str) -> None:
    """A task left working by an instance that died long ago (no heartbeat row)."""
    old = time.time() - 600
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO a2a_tasks (id, context_id, agent, caller, instance, state, "
            "status_message, history, artifacts, size_bytes, created_at, updated_at) "
            "VALUES (%s, %s, 'echo', %s, 'gone-1-dead', 'TASK_STATE_WORKING', NULL, '[]', "
            "'[]', 0, %s, %s)",
            (task_id, f"ctx-{task_id}", owner, old, old),
        )


async def test_two_instances_on_one_postgres_share_a2a_tasks(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    shared = {"storage__backend": "postgres", "storage__postgres__url": postgres_url}
    a = await start_a2a_server(nursery, tmp_path / "a", **shared)
    gone_instance_row(postgres_url, task_id="orphan-1", owner="client:a2a-client")
    b = await start_a2a_server(nursery, tmp_path / "b", **shared)
    async with (
        httpx.AsyncClient(headers={"X-API-Key": a.key}, timeout=30) as http_a,
        httpx.AsyncClient(headers={"X-API-Key": b.key}, timeout=30) as http_b,
    ):
        on_a = await sdk_client(http_a, a.url, "echo")
        on_b = await sdk_client(http_b, b.url, "echo")

        # sent to A, read on B: the task, its reply, its history
        first = await send(on_a, "hello from A")
        assert state(first) == "TASK_STATE_COMPLETED"
        got = await on_b.get_task(a2a_pb2.GetTaskRequest(id=first.id))
        assert state(got) == "TASK_STATE_COMPLETED"
        reply = json_format.MessageToDict(got.artifacts[0].parts[0].data)
        assert reply["content"] == "hello from A"
        assert [m.role for m in got.history] == [a2a_pb2.ROLE_USER, a2a_pb2.ROLE_AGENT]

        # ListTasks on B, paginated as A2A says (most recently updated first)
        second = await send(on_a, "again", context_id=first.context_id)
        page = await on_b.list_tasks(
            a2a_pb2.ListTasksRequest(context_id=first.context_id, page_size=1)
        )
        assert (page.total_size, [t.id for t in page.tasks]) == (2, [second.id])
        assert page.next_page_token
        rest = await on_b.list_tasks(
            a2a_pb2.ListTasksRequest(
                context_id=first.context_id, page_size=1, page_token=page.next_page_token
            )
        )
        assert [t.id for t in rest.tasks] == [first.id]
        assert rest.next_page_token == ""
        # another caller finds none of them on either instance
        async with httpx.AsyncClient(headers={"X-API-Key": b.other_key}) as other_http:
            other = await sdk_client(other_http, b.url, "echo")
            with pytest.raises(TaskNotFoundError):
                await other.get_task(a2a_pb2.GetTaskRequest(id=first.id))

        # the instance that ran orphan-1 is gone: B marked it failed when it started
        orphan = await on_b.get_task(a2a_pb2.GetTaskRequest(id="orphan-1"))
        assert state(orphan) == "TASK_STATE_FAILED"
        assert "gone-1-dead" in orphan.status.message.parts[0].text

        # a slow call running on A: B follows it, and cancels it; A's call stops
        slow_a = await sdk_client(http_a, a.url, "slow")
        slow_b = await sdk_client(http_b, b.url, "slow")
        request = a2a_pb2.SendMessageRequest(message=user_message("work"))
        request.configuration.return_immediately = True
        (started,) = [e async for e in slow_a.send_message(request)]
        running = started.task
        with trio.fail_after(10):
            while state(seen := await slow_b.get_task(a2a_pb2.GetTaskRequest(id=running.id))) != (
                "TASK_STATE_WORKING"
            ):
                await trio.sleep(0.05)
        assert seen.context_id == running.context_id
        follower = await sdk_client(http_b, b.url, "slow", streaming=True)
        followed, canceled, took = await follow_and_cancel(
            follower, slow_b, running.id, subscribe_within=10
        )
        assert took < 3, took  # the WASM guest works for 20 s unless stopped
        assert state(canceled) == "TASK_STATE_CANCELED"
        assert followed[0].task.id == running.id
        assert a2a_pb2.TaskState.Name(followed[-1].status_update.status.state) == (
            "TASK_STATE_CANCELED"
        )
        # on A, the owner: the call ended, nothing of it runs any more
        on_owner = await slow_a.get_task(a2a_pb2.GetTaskRequest(id=running.id))
        assert state(on_owner) == "TASK_STATE_CANCELED"
        metrics = (await http_a.get(str(a.info.metrics_url))).text
        assert "caxton_a2a_tasks_running 0.0" in metrics
        with pytest.raises(TaskNotCancelableError):
            await slow_b.cancel_task(a2a_pb2.CancelTaskRequest(id=running.id))
