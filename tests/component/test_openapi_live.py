"""Real answers of a running server match its own OpenAPI document.

One server on loopback, with WASM and config agents; every route is called (agents,
messages, conversations, capabilities, memory, admin, health, both WebSockets) and every
request body sent and every answer received is validated against the schemas of
``GET /api/v1/openapi.json``. The test ends by checking that each documented 2xx answer was
seen, so a route added later without being exercised here is noticed.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import shutil
from typing import TYPE_CHECKING, Any

import httpx
import jsonschema
import pytest
import trio
from servers import REPO, loopback_config
from wsclient import open_ws

from caxton.security.keys import KeyEntry, KeyRing, generate_key, hash_key, write_key_file
from caxton.security.roles import Role
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

JSON = "application/json"
NDJSON = "application/x-ndjson"

#: (method, OpenAPI path, status) documented but not reached by this test, with the reason.
NOT_REACHED: dict[tuple[str, str, str], str] = {}

PROBE_WAT = """
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "probe")
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param i32 i32) (result i32)
    (call $reply (i32.const 0) (i32.const 5))
    (i32.const 0)))
"""


def probe_body(version: str) -> dict[str, str]:
    manifest = f'name = "probe"\nversion = "{version}"\ncapabilities = ["probing"]\n[wasm]\n'
    return {"manifest": manifest, "wasm_module": base64.b64encode(PROBE_WAT.encode()).decode()}


CONFIG_AGENT = """
name = "helper"
version = "1.0.0"
description = "A config agent whose LLM is not reachable"
capabilities = ["helping"]
tools = ["memory_search"]
system_prompt = "You help."

[llm]
provider = "local"
model = "nothing"
base_url = "http://127.0.0.1:9/v1"
"""

UNCONFIGURED_AGENT = """
name = "mute"
version = "1.0.0"
system_prompt = "You say nothing."
"""


@pytest.fixture
async def live(nursery: trio.Nursery, tmp_path: Path) -> ServerInfo:
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    for name in ("echo", "counter"):
        shutil.copy(REPO / "agents" / f"{name}.toml", agents_dir / f"{name}.toml")
        shutil.copy(REPO / "agents" / f"{name}.wat", agents_dir / f"{name}.wat")
    loaded = loopback_config(
        tmp_path / "data", server__agents_dir=str(agents_dir), agents__drain_timeout="5s"
    )
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info


class Api:
    """Calls the server and checks each request and answer against the document."""

    def __init__(self, client: httpx.AsyncClient, document: dict[str, Any]) -> None:
        self.client = client
        self.document = document
        self.seen: set[tuple[str, str, str]] = set()
        self.frames_seen: set[str] = set()

    def validate(self, schema: dict[str, Any], instance: object, where: str) -> None:
        validator = jsonschema.Draft202012Validator(
            {"components": self.document["components"], "allOf": [schema]}
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{where}: {errors[0].message} at {list(errors[0].path)}"

    def operation(self, method: str, path: str) -> dict[str, Any]:
        operation: dict[str, Any] = self.document["paths"][path][method.lower()]
        return operation

    async def call(
        self,
        method: str,
        path: str,
        *,
        expect: int = 200,
        json_body: object = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        **names: str,
    ) -> httpx.Response:
        """``method path`` (an OpenAPI path; ``names`` fill its ``{params}``)."""
        operation = self.operation(method, path)
        where = f"{method} {path}"
        if json_body is not None and expect < 300:
            schema = operation["requestBody"]["content"][JSON]["schema"]
            self.validate(schema, json_body, f"{where} request")
        url = path.format(**names)
        response = await self.client.request(
            method, url, json=json_body, content=content, headers=headers, params=params
        )
        assert response.status_code == expect, f"{where}: {response.status_code} {response.text}"
        self.check(method, path, response)
        return response

    def check(self, method: str, path: str, response: httpx.Response) -> None:
        responses = self.operation(method, path)["responses"]
        status = str(response.status_code)
        where = f"{method} {path} {status}"
        entry = responses.get(status) or responses.get(f"{status[0]}XX") or responses["default"]
        if "$ref" in entry:
            entry = self.document["components"]["responses"][entry["$ref"].rsplit("/", 1)[1]]
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in entry["content"], f"{where}: {media} is not documented"
        schema = entry["content"][media]["schema"]
        if media == JSON:
            self.validate(schema, response.json(), where)
        elif media == NDJSON:
            for line in response.text.splitlines():
                self.validate(schema, json.loads(line), where)
        self.seen.add((method, path, status))

    def check_frames(self, path: str, direction: str, frames: Iterable[object]) -> None:
        schema = self.operation("GET", path)["x-caxton-frames"][direction]
        for frame in frames:
            self.validate(schema, frame, f"WS {path} {direction}")
        self.frames_seen.add(path)


async def test_every_answer_matches_the_document(live: ServerInfo) -> None:
    base = live.api_urls[0]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        document = (await client.get("/api/v1/openapi.json")).json()
        api = Api(client, document)
        await api.call("GET", "/api/v1/openapi.json")
        with trio.fail_after(120):
            await _health(api)
            await _agents(api, base)
            await _console(api)
            await _messaging(api)
            await _memory(api)
            await _admin(api)
            await _errors(api)

    documented = {
        (method.upper(), path, status)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if not operation.get("x-websocket")
        for status in operation["responses"]
        if status.startswith("2")
    }
    untyped = [
        (method, path, status)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status.startswith("2") and response["content"].get(JSON, {}).get("schema") == {}
    ]
    assert not untyped, f"answers without a schema (caxton.http.schemas): {untyped}"
    missing = documented - api.seen - set(NOT_REACHED)
    assert not missing, f"answers never checked against the document: {sorted(missing)}"
    sockets = {p for p, item in document["paths"].items() if item.get("get", {}).get("x-websocket")}
    assert api.frames_seen == sockets


async def _health(api: Api) -> None:
    await api.call("GET", "/health")
    await api.call("GET", "/ready")
    report = (await api.call("GET", "/api/v1/health")).json()
    assert report["agents"]  # the optional parts are there and were checked
    assert report["storage"] == {"backend": "embedded", "available": True}
    cluster = (await api.call("GET", "/api/v1/cluster")).json()
    assert [i["self"] for i in cluster["instances"]] == [True]
    assert cluster["instances"][0]["address"].startswith("http://127.0.0.1:")
    usage = (await api.call("GET", "/api/v1/usage", params={"group_by": "day"})).json()
    assert usage["group_by"] == "day"
    await api.call("GET", "/api/v1/usage", params={"group_by": "colour"}, expect=400)
    # A2A (issue #19): the cards, the remote agents, one JSON-RPC call
    card = (await api.call("GET", "/a2a/{name}/.well-known/agent-card.json", name="echo")).json()
    assert card["supportedInterfaces"][0]["url"].endswith("/a2a/echo")
    await api.call("GET", "/.well-known/agent-card.json")
    await api.call("GET", "/api/v1/a2a/remote-agents")
    call = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
    listed = await api.call(
        "POST", "/a2a/{name}", json_body=call, headers={"A2A-Version": "1.0"}, name="echo"
    )
    assert listed.json()["result"]["tasks"] == []


async def _agents(api: Api, base: str) -> None:
    ws_base = base.replace("http://", "ws://")
    async with open_ws(f"{ws_base}/ws/events") as events:
        await api.call("POST", "/api/v1/agents", expect=201, json_body=probe_body("1.0.0"))
        with trio.fail_after(10):
            event = json.loads(await events.get_message())
        api.check_frames("/ws/events", "send", [event])

    listing = (await api.call("GET", "/api/v1/agents")).json()
    assert {"echo", "counter", "probe"} <= {a["name"] for a in listing["agents"]}
    await api.call("GET", "/api/v1/agents", params={"type": "wasm", "limit": "1"})
    await api.call("GET", "/api/v1/agents/{name}", name="echo")
    good = {"content": CONFIG_AGENT}
    assert (await api.call("POST", "/api/v1/agents/validate", json_body=good)).json()["valid"]
    bad = {"content": 'name = "x"\nversion = 3\n'}
    report = (await api.call("POST", "/api/v1/agents/validate", json_body=bad)).json()
    assert report["errors"]

    # config agents: the view says which LLM they use, or why they have none
    helper = await api.call("POST", "/api/v1/agents", expect=201, json_body=good)
    assert helper.json()["llm"]["url"]
    mute = {"content": UNCONFIGURED_AGENT}
    await api.call("POST", "/api/v1/agents", expect=201, json_body=mute)
    assert "error" in (await api.call("GET", "/api/v1/agents/{name}", name="mute")).json()["llm"]

    await api.call("PUT", "/api/v1/agents/{name}", json_body=probe_body("1.1.0"), name="probe")
    versions = (await api.call("GET", "/api/v1/agents/{name}/versions", name="probe")).json()
    assert [v["version"] for v in versions["versions"]] == ["1.1.0", "1.0.0"]
    canary = {"version": "1.0.0", "traffic_percentage": 30}
    shown = await api.call("POST", "/api/v1/agents/{name}/canary", json_body=canary, name="probe")
    assert shown.json()["canary"] == {"version": "1.0.0", "traffic_percentage": 30.0}
    await api.call("POST", "/api/v1/agents/{name}/promote", name="probe")
    await api.call(
        "POST", "/api/v1/agents/{name}/rollback", json_body={"version": "1.1.0"}, name="probe"
    )
    await api.call("POST", "/api/v1/agents/{name}/restart", name="probe")

    reply = await api.call(
        "POST", "/api/v1/agents/{name}/messages", json_body={"content": "hi"}, name="echo"
    )
    assert reply.json()["sender"] == "echo"
    streamed = await api.call(
        "POST",
        "/api/v1/agents/{name}/messages",
        json_body={"content": "hi", "conversation_id": reply.json()["conversation_id"]},
        headers={"Accept": "text/event-stream"},
        name="echo",
    )
    frames = [
        json.loads(line.removeprefix("data:").strip())
        for line in streamed.text.splitlines()
        if line.startswith("data:")
    ]
    assert frames[-1]["type"] == "done"
    api.check_frames("/ws/agents/{name}", "send", frames)

    async with open_ws(f"{ws_base}/ws/agents/echo") as socket:
        request = {"content": "over the socket"}
        api.check_frames("/ws/agents/{name}", "receive", [request])
        await socket.send_message(json.dumps(request))
        received: list[Any] = []
        with trio.fail_after(10):
            while not received or received[-1]["type"] not in ("done", "error"):
                received.append(json.loads(await socket.get_message()))
        assert received[-1]["type"] == "done"
        api.check_frames("/ws/agents/{name}", "send", received)

    performance = (await api.call("GET", "/api/v1/agents/performance")).json()
    assert any(row["messages"] for row in performance["agents"])
    await api.call("GET", "/api/v1/agents/{name}/logs", params={"tail": "5"}, name="probe")
    first = await _first_followed_line(base, "/api/v1/agents/probe/logs?follow=true&tail=5")
    logs = api.operation("GET", "/api/v1/agents/{name}/logs")["responses"]["200"]
    api.validate(logs["content"][NDJSON]["schema"], first, "GET logs?follow=true")
    await api.call("DELETE", "/api/v1/agents/{name}", name="probe")


async def _first_followed_line(base: str, target: str) -> object:
    """The first NDJSON line of a stream that never ends, read from a raw socket (closed
    after it, which ends the stream on the server)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            data = b""
            while (found := re.search(rb"\r\n\r\n.*?(\{[^\n]*\})\n", data, re.S)) is None:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    assert b"content-type: application/x-ndjson" in data.lower()
    return json.loads(found.group(1))


async def _messaging(api: Api) -> None:
    envelope = {"receiver": "echo", "performative": "request", "content": {"text": "hi"}}
    reply = (await api.call("POST", "/api/v1/messages", json_body=envelope)).json()
    conversation = reply["conversation_id"]
    by_capability = {"capability": "counting", "content": "one"}
    await api.call("POST", "/api/v1/messages", json_body=by_capability)
    accepted = await api.call(
        "POST", "/api/v1/messages", expect=202, json_body=envelope, params={"wait": "false"}
    )
    assert accepted.json()["accepted"] is True
    ask = {"name": "ask_echo", "arguments": {"question": "hi"}}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ask}
    answer = (await api.call("POST", "/mcp", json_body=call)).json()
    assert answer["result"]["structuredContent"]["agent"] == "echo"

    listed = (await api.call("GET", "/api/v1/conversations")).json()
    assert listed["total"] >= 2
    await api.call("GET", "/api/v1/conversations", params={"status": "active", "agent": "echo"})
    shown = await api.call(
        "GET", "/api/v1/conversations/{conversation_id}", conversation_id=conversation
    )
    assert len(shown.json()["messages"]) == 2
    await api.call(
        "POST", "/api/v1/conversations/{conversation_id}/close", conversation_id=conversation
    )
    capabilities = (await api.call("GET", "/api/v1/capabilities")).json()
    assert {c["capability"] for c in capabilities["capabilities"]} >= {"echo", "counting"}
    await api.call("GET", "/api/v1/capabilities/{capability}", capability="echo")


async def _memory(api: Api) -> None:
    whiskers = {
        "name": "Whiskers",
        "entity_type": "pet",
        "observations": ["a small grey cat"],
        "metadata": {"age": 3},
    }
    await api.call("POST", "/api/v1/memory/entities", expect=201, json_body=whiskers)
    batch = {
        "entities": [
            {"name": "Ada", "entity_type": "person", "observations": ["owns a cat"]},
            {"name": "Notes", "entity_type": "doc", "scope": "agent", "agent": "echo"},
        ]
    }
    created = await api.call("POST", "/api/v1/memory/entities", expect=201, json_body=batch)
    assert created.json()["count"] == 2
    await api.call("GET", "/api/v1/memory/entities/{name}", name="Whiskers")
    await api.call(
        "POST",
        "/api/v1/memory/entities/{name}/observations",
        json_body={"observations": ["likes mice"]},
        name="Whiskers",
    )
    relation = {"from": "Whiskers", "to": "Ada", "relation_type": "owned_by", "strength": 0.9}
    await api.call("POST", "/api/v1/memory/relations", expect=201, json_body=relation)
    hits = await api.call("GET", "/api/v1/memory/search", params={"q": "cat", "limit": "5"})
    assert hits.json()["results"]
    graph = await api.call(
        "GET", "/api/v1/memory/graph/{name}", params={"max_depth": "2"}, name="Whiskers"
    )
    assert graph.json()["edges"]
    stats = (await api.call("GET", "/api/v1/memory/stats")).json()
    assert stats["embedder"] is not None
    await api.call("GET", "/api/v1/memory/capacity")
    await api.call("POST", "/api/v1/memory/optimize", json_body={"analyze": True})
    await api.call("POST", "/api/v1/memory/optimize")  # an empty body runs every step
    await api.call("POST", "/api/v1/memory/cache/clear", json_body={"rebuild": True})

    exported = await api.call("GET", "/api/v1/memory/export")
    lines = await api.call("GET", "/api/v1/memory/export", params={"format": "jsonl"})
    assert len(lines.text.splitlines()) == 1 + 3 + 1
    await api.call(
        "POST",
        "/api/v1/memory/import",
        json_body=exported.json(),
        params={"merge_strategy": "skip_existing"},
    )
    await api.call(
        "POST",
        "/api/v1/memory/import",
        content=lines.content,
        headers={"Content-Type": NDJSON},
        params={"merge_strategy": "update_existing"},
    )
    await api.call("DELETE", "/api/v1/memory/entities/{name}", name="Notes")


async def _console(api: Api) -> None:
    """The routes the console at /ui reads (issue #20); the page itself is not in the API."""
    assert "/ui" not in api.document["paths"]
    session = (await api.call("GET", "/api/v1/session")).json()
    assert (session["role"], session["can"]["deploy"]) == ("admin", True)
    loaded = await api.call("GET", "/api/v1/agents/{name}/definition", name="helper")
    assert loaded.json()["definition"]["llm"]["base_url"] == "http://127.0.0.1:9/v1"
    figures = (await api.call("GET", "/api/v1/metrics/summary")).json()
    assert figures["http"]["requests"] > 0
    await api.call("GET", "/api/v1/agents/{name}/definition", name="nobody", expect=404)


async def _admin(api: Api) -> None:
    await api.call("GET", "/api/v1/admin/safe-mode")
    on = {"enabled": True, "reason": "checking the document"}
    assert (await api.call("POST", "/api/v1/admin/safe-mode", json_body=on)).json()["enabled"]
    refused = await api.call(
        "POST", "/api/v1/memory/entities", expect=503, json_body={"name": "x", "entity_type": "y"}
    )
    assert refused.json()["error"]["code"] == "SAFE_MODE"
    await api.call("POST", "/api/v1/admin/safe-mode", json_body={"enabled": False})
    written = (await api.call("POST", "/api/v1/admin/backup", json_body={})).json()
    assert await trio.Path(written["path"]).is_file()
    download = await api.call("POST", "/api/v1/admin/backup", json_body={"download": True})
    assert download.content[:2] == b"\x1f\x8b"
    await api.call("GET", "/api/v1/admin/storage/verify", params={"comprehensive": "true"})


async def _errors(api: Api) -> None:
    await api.call("GET", "/api/v1/agents/{name}", expect=404, name="nobody")
    await api.call(
        "POST",
        "/api/v1/agents/validate",
        expect=400,
        content=b"{not json",
        headers={"Content-Type": JSON},
    )
    await api.call("POST", "/api/v1/messages", expect=422, json_body={"content": "nowhere"})
    await api.call("GET", "/api/v1/memory/search", expect=400)
    await api.call("POST", "/api/v1/agents/{name}/promote", expect=409, name="echo")  # no canary


@pytest.fixture
async def secured(nursery: trio.Nursery, tmp_path: Path) -> tuple[ServerInfo, dict[str, str]]:
    """A server with authentication on and a readonly and an admin key."""
    keys = {"readonly": generate_key(), "admin": generate_key()}
    key_file = tmp_path / "api-keys.yaml"
    entries = [
        KeyEntry(name="reader", role=Role.READONLY, hash=hash_key(keys["readonly"])),
        KeyEntry(name="root", role=Role.ADMIN, hash=hash_key(keys["admin"])),
    ]
    write_key_file(key_file, KeyRing(tuple(entries)))
    secret = tmp_path / "jwt-secret"
    secret.write_bytes(secrets.token_hex(32).encode() + b"\n")
    secret.chmod(0o600)
    loaded = loopback_config(
        tmp_path / "data",
        security__authentication__enabled=True,
        security__authentication__jwt_secret_file=str(secret),
        security__api_keys__required=True,
        security__api_keys__key_file=str(key_file),
    )
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info, keys


async def test_refusals_with_authentication_on_match_the_document(
    secured: tuple[ServerInfo, dict[str, str]],
) -> None:
    info, keys = secured
    async with httpx.AsyncClient(base_url=info.api_urls[0], timeout=60) as client:
        document = (await client.get("/api/v1/openapi.json")).json()
        api = Api(client, document)
        operation = api.operation("POST", "/api/v1/memory/optimize")
        assert {"401", "403", "429", "503"} <= set(operation["responses"])
        assert operation["security"]
        assert "security" not in api.operation("GET", "/health")
        await api.call("GET", "/health")
        await api.call("GET", "/api/v1/memory/stats", expect=401)
        reader = {"X-API-Key": keys["readonly"]}
        await api.call("GET", "/api/v1/memory/stats", headers=reader)
        await api.call("POST", "/api/v1/memory/optimize", expect=403, headers=reader)
        admin = {"X-API-Key": keys["admin"]}
        await api.call("POST", "/api/v1/memory/optimize", headers=admin)
    assert ("GET", "/api/v1/memory/stats", "401") in api.seen
