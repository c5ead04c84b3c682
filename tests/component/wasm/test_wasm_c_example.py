"""The C example agent (agents/src/wordcount.c, built to agents/wordcount.wasm) in the real pool.

The module is build output: `make install` runs tools/wasm/build-examples.sh before the tests. A
missing module fails these tests (it is not a reason to skip them).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import wasm_guests as g

from caxton.agents import check_agent_file
from caxton.agents.files import read_agent_file
from caxton.agents.spec import WasmAgentSpec
from caxton.wasm import GuestHooks, LoadedAgentModule, WasmAgentFailed, WasmPool

MANIFEST = g.AGENTS / "wordcount.toml"
SOURCE = g.AGENTS / "src" / "wordcount.c"


def manifest() -> WasmAgentSpec:
    spec = check_agent_file(MANIFEST.read_text(), source=MANIFEST.name).spec_or_raise()
    assert isinstance(spec, WasmAgentSpec)
    return spec


async def load_wordcount(pool: WasmPool, hooks: GuestHooks | None = None) -> LoadedAgentModule:
    """Read the manifest and its module as the agents-directory watcher does, then load it."""
    module_path = MANIFEST.parent / (manifest().module or "")
    if not module_path.is_file():
        pytest.fail(
            f"{module_path} is missing: build it from {SOURCE.relative_to(g.AGENTS.parent)} with "
            "tools/wasm/install-toolchain.sh && tools/wasm/build-examples.sh (make install "
            "runs both)"
        )
    agent_file = read_agent_file(MANIFEST)
    assert agent_file is not None
    assert agent_file.report.errors == ()
    spec = agent_file.report.spec
    assert isinstance(spec, WasmAgentSpec)
    assert agent_file.module is not None
    return await pool.load(
        agent_file.module, spec.limits, name=spec.name, source_name=module_path.name, hooks=hooks
    )


def envelope(content: Any, *, ensure_ascii: bool = True) -> bytes:
    """A DESIGN §5 message, as the host writes it into guest memory."""
    message = {
        "performative": "request",
        "sender": "client",
        "receiver": "wordcount",
        "content": content,
        "conversation_id": "c-1",
        "reply_with": "r-1",
        "message_id": "m-1",
        "created_at": "2026-01-01T00:00:00Z",
    }
    return json.dumps(message, ensure_ascii=ensure_ascii).encode()


def counts(text: str) -> dict[str, int]:
    """What the agent should report for ``text``: Python's own notion of words and characters."""
    return {"words": len(text.split()), "chars": len(text), "bytes": len(text.encode())}


async def ask(agent: LoadedAgentModule, message: bytes) -> tuple[dict[str, Any], list[bytes]]:
    send, receive = g.chunk_stream()
    reply = await agent.handle(message, stream=send)
    chunks = g.taken(receive)
    assert b"".join(chunks) == reply.body
    assert reply.chunks == len(chunks)
    return json.loads(reply.body), chunks


def test_the_manifest_names_the_built_module() -> None:
    spec = manifest()
    assert (spec.name, spec.module) == ("wordcount", "wordcount.wasm")
    assert SOURCE.is_file()


async def test_it_counts_a_message_in_two_chunks(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await load_wordcount(pool)
        assert agent.abi == "caxton-v1"
        body, chunks = await ask(agent, envelope("hello, wasm world"))
    assert body == {"words": 3, "chars": 17, "bytes": 17, "messages": 1, "total_words": 3}
    assert chunks == [b'{"words":3,"chars":17,"bytes":17', b',"messages":1,"total_words":3}']


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "héllo wörld",
        "日本語のテキスト と 絵文字 😀🎉",
        "tabs\tnew\nlines\r\nand  doubles ",
        "no\u00a0break\u3000ideographic\u2028line\u2029para\x1fsep\x85next",
        'quotes "inside" and \\ backslashes / slashes',
        "a",
        "𝄞 clef",
    ],
)
@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "utf8"])
async def test_counts_match_python(pool: WasmPool, text: str, ensure_ascii: bool) -> None:
    with trio.fail_after(10):
        agent = await load_wordcount(pool)
        body, chunks = await ask(agent, envelope(text, ensure_ascii=ensure_ascii))
    words = len(text.split())
    assert body == {**counts(text), "messages": 1, "total_words": words}
    assert len(chunks) == 2


async def test_totals_survive_between_messages(pool: WasmPool) -> None:
    texts = ["one two three", "", "four five", "six"]
    with trio.fail_after(10):
        agent = await load_wordcount(pool)
        bodies = [(await ask(agent, envelope(text)))[0] for text in texts]
    assert [(b["messages"], b["total_words"]) for b in bodies] == [(1, 3), (2, 3), (3, 5), (4, 6)]
    assert agent.statistics().instances_created == 1


async def test_only_the_top_level_content_counts(pool: WasmPool) -> None:
    message = json.dumps(
        {
            "performative": "inform",
            "meta": {"content": "not this one", "list": [1, "]", {"x": "}"}]},
            "content": "this one",
            "flag": True,
            "n": -1.5e3,
            "none": None,
        }
    ).encode()
    with trio.fail_after(10):
        agent = await load_wordcount(pool)
        body, _ = await ask(agent, message)
    assert body["words"] == 2
    assert body["chars"] == 8


@pytest.mark.parametrize(
    "message",
    [
        envelope({"text": "an object"}),
        envelope(42),
        envelope(None),
        b'{"performative":"request"}',
        b"{}",
        b'{"content":"bad escape \\q"}',
    ],
    ids=["object", "number", "null", "no-content", "empty-object", "bad-escape"],
)
async def test_content_that_is_not_text_gets_an_error_and_is_not_counted(
    pool: WasmPool, message: bytes
) -> None:
    warnings: list[tuple[int, str]] = []
    with trio.fail_after(10):
        agent = await load_wordcount(pool, GuestHooks(log=lambda lvl, s: warnings.append((lvl, s))))
        refused, chunks = await ask(agent, message)
        counted, _ = await ask(agent, envelope("still counting"))
    assert refused == {"error": "wordcount counts text: content must be a JSON string"}
    assert len(chunks) == 1
    assert (2, "wordcount: no string content to count") in warnings
    assert (counted["messages"], counted["total_words"]) == (1, 2)


@pytest.mark.parametrize(
    "message",
    [b"", b"not json", b'["content", "x"]', b'{"content": "unterminated', b'{"a":1} trailing'],
)
async def test_a_message_that_is_not_a_json_object_fails_the_call(
    pool: WasmPool, message: bytes
) -> None:
    with trio.fail_after(10):
        agent = await load_wordcount(pool)
        with pytest.raises(WasmAgentFailed) as failed:
            await agent.handle(message)
        body, _ = await ask(agent, envelope("the instance lives on"))
    assert failed.value.status == 1
    assert (body["messages"], body["words"]) == (1, 4)


async def test_agent_init_logs_once_per_instance(pool: WasmPool) -> None:
    lines: list[tuple[int, str]] = []
    with trio.fail_after(10):
        agent = await load_wordcount(pool, GuestHooks(log=lambda lvl, s: lines.append((lvl, s))))
        await ask(agent, envelope("x"))
        await ask(agent, envelope("y"))
    assert lines.count((1, "wordcount ready")) == 1


async def test_a_large_message_fits_the_manifest_limits(pool: WasmPool) -> None:
    spec = manifest()
    text = "lorem ipsum dolor sit amet, ünïcödé 😀 " * 2000
    message = envelope(text, ensure_ascii=False)
    assert len(message) <= spec.limits.max_message_size
    with trio.fail_after(10):
        agent = await load_wordcount(pool)
        reply = await agent.handle(message)
    assert json.loads(reply.body) == {**counts(text), "messages": 1, "total_words": 14_000}
    assert reply.fuel_consumed < spec.limits.max_fuel
