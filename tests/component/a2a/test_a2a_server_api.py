"""Caxton's A2A 1.0 endpoints, driven by the ``a2a-sdk`` client (issue #19): cards, send,
stream, get, list, cancel, with authentication, audit and metrics; and bad input."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2
from a2a.utils.errors import (
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
)
from a2a_servers import follow_and_cancel, sdk_client, start_a2a_server, user_message
from google.protobuf import json_format
from servers import read_response_head

if TYPE_CHECKING:
    from pathlib import Path

    from a2a.client import Client
    from a2a_servers import A2AServer


async def send(client: Client, text: str, **options: Any) -> list[a2a_pb2.StreamResponse]:
    request = a2a_pb2.SendMessageRequest(message=user_message(text, **options))
    return [event async for event in client.send_message(request)]


@pytest.fixture
async def a2a_server(nursery: trio.Nursery, tmp_path: Path) -> A2AServer:
    return await start_a2a_server(nursery, tmp_path, messaging__max_message_size="2KB")


async def rpc(
    http: httpx.AsyncClient, url: str, body: bytes | dict[str, Any], **headers: str
) -> dict[str, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await http.post(
        url, content=content, headers={"Content-Type": "application/json", **headers}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.slow
async def test_the_sdk_client_sends_streams_gets_lists_and_cancels(a2a_server: A2AServer) -> None:
    url = a2a_server.url
    async with httpx.AsyncClient(headers={"X-API-Key": a2a_server.key}, timeout=30) as http:
        # the cards: public, JSON-RPC at /a2a/{name}, A2A 1.0, skills = capabilities
        anonymous = await httpx.AsyncClient().__aenter__()
        try:
            card = await A2ACardResolver(anonymous, f"{url}/a2a/echo").get_agent_card()
            listing = (await anonymous.get(f"{url}/.well-known/agent-card.json")).json()
            refused = await anonymous.post(
                f"{url}/a2a/echo", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask"}
            )
        finally:
            await anonymous.aclose()
        assert [s.id for s in card.skills] == ["echo"]
        interface = card.supported_interfaces[0]
        assert (interface.url, interface.protocol_binding, interface.protocol_version) == (
            f"{url}/a2a/echo",
            "JSONRPC",
            "1.0",
        )
        assert card.capabilities.streaming
        assert not card.capabilities.push_notifications
        assert set(card.security_schemes) == {"apiKey", "bearer"}
        assert card.security_schemes["apiKey"].api_key_security_scheme.name == "X-API-Key"
        assert sorted(c["name"] for c in listing["agents"]) == ["echo", "slow"]
        assert sorted(s["id"] for s in listing["skills"]) == ["echo", "slow"]
        # the endpoint itself needs a credential, answered in the API's error envelope
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "UNAUTHENTICATED"

        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        # SendMessage: the reply is the task's artifact, its contextId a conversation
        (event,) = await send(client, "hello over A2A")
        task = event.task
        assert a2a_pb2.TaskState.Name(task.status.state) == "TASK_STATE_COMPLETED"
        # the echo's reply is a JSON object: a data part
        reply = json_format.MessageToDict(task.artifacts[0].parts[0].data)
        assert reply["content"] == "hello over A2A"
        assert reply["receiver"] == "echo"
        assert reply["sender"] == "client:a2a-client"
        assert [m.role for m in task.history] == [a2a_pb2.ROLE_USER, a2a_pb2.ROLE_AGENT]
        conversation = (await http.get(f"{url}/api/v1/conversations/{task.context_id}")).json()
        assert [m["sender"] for m in conversation["messages"]] == ["client:a2a-client", "echo"]

        # the same context goes on in the same conversation
        (again,) = await send(client, "second turn", context_id=task.context_id)
        assert again.task.context_id == task.context_id
        assert again.task.id != task.id

        # SendStreamingMessage: the task, working, the echo's two chunks, the artifact, done
        streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
        events = await send(streaming, "streamed hello")
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[0] == "task"
        # the stream starts from the task as it was sent, whatever has happened since
        first = events[0].task.status.state
        assert a2a_pb2.TaskState.Name(first) == "TASK_STATE_SUBMITTED"
        states = [
            a2a_pb2.TaskState.Name(e.status_update.status.state)
            for e in events
            if e.WhichOneof("payload") == "status_update"
        ]
        assert states == ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
        chunks = [
            e.artifact_update.artifact.parts[0].text
            for e in events
            if e.WhichOneof("payload") == "artifact_update" and not e.artifact_update.last_chunk
        ]
        assert len(chunks) == 2
        assert json.loads("".join(chunks))["content"] == "streamed hello"
        final = events[-1].status_update.status
        assert a2a_pb2.TaskState.Name(final.state) == "TASK_STATE_COMPLETED"
        streamed_id = events[0].task.id

        # GetTask and ListTasks
        got = await client.get_task(a2a_pb2.GetTaskRequest(id=task.id, history_length=1))
        assert got.id == task.id
        assert len(got.history) == 1
        listed = await client.list_tasks(a2a_pb2.ListTasksRequest(context_id=task.context_id))
        assert {t.id for t in listed.tasks} == {task.id, again.task.id}
        everything = await client.list_tasks(a2a_pb2.ListTasksRequest(page_size=2))
        assert everything.total_size == 3
        assert len(everything.tasks) == 2
        assert everything.tasks[0].id == streamed_id  # most recently updated first
        rest = await client.list_tasks(
            a2a_pb2.ListTasksRequest(page_size=2, page_token=everything.next_page_token)
        )
        assert [t.id for t in rest.tasks] == [task.id]

        # another caller sees none of these tasks
        async with httpx.AsyncClient(headers={"X-API-Key": a2a_server.other_key}) as other_http:
            other = ClientFactory(ClientConfig(httpx_client=other_http)).create(card)
            with pytest.raises(TaskNotFoundError):
                await other.get_task(a2a_pb2.GetTaskRequest(id=task.id))
            assert len((await other.list_tasks(a2a_pb2.ListTasksRequest())).tasks) == 0

        # CancelTask stops the running call through its cancel scope
        slow = await sdk_client(http, url, "slow")
        request = a2a_pb2.SendMessageRequest(message=user_message("work"))
        request.configuration.return_immediately = True
        (started,) = [e async for e in slow.send_message(request)]
        running = started.task
        assert a2a_pb2.TaskState.Name(running.status.state) in (
            "TASK_STATE_SUBMITTED",
            "TASK_STATE_WORKING",
        )
        # SubscribeToTask follows it from another stream until the cancel ends it
        follower = await sdk_client(http, url, "slow", streaming=True)
        followed, canceled, took = await follow_and_cancel(
            follower, slow, running.id, subscribe_within=5
        )
        assert took < 3
        assert followed[0].task.id == running.id
        last = followed[-1].status_update.status
        assert a2a_pb2.TaskState.Name(last.state) == "TASK_STATE_CANCELED"
        assert a2a_pb2.TaskState.Name(canceled.status.state) == "TASK_STATE_CANCELED"
        health = (await http.get(f"{url}/api/v1/agents/slow")).json()
        assert health["status"] == "running"
        with pytest.raises(TaskNotCancelableError):
            await slow.cancel_task(a2a_pb2.CancelTaskRequest(id=running.id))

        # push notifications are not offered
        with pytest.raises(PushNotificationNotSupportedError):
            await client.create_task_push_notification_config(
                a2a_pb2.TaskPushNotificationConfig(task_id=task.id, url="https://x.example/")
            )

    # audit lines for the calls that made agents work, with the protocol
    with trio.fail_after(10):
        while True:
            lines = [json.loads(x) for x in a2a_server.audit_log.read_text().splitlines()]
            a2a_lines = [x for x in lines if x.get("protocol") == "a2a"]
            if any(x["method"] == "CancelTask" for x in a2a_lines):
                break
            await trio.sleep(0.05)
    methods = [x["method"] for x in a2a_lines]
    assert methods.count("SendMessage") == 3
    assert "SendStreamingMessage" in methods
    assert a2a_lines[0]["identity"] == "a2a-client"
    assert a2a_lines[0]["route"] == "/a2a/<name>"
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(str(a2a_server.info.metrics_url))).text
    assert 'caxton_a2a_requests_total{method="SendMessage",outcome="ok"} 3.0' in metrics
    assert 'caxton_a2a_requests_total{method="GetTask",outcome="TASK_NOT_FOUND"} 1.0' in metrics


@pytest.mark.slow
async def test_bad_input_gets_clear_json_rpc_errors(a2a_server: A2AServer) -> None:
    url = a2a_server.url
    endpoint = f"{url}/a2a/echo"
    v1 = {"A2A-Version": "1.0"}
    good = {
        "jsonrpc": "2.0",
        "id": "ok",
        "method": "SendMessage",
        "params": {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}},
    }
    async with httpx.AsyncClient(headers={"X-API-Key": a2a_server.key}, timeout=30) as http:
        malformed = await rpc(http, endpoint, b'{"jsonrpc": "2.0", "id": 1, "method": ', **v1)
        assert malformed["error"]["code"] == -32700
        assert "not valid JSON" in malformed["error"]["message"]
        deep = b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"a": '
        nested = await rpc(http, endpoint, deep + b"[" * 100 + b"]" * 100 + b"}}", **v1)
        assert nested["error"]["code"] == -32600
        assert "nested deeper than 64" in nested["error"]["message"]
        batch = await rpc(http, endpoint, b"[]", **v1)
        assert batch["error"]["code"] == -32600
        no_version = await rpc(http, endpoint, {**good, "jsonrpc": "1.0"}, **v1)
        assert no_version["error"]["code"] == -32600
        unknown = await rpc(http, endpoint, {**good, "id": 7, "method": "message/send"}, **v1)
        assert unknown["id"] == 7
        assert unknown["error"]["code"] == -32601
        assert "SendMessage" in unknown["error"]["message"]
        bad_params = await rpc(http, endpoint, {**good, "params": {"message": "hi"}}, **v1)
        assert bad_params["error"]["code"] == -32602
        empty = {**good, "params": {"message": {"messageId": "m", "parts": []}}}
        assert (await rpc(http, endpoint, empty, **v1))["error"]["code"] == -32602
        file_part = {"messageId": "m", "parts": [{"url": "file:///etc/passwd"}]}
        files = await rpc(http, endpoint, {**good, "params": {"message": file_part}}, **v1)
        assert files["error"]["code"] == -32005
        bad_context = {"messageId": "m", "contextId": "../x y", "parts": [{"text": "hi"}]}
        context = await rpc(http, endpoint, {**good, "params": {"message": bad_context}}, **v1)
        assert context["error"]["code"] == -32602
        assert "contextId" in context["error"]["message"]

        # a wrong A2A-Version, and none (that is 0.3)
        for headers in ({"A2A-Version": "0.3"}, {"A2A-Version": "2.0"}, {}):
            wrong = await rpc(http, endpoint, good, **headers)
            assert wrong["error"]["code"] == -32009, headers
            assert "A2A-Version: 1.0" in wrong["error"]["message"]
            assert wrong["error"]["data"][0]["reason"] == "VERSION_NOT_SUPPORTED"

        # oversized: a message over messaging.max_message_size is a JSON-RPC error; a body
        # over server.max_request_size is refused by the API before any handler (413)
        big = {"messageId": "m", "parts": [{"text": "x" * 5000}]}
        oversized = await rpc(http, endpoint, {**good, "params": {"message": big}}, **v1)
        assert oversized["error"]["code"] == -32602
        assert oversized["error"]["data"][0]["metadata"]["caxtonCode"] == "MESSAGE_TOO_LARGE"
        host, port = url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /a2a/echo HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                b"Content-Type: application/json\r\nA2A-Version: 1.0\r\n"
                b"X-API-Key: " + a2a_server.key.encode() + b"\r\n"
                b"Content-Length: 11000000\r\n\r\n"
            )
            head = await read_response_head(stream)
        assert head.startswith(b"HTTP/1.1 413"), head

        # the loop guard holds across servers: a hop count past messaging.max_hops is refused
        looped = {"messageId": "m", "parts": [{"text": "hi"}], "metadata": {"caxtonHop": 9}}
        hops = await rpc(http, endpoint, {**good, "params": {"message": looped}}, **v1)
        assert hops["error"]["data"][0]["metadata"]["caxtonCode"] == "HOP_LIMIT_EXCEEDED"

        # the SDK maps the codes to its exceptions
        card = await A2ACardResolver(http, endpoint).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http)).create(card)
        with pytest.raises(TaskNotFoundError, match="no task 'nope'"):
            await client.get_task(a2a_pb2.GetTaskRequest(id="nope"))
        with pytest.raises(TaskNotFoundError):
            await client.cancel_task(a2a_pb2.CancelTaskRequest(id="nope"))
        with pytest.raises(InvalidParamsError):
            await client.list_tasks(a2a_pb2.ListTasksRequest(page_size=1000))

        # an unknown agent and a non-JSON body are the API's own errors
        missing = await http.post(f"{url}/a2a/nobody", json=good, headers=v1)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "AGENT_NOT_FOUND"
        form = await http.post(endpoint, content=b"x=1", headers={"Content-Type": "text/plain"})
        assert form.status_code == 415

        # nothing else was disturbed: the same connection still gets a good answer
        answer = await rpc(http, endpoint, good, **v1)
        assert answer["id"] == "ok"
        assert answer["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_a2a_can_be_switched_off(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_a2a_server(nursery, tmp_path, a2a__enabled=False)
    headers = {"X-API-Key": server.key, "A2A-Version": "1.0"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        for answer in (
            await http.get("/a2a/echo/.well-known/agent-card.json"),
            await http.get("/.well-known/agent-card.json"),
            await http.post("/a2a/echo", json={"jsonrpc": "2.0", "id": 1, "method": "ListTasks"}),
        ):
            assert answer.status_code == 404
            assert "a2a.enabled: false" in answer.json()["error"]["message"]
        # the rest of the API is as before
        reply = await http.post("/api/v1/agents/echo/messages", json={"content": "hi"})
        assert reply.status_code == 200
