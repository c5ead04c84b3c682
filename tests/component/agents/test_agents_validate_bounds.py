"""Validating agent files costs time linear in their size, off the event loop (issue #13)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import trio

from caxton.agents.validate import MAX_PROBLEMS, MAX_SPEC_BYTES

if TYPE_CHECKING:
    from caxton.server import ServerInfo

HEAD = 'name = "adversary"\nsystem_prompt = "x"\n'


def template_file(size: int) -> str:
    """A config agent whose template is ``size`` bytes of ``{{`` and nothing that closes it."""
    return f'{HEAD}user_prompt_template = """{"{{" * (size // 2)}"""\n'


async def validate_while_health_answers(
    client: httpx.AsyncClient, content: str
) -> tuple[httpx.Response, float, float]:
    """POST ``content`` to the validate route; return its answer, its time, and the slowest
    /health answer seen while it ran."""
    slowest = 0.0
    done = trio.Event()

    async def poll_health() -> None:
        nonlocal slowest
        while not done.is_set():
            started = time.perf_counter()
            assert (await client.get("/health")).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll_health)
        started = time.perf_counter()
        response = await client.post("/api/v1/agents/validate", json={"content": content})
        elapsed = time.perf_counter() - started
        done.set()
    return response, elapsed, slowest


async def test_an_adversarial_template_is_checked_fast_and_health_keeps_answering(
    agents_server: ServerInfo,
) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=60) as client:
        # 60 KB took 31 s with a backtracking pattern; 1 MB would have taken hours
        for size in (60_000, MAX_SPEC_BYTES - 1000):
            with trio.fail_after(30):
                response, elapsed, slowest = await validate_while_health_answers(
                    client, template_file(size)
                )
            assert response.status_code == 200
            body = response.json()
            assert body["valid"] is False
            assert [e["message"] for e in body["errors"]] == [
                "user_prompt_template has a {{ without a closing }}"
            ]
            # generous bounds for a loaded two-core machine; the check itself takes ~0.3 s
            assert elapsed < 5, (size, elapsed)
            assert slowest < 2, (size, slowest)


async def test_a_file_of_many_mistakes_lists_the_first_ones_and_counts_the_rest(
    agents_server: ServerInfo,
) -> None:
    tools = "".join(f'"no such tool {i}",\n' for i in range(30_000))
    variables = "".join(f"{{{{nope{i}}}}}" for i in range(30_000))
    content = f'{HEAD}tools = [\n{tools}]\nuser_prompt_template = """{variables}"""\n'
    assert len(content) < MAX_SPEC_BYTES
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=60) as client:
        with trio.fail_after(30):
            response, elapsed, slowest = await validate_while_health_answers(client, content)
    body = response.json()
    assert len(body["errors"]) == MAX_PROBLEMS + 1
    assert body["errors"][-1]["message"] == (
        f"{60_000 - MAX_PROBLEMS} more errors not listed (only the first {MAX_PROBLEMS} are)"
    )
    assert elapsed < 5, elapsed
    assert slowest < 2, slowest


async def test_keys_nested_past_the_toml_parser_limit_are_a_validation_error(
    agents_server: ServerInfo,
) -> None:
    content = HEAD + "a" + ".a" * 2000 + " = 1\n"
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client:
        response = await client.post("/api/v1/agents/validate", json={"content": content})
        deployed = await client.post("/api/v1/agents", json={"content": content})
    assert response.status_code == 200
    assert response.json()["errors"][0]["message"] == (
        "invalid TOML: keys, tables or arrays are nested too deeply"
    )
    assert deployed.status_code == 422
