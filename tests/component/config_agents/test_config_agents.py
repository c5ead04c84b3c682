"""Config agents over real HTTP, answered by the scripted LLM server (issue: config agents)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import trio
from config_agent_servers import agent_toml, openai_url
from wsclient import open_ws

if TYPE_CHECKING:
    from caxton.server import ServerInfo

STORY = "Once upon a time a fox learned to count to seven."


async def sse_frames(client: httpx.AsyncClient, agent: str, content: str) -> list[tuple[str, Any]]:
    frames: list[tuple[str, Any]] = []
    event = ""
    async with client.stream(
        "POST",
        f"/api/v1/agents/{agent}/messages",
        json={"content": content},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                frames.append((event, json.loads(line.removeprefix("data: "))))
    return frames


def user_texts(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "user"]


def system_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


async def test_tokens_arrive_in_order_over_sse_and_websocket(start_llm, start_caxton) -> None:
    llm = await start_llm({"rules": [{"match": "story", "reply": STORY}], "chunk_delay_s": 0.01})
    server: ServerInfo = await start_caxton({"teller.toml": agent_toml("teller", openai_url(llm))})
    base = server.api_urls[0]
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base, timeout=15) as client:
            frames = await sse_frames(client, "teller", "tell me a story")
        kinds = [kind for kind, _ in frames]
        assert kinds[-1] == "done"
        chunks = [data["text"] for kind, data in frames if kind == "chunk"]
        assert len(chunks) == len(STORY.split())  # the server streams word by word
        assert "".join(chunks) == STORY
        assert frames[-1][1]["message"]["content"] == STORY
        assert frames[-1][1]["message"]["sender"] == "teller"

        url = base.replace("http://", "ws://") + "/ws/agents/teller"
        async with open_ws(url) as ws:
            await ws.send_message(json.dumps({"content": "another story please"}))
            received = []
            while not received or received[-1]["type"] not in ("done", "error"):
                received.append(json.loads(await ws.get_message()))
    assert [f["type"] for f in received[:-1]] == ["chunk"] * (len(received) - 1)
    assert "".join(f["text"] for f in received[:-1]) == STORY
    assert received[-1]["type"] == "done"
    assert received[-1]["message"]["content"] == STORY


async def test_anthropic_provider_streams_too(start_llm, start_caxton) -> None:
    llm = await start_llm({"rules": [{"match": "story", "reply": STORY}]})
    text = agent_toml("claude", llm.url, provider="anthropic", system="Be brief.")
    server = await start_caxton({"claude.toml": text})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            frames = await sse_frames(client, "claude", "a story")
    assert "".join(data["text"] for kind, data in frames if kind == "chunk") == STORY
    body = llm.requests[-1].body
    assert llm.requests[-1].path == "/v1/messages"
    assert body["system"] == "Be brief."
    assert body["stream"] is True


async def test_a_tool_call_runs_and_its_result_goes_back(start_llm, start_caxton) -> None:
    llm = await start_llm(
        {
            "rules": [
                {
                    "match": "use the echo",
                    "tool_call": {
                        "name": "wasm_echo",
                        "arguments": {"input": "ping-42"},
                        "id": "c1",
                    },
                },
                {"match": "ping-42", "reply": "The echo agent said ping-42."},
            ]
        }
    )
    text = agent_toml("caller", openai_url(llm), tools=("wasm:echo", "memory_search"))
    server = await start_caxton({"caller.toml": text})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            response = await client.post(
                "/api/v1/agents/caller/messages", json={"content": "use the echo agent"}
            )
            logs = await client.get("/api/v1/agents/caller/logs", params={"tail": 20})
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "The echo agent said ping-42."
    first, second = (request.body for request in llm.requests)
    offered = sorted(tool["function"]["name"] for tool in first["tools"])
    assert offered == ["memory_search", "wasm_echo"]
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["function"]["name"] == "wasm_echo"
    tool_result = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool_result["tool_call_id"] == "c1"
    echoed = json.loads(tool_result["content"])  # echo replies with the envelope it got
    assert echoed["content"] == "ping-42"
    assert echoed["sender"] == "caller"
    assert "tool wasm:echo answered" in logs.text


async def test_a_failing_tool_is_a_result_for_the_model(start_llm, start_caxton) -> None:
    llm = await start_llm(
        {
            "rules": [
                {
                    "match": "fetch it",
                    "tool_call": {
                        "name": "http_client",
                        "arguments": {"url": "http://example.org/"},
                    },
                },
                {"match": "not an allowed host", "reply": "I may not fetch that."},
            ]
        }
    )
    text = agent_toml("fetcher", openai_url(llm), tools=("http_client",))
    server = await start_caxton({"fetcher.toml": text})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            response = await client.post(
                "/api/v1/agents/fetcher/messages", json={"content": "fetch it"}
            )
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "I may not fetch that."
    tool_result = next(m for m in llm.requests[1].body["messages"] if m["role"] == "tool")
    error = json.loads(tool_result["content"])["error"]
    assert error["code"] == "TOOL_FAILED"
    assert "allowed_hosts" in error["message"]


async def test_http_client_fetches_allowed_hosts_only(start_llm, start_caxton) -> None:
    target = await start_llm({"rules": [{"match": "", "reply": "fetched body"}]})
    fetch = {"url": f"{target.url}/v1/chat/completions", "method": "POST", "body": "{}"}
    llm = await start_llm(
        {
            "rules": [
                {"match": '"status"', "reply": "done"},  # the tool result
                {"match": "fetch", "tool_call": {"name": "http_client", "arguments": fetch}},
            ]
        }
    )
    host_port = target.url.removeprefix("http://")  # an entry names the port it allows
    extra = f'[tool_config.http_client]\nallowed_hosts = ["{host_port}"]\ntimeout = "5s"\n'
    text = agent_toml("fetcher", openai_url(llm), tools=("http_client",), extra=extra)
    server = await start_caxton({"fetcher.toml": text})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            response = await client.post(
                "/api/v1/agents/fetcher/messages", json={"content": "fetch"}
            )
    assert response.status_code == 200, response.text
    result = json.loads(
        next(m for m in llm.requests[1].body["messages"] if m["role"] == "tool")["content"]
    )
    assert result["status"] == 200
    assert "fetched body" in result["body"]
    assert len(target.requests) == 1


async def test_memory_snippet_is_in_the_prompt(start_llm, start_caxton) -> None:
    llm = await start_llm()  # no rules: replies echo the prompt text
    extra = (
        '[memory]\nenabled = true\nscope = "workspace"\n'
        "[memory.search]\nsimilarity_threshold = 0.2\nmax_results = 3\n"
    )
    template = "Context:\n{{memory_context}}\n\nQuestion: {{request}}"
    text = agent_toml("librarian", openai_url(llm), template=template, extra=extra)
    server = await start_caxton({"librarian.toml": text})
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:
            created = await client.post(
                "/api/v1/memory/entities",
                json={
                    "name": "Project Falcon",
                    "entity_type": "project",
                    "observations": ["The launch code word of Project Falcon is PELICAN"],
                },
            )
            assert created.status_code in (200, 201), created.text
            response = await client.post(
                "/api/v1/agents/librarian/messages",
                json={"content": "What is the launch code word of Project Falcon?"},
            )
    assert response.status_code == 200, response.text
    prompt = user_texts(llm.requests[-1].body)[-1]
    assert prompt.startswith("Context:\n- Project Falcon (project): The launch code word")
    assert "PELICAN" in prompt
    assert prompt.endswith("Question: What is the launch code word of Project Falcon?")


async def test_first_provider_fails_then_the_fallback_answers(start_llm, start_caxton) -> None:
    broken = await start_llm({"rules": [{"match": "", "fail": {"status": 500, "times": 99}}]})
    spare = await start_llm({"rules": [{"match": "", "reply": "from the fallback"}]})
    extra = (
        '[[llm.fallback]]\nprovider = "anthropic"\nmodel = "scripted-2"\n'
        f'base_url = "{spare.url}"\n'
    )
    text = agent_toml("sturdy", openai_url(broken), extra=extra)
    server = await start_caxton({"sturdy.toml": text})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            response = await client.post("/api/v1/agents/sturdy/messages", json={"content": "hi"})
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "from the fallback"
    assert len(broken.requests) == 1  # max_retries = 0
    assert spare.requests[0].path == "/v1/messages"
    assert spare.requests[0].body["model"] == "scripted-2"


async def test_429_with_retry_after_is_honoured(start_llm, start_caxton) -> None:
    llm = await start_llm(
        {
            "rules": [
                {"match": "", "fail": {"status": 429, "times": 1, "retry_after": 1}, "reply": "ok"}
            ]
        }
    )
    text = agent_toml("patient", openai_url(llm)).replace("max_retries = 0", "max_retries = 2")
    server = await start_caxton({"patient.toml": text})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            started = trio.current_time()
            response = await client.post("/api/v1/agents/patient/messages", json={"content": "x"})
            elapsed = trio.current_time() - started
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "ok"
    assert len(llm.requests) == 2
    assert elapsed >= 1.0


async def test_llm_down_is_a_fast_503_and_the_server_stays_healthy(
    start_caxton, refused_url: str
) -> None:
    server = await start_caxton({"lonely.toml": agent_toml("lonely", refused_url)})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            started = trio.current_time()
            response = await client.post("/api/v1/agents/lonely/messages", json={"content": "x"})
            elapsed = trio.current_time() - started
            health = await client.get("/health")
            echo = await client.post("/api/v1/agents/echo/messages", json={"content": "still here"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "LLM_UNAVAILABLE"
    assert "'openai'" in error["message"]
    assert refused_url in error["message"]
    assert elapsed < 5.0  # within the connect timeout
    assert health.status_code == 200
    assert echo.status_code == 200


async def test_no_llm_configured_says_what_to_set(start_caxton) -> None:
    text = agent_toml("unset", "http://127.0.0.1:9/v1").replace(
        'provider = "openai"', 'provider = "none"'
    )
    server = await start_caxton({"unset.toml": text})
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
        response = await client.post("/api/v1/agents/unset/messages", json={"content": "x"})
        agent = await client.get("/api/v1/agents/unset")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "LLM_UNAVAILABLE"
    assert "llm.provider" in response.json()["error"]["message"]
    assert agent.json()["status"] == "running"
    assert "llm.provider" in agent.json()["llm"]["error"]
    assert agent.json()["tools"] == []


async def test_concurrency_limit_and_request_timeout(start_llm, start_caxton) -> None:
    llm = await start_llm(
        {
            "rules": [
                {"match": "slow", "delay_s": 0.4, "reply": "done"},
                {"match": "stuck", "delay_s": 5, "reply": "too late"},
            ]
        }
    )
    extra = '[performance]\nmax_concurrent_requests = 2\nrequest_timeout = "2s"\n'
    server = await start_caxton({"narrow.toml": agent_toml("narrow", openai_url(llm), extra=extra)})
    statuses: list[int] = []
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:

            async def ask() -> None:
                reply = await client.post(
                    "/api/v1/agents/narrow/messages", json={"content": "slow"}
                )
                statuses.append(reply.status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(ask)
            assert statuses == [200] * 5
            assert llm.peak_active == 2

            timed_out = await client.post(
                "/api/v1/agents/narrow/messages", json={"content": "stuck"}
            )
    assert timed_out.status_code == 504
    assert timed_out.json()["error"]["code"] == "TIMEOUT"
    assert "request_timeout" in timed_out.json()["error"]["message"]


async def test_edited_system_prompt_applies_without_dropping_the_call_in_flight(
    start_llm, start_caxton, agents_dir
) -> None:
    llm = await start_llm({"rules": [{"match": "slow", "delay_s": 1.5, "reply": "old finished"}]})
    server = await start_caxton(
        {"editor.toml": agent_toml("editor", openai_url(llm), system="Version one.")}
    )
    results: dict[str, httpx.Response] = {}
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:

            async def slow() -> None:
                results["slow"] = await client.post(
                    "/api/v1/agents/editor/messages", json={"content": "slow one"}
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                while not llm.active:
                    await trio.sleep(0.02)
                (agents_dir / "editor.toml").write_text(
                    agent_toml("editor", openai_url(llm), system="Version two.")
                )
                while True:
                    listed = await client.get("/api/v1/agents/editor/versions")
                    versions = listed.json()["versions"]
                    states = sorted(v["status"] for v in versions)
                    if len(versions) == 2 and states in (
                        ["draining", "running"],
                        ["running", "stopped"],
                    ):
                        break
                    await trio.sleep(0.05)
                results["new"] = await client.post(
                    "/api/v1/agents/editor/messages", json={"content": "hello"}
                )
    assert results["slow"].status_code == 200
    assert results["slow"].json()["content"] == "old finished"
    assert results["new"].status_code == 200
    bodies = {user_texts(r.body)[-1]: system_text(r.body) for r in llm.requests}
    assert bodies == {"slow one": "Version one.", "hello": "Version two."}


async def test_llm_metrics_by_agent_and_provider(start_llm, start_caxton) -> None:
    llm = await start_llm({"rules": [{"match": "", "reply": "three little words"}]})
    server = await start_caxton({"counted.toml": agent_toml("counted", openai_url(llm))})
    async with httpx.AsyncClient(timeout=15) as client:
        reply = await client.post(
            f"{server.api_urls[0]}/api/v1/agents/counted/messages", json={"content": "x"}
        )
        assert reply.status_code == 200
        assert server.metrics_url is not None
        text = (await client.get(server.metrics_url)).text
        report = (await client.get(f"{server.api_urls[0]}/api/v1/agents/performance")).json()
    counted = next(a for a in report["agents"] if a["name"] == "counted")
    assert counted["tokens"] > 0  # input + output tokens the scripted server reported
    labels = '{agent="counted",provider="openai"}'
    assert f"caxton_llm_call_duration_seconds_count{labels} 1.0" in text
    assert (
        'caxton_llm_tokens_total{agent="counted",key="anonymous",kind="output",provider="openai"}'
        in text
    )
    assert 'caxton_agent_response_duration_seconds_count{agent="counted",outcome="ok"} 1.0' in text


async def test_send_message_asks_a_capability_through_the_router(start_llm, start_caxton) -> None:
    llm = await start_llm(
        {
            "rules": [
                {"match": '"performative"', "reply": "The echo capability answered."},
                {
                    "match": "ask around",
                    "tool_call": {
                        "name": "send_message",
                        "arguments": {"capability": "echo", "content": "anyone there?"},
                    },
                },
            ]
        }
    )
    text = agent_toml("asker", openai_url(llm), tools=("send_message",))
    server = await start_caxton({"asker.toml": text})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            response = await client.post(
                "/api/v1/agents/asker/messages",
                json={"content": "ask around", "conversation_id": "conv-ask"},
            )
    assert response.status_code == 200, response.text
    assert response.json()["content"] == "The echo capability answered."
    tool_result = next(m for m in llm.requests[1].body["messages"] if m["role"] == "tool")
    echoed = json.loads(tool_result["content"])  # echo replies with the envelope it got
    assert echoed["content"] == "anyone there?"
    assert echoed["sender"] == "asker"
    assert echoed["capability"] == "echo"
    assert echoed["conversation_id"] == "conv-ask"


async def test_earlier_turns_of_the_conversation_reach_the_model(start_llm, start_caxton) -> None:
    llm = await start_llm()  # no rules: each reply echoes the last user text
    server = await start_caxton({"recall.toml": agent_toml("recall", openai_url(llm))})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            for text in ("my name is Ada", "what is my name?"):
                response = await client.post(
                    "/api/v1/agents/recall/messages",
                    json={"content": text, "conversation_id": "conv-ada"},
                )
                assert response.status_code == 200, response.text
            other = await client.post(
                "/api/v1/agents/recall/messages",
                json={"content": "a new conversation", "conversation_id": "conv-other"},
            )
            assert other.status_code == 200
    second = [(m["role"], m["content"]) for m in llm.requests[1].body["messages"]]
    assert second == [
        ("system", "You are terse."),
        ("user", "my name is Ada"),
        ("assistant", "my name is Ada"),
        ("user", "what is my name?"),
    ]
    third = [m["role"] for m in llm.requests[2].body["messages"]]
    assert third == ["system", "user"]


async def test_auto_store_remembers_the_exchange(start_llm, start_caxton) -> None:
    llm = await start_llm({"rules": [{"match": "capital", "reply": "Paris."}]})
    extra = '[memory]\nenabled = true\nscope = "agent"\nauto_store = true\n'
    server = await start_caxton({"scribe.toml": agent_toml("scribe", openai_url(llm), extra=extra)})
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            reply = await client.post(
                "/api/v1/agents/scribe/messages",
                json={"content": "capital of France?", "conversation_id": "conv-geo"},
            )
            assert reply.status_code == 200, reply.text
            stored = await client.get("/api/v1/memory/entities/scribe conversation conv-geo")
    assert stored.status_code == 200, stored.text
    entity = stored.json()
    assert entity["entity_type"] == "conversation"
    assert entity["scope"] == "agent"
    assert entity["agent"] == "scribe"
    assert entity["observations"] == [
        "client asked: capital of France?",
        "scribe answered: Paris.",
    ]
