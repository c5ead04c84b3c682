"""Token usage accounting and budgets (issue #18) against the scripted LLM server.

The figures Caxton keeps are compared with what the scripted server reported in its own
words (``llm.reported``: OpenAI's ``usage`` object, Anthropic's ``message_start`` +
``message_delta`` usage), cache tokens included, on both stores of record and after a restart.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from config_agent_servers import agent_toml, openai_url
from servers import loopback_config
from test_config_agents import sse_frames
from wsclient import open_ws

from caxton.security.keys import KeyEntry, KeyRing, generate_key, hash_key, write_key_file
from caxton.security.roles import Role
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

#: Price per million tokens of the scripted model (so costs are exact small numbers).
PRICES = {"scripted-1": {"input": 1.0, "output": 2.0, "cache_read": 0.5, "cache_write": 1.25}}

#: A tool loop: the first call asks for memory_search, the second (reading the tool result)
#: answers; each reports cache reads, the Anthropic one cache writes too.
LOOP = {
    "rules": [
        {
            "match": "forecast please",
            "tool_call": {"name": "memory_search", "arguments": {"query": "weather"}},
            "cache_read_tokens": 40,
            "cache_write_tokens": 8,
        },
        {"regex": ".", "reply": "Sunny all week.", "cache_read_tokens": 16},
    ]
}


def expected(reported: list[dict[str, Any]], provider: str) -> dict[str, int]:
    """The four figures the scripted server reported, summed, in Caxton's terms."""
    sums = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0}
    for usage in reported:
        if provider == "openai":
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            sums["input_tokens"] += usage["prompt_tokens"] - cached
            sums["output_tokens"] += usage["completion_tokens"]
            sums["cache_read_tokens"] += cached
        else:
            sums["input_tokens"] += usage["input_tokens"]
            sums["output_tokens"] += usage["output_tokens"]
            sums["cache_read_tokens"] += usage["cache_read_input_tokens"]
            sums["cache_write_tokens"] += usage["cache_creation_input_tokens"]
    return sums


def cost_of(sums: dict[str, int]) -> float:
    price = PRICES["scripted-1"]
    return (
        sums["input_tokens"] * price["input"]
        + sums["output_tokens"] * price["output"]
        + sums["cache_read_tokens"] * price["cache_read"]
        + sums["cache_write_tokens"] * price["cache_write"]
    ) / 1_000_000


def figures(item: dict[str, Any]) -> dict[str, int]:
    return {
        k: item[k]
        for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    }


async def running(nursery: trio.Nursery, loaded: Any) -> ServerInfo:
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
async def test_usage_equals_what_the_provider_reported_and_survives_a_restart(
    backend: str, start_llm, tmp_path: Path, agents_dir: Path, request: pytest.FixtureRequest
) -> None:
    llm = await start_llm(LOOP)
    (agents_dir / "oracle.toml").write_text(
        agent_toml("oracle", openai_url(llm), tools=("memory_search",))
    )
    (agents_dir / "sage.toml").write_text(
        agent_toml("sage", llm.url, provider="anthropic", tools=("memory_search",))
    )
    storage: dict[str, object] = {}
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        storage = {"storage__backend": "postgres", "storage__postgres__url": url}
    loaded = loopback_config(
        tmp_path / "data", server__agents_dir=str(agents_dir), usage__prices=PRICES, **storage
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await running(nursery, loaded)
            async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:
                frames = await sse_frames(client, "oracle", "forecast please")
                openai_calls = list(llm.reported)
                answer = await client.post(
                    "/api/v1/agents/sage/messages", json={"content": "forecast please"}
                )
                assert answer.status_code == 200, answer.text
                anthropic_calls = llm.reported[len(openai_calls) :]
                first = (await client.get("/api/v1/usage")).json()
                metrics = (await client.get(f"{server.metrics_url}")).text
            server.stop()
    assert len(openai_calls) == 2  # the tool call, then the answer
    assert len(anthropic_calls) == 2
    oracle, sage = expected(openai_calls, "openai"), expected(anthropic_calls, "anthropic")
    assert oracle["cache_read_tokens"] == 56
    assert sage["cache_write_tokens"] == 8
    # the done frame carries the request's usage
    kind, done = frames[-1]
    assert kind == "done"
    assert figures(done["usage"]) == oracle
    assert done["usage"]["cost"] == pytest.approx(cost_of(oracle), abs=1e-6)
    # the report: one group per agent, equal to what the provider said
    groups = {item["group"]: item for item in first["groups"]}
    assert figures(groups["oracle"]) == oracle
    assert figures(groups["sage"]) == sage
    assert groups["oracle"]["calls"] == 2
    assert groups["sage"]["cost"] == pytest.approx(cost_of(sage), abs=1e-6)
    total = {k: oracle[k] + sage[k] for k in oracle}
    assert figures(first["totals"]) == total
    # the metric, by kind and (bounded) key
    line = (
        'caxton_llm_tokens_total{agent="oracle",key="anonymous",kind="cache_read",'
        'provider="openai"} 56.0'
    )
    assert line in metrics

    # after a restart on the same store the figures are the same
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await running(nursery, loaded)
            async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:
                again = (await client.get("/api/v1/usage")).json()
                by_model = (await client.get("/api/v1/usage", params={"group_by": "model"})).json()
                only_sage = (
                    await client.get("/api/v1/usage", params={"agent": "sage", "since": "1h"})
                ).json()
                future = (await client.get("/api/v1/usage", params={"since": "2999-01-01"})).json()
                bad = await client.get("/api/v1/usage", params={"group_by": "colour"})
            server.stop()
    assert again["groups"] == first["groups"]
    assert again["totals"] == first["totals"]
    assert [item["group"] for item in by_model["groups"]] == ["scripted-1"]
    assert figures(only_sage["totals"]) == sage
    assert future["totals"]["calls"] == 0
    assert bad.status_code == 400
    assert "group_by must be one of agent, key, model, day" in bad.json()["error"]["message"]


async def test_a_budget_stops_a_tool_loop_before_its_next_llm_call(start_llm, start_caxton) -> None:
    llm = await start_llm(LOOP)
    budget = "[performance]\nmax_tokens_per_day = 5\n"
    text = agent_toml("thrifty", openai_url(llm), tools=("memory_search",), extra=budget)
    server = await start_caxton({"thrifty.toml": text})
    base = server.api_urls[0]
    events_url = base.replace("http://", "ws://") + "/ws/events"
    with trio.fail_after(30):
        async with (
            open_ws(events_url) as events,
            httpx.AsyncClient(base_url=base, timeout=20) as client,
        ):
            refused = await client.post(
                "/api/v1/agents/thrifty/messages", json={"content": "forecast please"}
            )
            # the first call ran (and spent the budget); the loop stopped before the second
            assert len(llm.requests) == 1
            assert refused.status_code == 429, refused.text
            assert 0 < int(refused.headers["Retry-After"]) <= 86_400
            error = refused.json()["error"]
            assert error["code"] == "BUDGET_EXCEEDED"
            assert error["details"]["budget"]["scope"] == "agent"
            assert error["details"]["budget"]["name"] == "thrifty"
            assert error["details"]["budget"]["max_tokens_per_day"] == 5
            assert error["details"]["resets_at"].endswith("T00:00:00Z")
            assert "max_tokens_per_day" in error["message"]
            event = None
            while event is None or event["type"] != "budget_exceeded":
                event = json.loads(await events.get_message())
            assert event["agent"] == "thrifty"
            assert event["data"]["budget"]["max_tokens_per_day"] == 5
            # a new request would start over budget: refused before any LLM call
            again = await client.post(
                "/api/v1/agents/thrifty/messages", json={"content": "forecast please"}
            )
            assert again.status_code == 429
            assert len(llm.requests) == 1
            report = (await client.get("/api/v1/usage")).json()
    (shown,) = report["budgets"]
    assert shown["scope"] == "agent"
    assert shown["name"] == "thrifty"
    assert shown["used_today"]["total_tokens"] > 5


async def test_a_key_budget_from_the_key_file_refuses_that_caller_only(
    start_llm, tmp_path: Path, agents_dir: Path, nursery: trio.Nursery
) -> None:
    llm = await start_llm({"rules": [{"regex": ".", "reply": "Noted.", "cache_read_tokens": 3}]})
    (agents_dir / "clerk.toml").write_text(agent_toml("clerk", openai_url(llm)))
    alice, ops = generate_key(), generate_key()
    key_file = tmp_path / "api-keys.yaml"
    ring = KeyRing(
        (
            KeyEntry(name="alice", role=Role.USER, hash=hash_key(alice), max_tokens_per_day=5),
            KeyEntry(name="ops", role=Role.ADMIN, hash=hash_key(ops)),
        )
    )
    write_key_file(key_file, ring)
    assert "max_tokens_per_day: 5" in key_file.read_text()
    loaded = loopback_config(
        tmp_path / "data",
        server__agents_dir=str(agents_dir),
        security__authentication__enabled=True,
        security__api_keys__required=True,
        security__api_keys__key_file=str(key_file),
    )
    server = await running(nursery, loaded)
    base = server.api_urls[0]
    as_alice = {"X-API-Key": alice}
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            url = base.replace("http://", "ws://") + "/ws/agents/clerk"
            async with open_ws(url, as_alice) as ws:
                await ws.send_message(json.dumps({"content": "log this"}))
                frames = []
                while not frames or frames[-1]["type"] not in ("done", "error"):
                    frames.append(json.loads(await ws.get_message()))
            refused = await client.post(
                "/api/v1/agents/clerk/messages", json={"content": "and this"}, headers=as_alice
            )
            allowed = await client.post(
                "/api/v1/agents/clerk/messages",
                json={"content": "and this"},
                headers={"X-API-Key": ops},
            )
            report = (
                await client.get(
                    "/api/v1/usage", params={"group_by": "key"}, headers={"X-API-Key": ops}
                )
            ).json()
            metrics = (await client.get(f"{server.metrics_url}")).text
    done = frames[-1]
    assert done["type"] == "done", done
    assert figures(done["usage"]) == expected(llm.reported[:1], "openai")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "BUDGET_EXCEEDED"
    assert error["details"]["budget"]["scope"] == "key"
    assert error["details"]["budget"]["name"] == "alice"
    assert "key file" in error["message"]
    assert allowed.status_code == 200  # another caller is not held by alice's budget
    assert len(llm.reported) == 2
    keys = {item["group"]: item for item in report["groups"]}
    assert figures(keys["alice"]) == expected(llm.reported[:1], "openai")
    assert figures(keys["ops"]) == expected(llm.reported[1:], "openai")
    assert [b["name"] for b in report["budgets"]] == ["alice"]
    assert 'key="alice",kind="cache_read"' in metrics
