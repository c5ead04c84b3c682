"""Scripted OpenAI- and Anthropic-compatible LLM server: a DEVELOPMENT AND TEST TOOL.

It is not an LLM and not part of Caxton. It answers ``POST /v1/chat/completions`` (OpenAI) and
``POST /v1/messages`` (Anthropic), streaming (SSE) or not, from a script, so that tests and
offline demos can exercise Caxton's LLM clients without network access or API keys. It binds
127.0.0.1 only.

Run it::

    .venv/bin/python tools/llm_server.py [SCRIPT.json|SCRIPT.yaml] [--port 0]

It prints its URL; point an agent at it with ``provider = "openai"`` and
``base_url = "<URL>/v1"``, or ``provider = "anthropic"`` and ``base_url = "<URL>"``.

The script (JSON or YAML)::

    api_key: sk-test            # optional: requests without this key get 401
    chunk_delay_s: 0            # optional pause between streamed chunks
    rules:                      # first match wins; no match: the reply echoes the text
      - match: weather          # case-insensitive substring of the last user/tool text
        reply: It is sunny.     # streamed word by word
      - regex: '^call (\\w+)'
        tool_call: {name: get_weather, arguments: {city: Paris}, id: call_1}
      - match: flaky
        fail: {status: 500, times: 2, retry_after: 1}   # the first 2 matches fail
        reply: recovered
      - match: cut
        fail: {drop_after_chunks: 1}                    # 200, one chunk, then hang up
        reply: never finished
      - match: slow
        delay_s: 5                                      # before the response starts
      - match: cached
        reply: from the cache
        cache_read_tokens: 40      # reported as prompt-cache reads (OpenAI: cached_tokens)
        cache_write_tokens: 8      # reported as cache writes (Anthropic only; OpenAI: input)

Tests import it and start it in their nursery::

    server = await nursery.start(serve_llm, {"rules": [...]})
    server.url, server.requests
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio
import yaml
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import request
from quart_trio import QuartTrio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

LOGGER = logging.getLogger("caxton.tools.llm_server")


class DroppedConnection(Exception):
    """Raised inside a streamed body to make the server hang up mid-reply."""


@attrs.define
class Rule:
    """One scripted behaviour; ``failures_left`` counts down as failures are served."""

    match: str | None = None
    regex: str | None = None
    reply: str | None = None
    tool_calls: list[dict[str, Any]] = attrs.Factory(list)
    status: int | None = None
    retry_after: str | None = None
    drop_after_chunks: int | None = None
    failures_left: float = 0
    delay_s: float = 0.0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Rule:
        known = {
            "match",
            "regex",
            "reply",
            "tool_call",
            "tool_calls",
            "fail",
            "delay_s",
            "cache_read_tokens",
            "cache_write_tokens",
        }
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown rule keys {sorted(unknown)}; known: {sorted(known)}")
        calls = list(data.get("tool_calls", ()))
        if "tool_call" in data:
            calls.append(data["tool_call"])
        fail = dict(data.get("fail") or {})
        retry_after = fail.get("retry_after")
        return cls(
            match=data.get("match"),
            regex=data.get("regex"),
            reply=data.get("reply"),
            tool_calls=calls,
            status=fail.get("status"),
            retry_after=None if retry_after is None else str(retry_after),
            drop_after_chunks=fail.get("drop_after_chunks"),
            failures_left=float(fail.get("times", "inf")) if fail else 0,
            delay_s=float(data.get("delay_s", 0.0)),
            cache_read_tokens=int(data.get("cache_read_tokens", 0)),
            cache_write_tokens=int(data.get("cache_write_tokens", 0)),
        )

    def matches(self, text: str) -> bool:
        if self.match is not None and self.match.lower() not in text.lower():
            return False
        return self.regex is None or re.search(self.regex, text) is not None


@attrs.define
class Script:
    rules: list[Rule] = attrs.Factory(list)
    api_key: str | None = None
    chunk_delay_s: float = 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Script:
        unknown = set(data) - {"rules", "api_key", "chunk_delay_s"}
        if unknown:
            raise ValueError(f"unknown script keys {sorted(unknown)}")
        return cls(
            rules=[Rule.from_mapping(rule) for rule in data.get("rules", ())],
            api_key=data.get("api_key"),
            chunk_delay_s=float(data.get("chunk_delay_s", 0.0)),
        )

    @classmethod
    def load(cls, path: Path) -> Script:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
        return cls.from_mapping(data or {})

    def rule_for(self, text: str) -> Rule:
        for rule in self.rules:
            if rule.matches(text):
                return rule
        return Rule(reply=text)


@attrs.frozen
class RecordedRequest:
    """What a test may check about a request (credentials are not kept)."""

    path: str
    body: dict[str, Any]
    authorized: bool
    #: the W3C trace context the caller sent, if any
    traceparent: str | None = None


@attrs.frozen
class Reply:
    """The answer decided for one request, in provider-neutral form."""

    text: str
    tool_calls: list[dict[str, Any]]
    input_tokens: int
    drop_after_chunks: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@attrs.define
class LLMServer:
    """Handle returned by :func:`serve_llm`: the URL, the script, every request received."""

    url: str
    script: Script
    requests: list[RecordedRequest] = attrs.Factory(list)
    #: The usage of every successful reply, in the provider's own words (the ``usage``
    #: object it sent), in order: tests compare what Caxton accounted with these.
    reported: list[dict[str, Any]] = attrs.Factory(list)
    #: Requests being answered now (a rule's ``delay_s`` included, streaming excluded), and
    #: the most there ever were at once: tests of client-side concurrency limits read these.
    active: int = 0
    peak_active: int = 0

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            yield
        finally:
            self.active -= 1


def serve_script(data: Mapping[str, Any] | Script | None) -> Script:
    if isinstance(data, Script):
        return data
    return Script.from_mapping(data or {})


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _last_text_openai(body: Mapping[str, Any]) -> str:
    for message in reversed(body.get("messages") or ()):
        if message.get("role") in {"user", "tool"}:
            return _content_text(message.get("content"))
    return ""


def _last_text_anthropic(body: Mapping[str, Any]) -> str:
    for message in reversed(body.get("messages") or ()):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or ():
        if isinstance(block, dict):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_content_text(block.get("content")))
    return " ".join(parts)


def _count_tokens(body: Mapping[str, Any]) -> int:
    texts = [_content_text(m.get("content")) for m in body.get("messages") or ()]
    return sum(len(t.split()) for t in texts) + len(str(body.get("system", "")).split())


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()


def create_app(server: LLMServer) -> QuartTrio:
    """The Quart app serving both wire formats from ``server.script``."""
    app = QuartTrio("caxton-llm-server")
    app.config["RESPONSE_TIMEOUT"] = None

    async def decide(flavour: str) -> tuple[Reply | None, Any]:
        body = await request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return None, _error(flavour, 400, "invalid_request_error", "body is not JSON")
        script = server.script
        if flavour == "openai":
            given = request.headers.get("authorization", "").removeprefix("Bearer ")
        else:
            given = request.headers.get("x-api-key", "")
        authorized = script.api_key is None or given == script.api_key
        traceparent = request.headers.get("traceparent")
        server.requests.append(RecordedRequest(request.path, body, authorized, traceparent))
        if not authorized:
            return None, _error(flavour, 401, "authentication_error", "invalid API key")
        text = _last_text_openai(body) if flavour == "openai" else _last_text_anthropic(body)
        rule = script.rule_for(text)
        if rule.delay_s:
            await trio.sleep(rule.delay_s)
        drop = None
        if rule.failures_left > 0:
            rule.failures_left -= 1
            if rule.status is not None:
                kind = "rate_limit_error" if rule.status == 429 else "api_error"
                if rule.status == 529:
                    kind = "overloaded_error"
                response = _error(flavour, rule.status, kind, "scripted failure")
                if rule.retry_after is not None:
                    response[2]["retry-after"] = rule.retry_after
                return None, response
            drop = rule.drop_after_chunks
        reply_text = rule.reply if rule.reply is not None else ("" if rule.tool_calls else text)
        calls = [
            {
                "id": call.get("id") or f"call_{index}",
                "name": call["name"],
                "arguments": json.dumps(call.get("arguments", {})),
            }
            for index, call in enumerate(rule.tool_calls, 1)
        ]
        reply = Reply(
            reply_text,
            calls,
            _count_tokens(body),
            drop,
            cache_read_tokens=rule.cache_read_tokens,
            cache_write_tokens=rule.cache_write_tokens,
        )
        return reply, None

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Any:
        with server.answering():
            return await _chat_completions()

    async def _chat_completions() -> Any:
        reply, failure = await decide("openai")
        if reply is None:
            return failure
        body = await request.get_json(force=True)
        model = body.get("model", "scripted")
        if not body.get("stream"):
            return _openai_message(reply, model)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = _openai_chunks(reply, model, include_usage=usage)
        if usage and reply.drop_after_chunks is None:
            server.reported.append(json.loads(chunks[-2].decode()[len("data: ") :])["usage"])
        return _streamed(chunks, reply, server.script.chunk_delay_s)

    @app.post("/v1/messages")
    async def messages() -> Any:
        with server.answering():
            return await _messages()

    async def _messages() -> Any:
        reply, failure = await decide("anthropic")
        if reply is None:
            return failure
        body = await request.get_json(force=True)
        model = body.get("model", "scripted")
        if not body.get("stream"):
            return _anthropic_message(reply, model)
        events = _anthropic_events(reply, model)
        if reply.drop_after_chunks is None:
            start = json.loads(events[0].decode().split("data: ", 1)[1])["message"]["usage"]
            end = json.loads(events[-2].decode().split("data: ", 1)[1])["usage"]
            server.reported.append({**start, **end})
        return _streamed(events, reply, server.script.chunk_delay_s)

    return app


def _error(flavour: str, status: int, kind: str, message: str) -> Any:
    if flavour == "openai":
        payload: dict[str, Any] = {"error": {"message": message, "type": kind, "code": status}}
    else:
        payload = {"type": "error", "error": {"type": kind, "message": message}}
    return payload, status, {"content-type": "application/json"}


def _streamed(chunks: list[bytes], reply: Reply, delay_s: float) -> Any:
    async def body() -> AsyncIterator[bytes]:
        for index, chunk in enumerate(chunks):
            if reply.drop_after_chunks is not None and index >= reply.drop_after_chunks:
                raise DroppedConnection("scripted drop")
            if index and delay_s:
                await trio.sleep(delay_s)
            yield chunk

    headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
    return body(), 200, headers


def _openai_chunks(reply: Reply, model: str, *, include_usage: bool) -> list[bytes]:
    base: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({**base, "choices": [choice]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": word}) for word in _words(reply.text)]
    for index, call in enumerate(reply.tool_calls):
        head = {"index": index, "id": call["id"], "type": "function"}
        out.append(chunk({"tool_calls": [{**head, "function": {"name": call["name"]}}]}))
        out += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in _pieces(call["arguments"])
        ]
    output_tokens = len(out) - 1
    out.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if include_usage:
        prompt = reply.input_tokens + reply.cache_read_tokens + reply.cache_write_tokens
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": output_tokens}
        usage["total_tokens"] = prompt + output_tokens
        if reply.cache_read_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": reply.cache_read_tokens}
        out.append(_sse({**base, "choices": [], "usage": usage}))
    out.append(_sse("[DONE]"))
    return out


def _openai_message(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
            for call in reply.tool_calls
        ]
    output_tokens = len(_words(reply.text)) + len(reply.tool_calls)
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": reply.input_tokens + output_tokens,
        },
    }


def _anthropic_events(reply: Reply, model: str) -> list[bytes]:
    message: dict[str, Any] = {
        "id": "msg_scripted",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": 1,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
        },
    }
    out = [_sse({"type": "message_start", "message": message}, "message_start")]
    out.append(_sse({"type": "ping"}, "ping"))
    index = 0
    output_tokens = 0
    block: dict[str, Any]
    if reply.text:
        block = {"type": "text", "text": ""}
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(_sse(start, "content_block_start"))
        for word in _words(reply.text):
            delta = {"type": "text_delta", "text": word}
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            out.append(_sse(event, "content_block_delta"))
            output_tokens += 1
        out.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    for call in reply.tool_calls:
        block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(_sse(start, "content_block_start"))
        for piece in _pieces(call["arguments"]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            event = {"type": "content_block_delta", "index": index, "delta": delta}
            out.append(_sse(event, "content_block_delta"))
            output_tokens += 1
        out.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    stop = "tool_use" if reply.tool_calls else "end_turn"
    delta_event = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    out.append(_sse(delta_event, "message_delta"))
    out.append(_sse({"type": "message_stop"}, "message_stop"))
    return out


def _anthropic_message(reply: Reply, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    content += [
        {
            "type": "tool_use",
            "id": call["id"],
            "name": call["name"],
            "input": json.loads(call["arguments"]),
        }
        for call in reply.tool_calls
    ]
    return {
        "id": "msg_scripted",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": len(_words(reply.text)) + len(reply.tool_calls),
        },
    }


async def serve_llm(
    script: Mapping[str, Any] | Script | None = None,
    *,
    port: int = 0,
    task_status: trio.TaskStatus[LLMServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the script on 127.0.0.1 until cancelled; ``started()`` passes an :class:`LLMServer`.

    Cancellation:
        Cancelling the task stops the server at once (open streams are cut).
    """
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = LOGGER
    config.graceful_timeout = 0.1
    server = LLMServer(url="", script=serve_script(script))
    app = create_app(server)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn_serve, app, config))
        server.url = next(itertools.chain(binds, [""])).rstrip("/")
        task_status.started(server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", nargs="?", type=Path, help="rules file (.json, .yaml)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any)")
    args = parser.parse_args(argv)
    script = Script.load(args.script) if args.script else Script()
    logging.basicConfig(level=logging.INFO)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            server: LLMServer = await nursery.start(
                functools.partial(serve_llm, script, port=args.port)
            )
            print(f"scripted LLM server (development/test tool) at {server.url}", flush=True)
            print(f"  openai:    base_url = {server.url}/v1", flush=True)
            print(f"  anthropic: base_url = {server.url}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
