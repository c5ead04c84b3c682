"""The pure parts of A2A (issue #19): JSON-RPC reading, the version rule, content and parts,
the task book, the cards (read back by the ``a2a-sdk``), the ``a2a`` config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from a2a.client.card_resolver import parse_agent_card
from a2a.types import a2a_pb2
from a2a.utils.errors import JSON_RPC_ERROR_CODE_MAP, TaskNotFoundError
from google.protobuf import json_format

from caxton.a2a.cards import CardFacts, agent_card, server_card
from caxton.a2a.remote import choose_interface
from caxton.a2a.tasks import CANCELED, COMPLETED, A2ATask, TaskBook, offset_of, page_token
from caxton.a2a.transport import origin_of
from caxton.a2a.wire import (
    RpcError,
    check_version,
    content_of,
    hop_of,
    parse_call,
    parts_of,
    task_not_found,
    text_of_parts,
)
from caxton.config import load_config
from caxton.errors import ConfigError


def rpc_code(raw: bytes | str) -> int:
    with pytest.raises(RpcError) as caught:
        parse_call(json.loads(raw))
    return caught.value.rpc_code


def test_json_rpc_calls_are_read_strictly() -> None:
    call = parse_call(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "GetTask",
            "params": {"id": "t1", "historyLength": 2, "someFutureField": True},
        }
    )
    assert (call.id, call.method) == (3, "GetTask")
    assert isinstance(call.params, a2a_pb2.GetTaskRequest)
    assert (call.params.id, call.params.history_length) == ("t1", 2)
    assert rpc_code(b"[]") == -32600
    assert rpc_code(b'"text"') == -32600
    assert rpc_code(b'{"jsonrpc": "2.0", "id": true, "method": "GetTask"}') == -32600
    assert rpc_code(b'{"jsonrpc": "2.0", "id": 1}') == -32600
    assert rpc_code(b'{"jsonrpc": "2.0", "id": 1, "method": "tasks/get"}') == -32601
    assert rpc_code(b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": []}') == -32602
    assert rpc_code(b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": 5}}') == (
        -32602
    )


def test_only_a2a_1_is_spoken() -> None:
    for ok in ("1.0", "1", "1.0.0", " 1.2 "):
        check_version(ok)
    for wrong in (None, "", "0.3", "0.3.0", "2.0", "latest"):
        with pytest.raises(RpcError, match=r"A2A-Version: 1\.0") as caught:
            check_version(wrong)
        assert caught.value.rpc_code == -32009


def test_errors_use_the_codes_the_sdk_maps() -> None:
    error = task_not_found("t9")
    assert error.rpc_code == JSON_RPC_ERROR_CODE_MAP[TaskNotFoundError]
    answer = error.response("req-1")
    assert answer["id"] == "req-1"
    info = answer["error"]["data"][0]
    assert (info["@type"], info["reason"]) == (
        "type.googleapis.com/google.rpc.ErrorInfo",
        "TASK_NOT_FOUND",
    )
    assert info["metadata"] == {"taskId": "t9"}


def message(*parts: dict[str, object]) -> a2a_pb2.Message:
    return json_format.ParseDict({"messageId": "m", "parts": list(parts)}, a2a_pb2.Message())


def test_parts_become_content_and_back() -> None:
    assert content_of(message({"text": "a"}, {"text": "b"})) == "a\nb"
    assert content_of(message({"data": {"n": 4, "list": [1.5, 2]}})) == {"n": 4, "list": [1.5, 2]}
    assert content_of(message({"text": "see"}, {"data": {"n": 1}})) == 'see\n{"n":1}'
    for bad, code in (
        (message({"url": "https://x.example/f"}), -32005),
        (message({"raw": "aGk="}), -32005),
        (message(), -32602),
        (message({"text": "  "}), -32602),
    ):
        with pytest.raises(RpcError) as caught:
            content_of(bad)
        assert caught.value.rpc_code == code
    assert parts_of("hi") == [{"text": "hi"}]
    assert parts_of({"a": 1}) == [{"data": {"a": 1}, "mediaType": "application/json"}]
    assert text_of_parts(message({"data": {"words": 4}}).parts) == {"words": 4}
    assert text_of_parts(message({"text": "a"}, {"text": "b"}).parts) == "ab"


def test_a_caller_can_only_raise_the_hop_count() -> None:
    assert hop_of(None, ceiling=9) == 0
    assert hop_of({"caxtonHop": 3}, ceiling=9) == 3
    assert hop_of({"caxtonHop": 3.0}, ceiling=9) == 3
    assert hop_of({"caxtonHop": -5}, ceiling=9) == 0
    assert hop_of({"caxtonHop": 10**9}, ceiling=9) == 9
    assert hop_of({"caxtonHop": "8"}, ceiling=9) == 0
    assert hop_of({"caxtonHop": True}, ceiling=9) == 0


def test_the_task_book_is_bounded_and_private() -> None:
    now = [1000.0]
    book = TaskBook(max_tasks=2, ttl_s=60, clock=lambda: now[0])

    def task(name: str, owner: str = "me") -> A2ATask:
        made = A2ATask(id=name, context_id="c", agent="echo", owner=owner)
        made.updated_at = now[0]
        return made

    first, second = task("t1"), task("t2", owner="other")
    book.add(first)
    book.add(second)
    with pytest.raises(RpcError, match=r"2 A2A tasks are running"):
        book.add(task("t3"))
    first.state = COMPLETED
    book.add(task("t3"))  # the finished one made room
    with pytest.raises(RpcError) as caught:
        book.get("t1", agent="echo", owner="me")
    assert caught.value.rpc_code == -32001
    with pytest.raises(RpcError):
        book.get("t2", agent="echo", owner="me")  # another caller's task is not found
    with pytest.raises(RpcError):
        book.get("t3", agent="other-agent", owner="me")
    assert book.get("t3", agent="echo", owner="me").id == "t3"
    done = book.get("t3", agent="echo", owner="me")
    done.state = CANCELED
    now[0] += 61
    assert book.page(agent="echo", owner="me") == ([], 0)
    assert book.expire() == 1
    assert (offset_of(page_token(20)), offset_of(""), offset_of("x"), page_token(0)) == (
        20,
        0,
        0,
        "",
    )


def test_subscribers_that_fall_behind_are_dropped() -> None:
    made = A2ATask(id="t", context_id="c", agent="echo", owner="me")
    receive = made.subscribe()
    for _ in range(2000):
        made.publish({"statusUpdate": {}})
    assert made.subscribers == []  # the slow reader was closed, the task went on
    assert receive.receive_nowait() == {"statusUpdate": {}}


def test_cards_are_a2a_cards() -> None:
    facts = CardFacts(
        name="echo", description="", version="1.2.0", capabilities=("echo", "x"), kind="wasm"
    )
    card = parse_agent_card(agent_card(facts, base_url="http://h:1", auth_required=True))
    assert card.supported_interfaces[0].url == "http://h:1/a2a/echo"
    assert [s.id for s in card.skills] == ["echo", "x"]
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert len(card.security_requirements) == 2
    assert choose_interface(card, "http://h:1/a2a/echo/.well-known/agent-card.json").url == (
        "http://h:1/a2a/echo"
    )
    assert origin_of("HTTP://H") == "http://h:80"
    open_card = parse_agent_card(agent_card(facts, base_url="http://h:1", auth_required=False))
    assert not open_card.security_schemes
    listing = server_card([facts], base_url="http://h:1", version="9", auth_required=False)
    assert parse_agent_card(listing).skills[0].id == "echo"
    assert listing["agents"][0]["name"] == "echo"


def test_remote_agents_are_checked_when_the_config_loads() -> None:
    def problems(remotes: str) -> str:
        with pytest.raises(ConfigError) as caught:
            load_config(Path("c.yaml"), text=f"a2a:\n  remote_agents:\n{remotes}", environ={})
        return str(caught.value)

    assert "is not an agent name" in problems("    - {name: 9x, card_url: http://h/c}\n")
    twice = "    - {name: a, card_url: http://h/c}\n    - {name: a, card_url: http://h/d}\n"
    assert "declared twice" in problems(twice)
    assert "not an http(s) URL" in problems("    - {name: a, card_url: file:///etc}\n")
    assert "not in the URL" in problems("    - {name: a, card_url: 'http://u:p@h/c'}\n")
    both = "    - {name: a, card_url: http://h/c, api_key: k, bearer_token: t}\n"
    assert "not both" in problems(both)
    assert "card_url" in problems("    - {name: a}\n")
    assert "is empty" in problems("    - {name: a, card_url: http://h/c, api_key: ''}\n")
    text = (
        "a2a:\n  remote_agents:\n    - name: a\n      card_url: http://h/c\n      api_key: ${K}\n"
    )
    config = load_config(Path("c.yaml"), text=text, environ={"K": "secret"}).config
    assert config.a2a.remote_agents[0].api_key == "secret"


def test_finished_tasks_hold_a_bounded_number_of_bytes() -> None:
    book = TaskBook(max_tasks=100, ttl_s=60, max_bytes=100)
    tasks = [A2ATask(id=f"t{n}", context_id="c", agent="echo", owner="me") for n in range(3)]
    for made in tasks:
        book.add(made)
        made.state = COMPLETED
        book.account(made, 60)
    assert [t.id for t in book.page(agent="echo", owner="me")[0]] == ["t2"]
    assert book.statistics()["bytes"] == 60
    huge = A2ATask(id="big", context_id="c", agent="echo", owner="me")
    book.add(huge)
    huge.state = COMPLETED
    book.account(huge, 10_000)  # the newest stays, whatever its size
    assert [t.id for t in book.page(agent="echo", owner="me")[0]] == ["big"]
