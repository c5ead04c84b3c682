"""JSON-RPC parsing and answers of ``/mcp`` (pure; issue #19)."""

from __future__ import annotations

import pytest

from caxton.http.mcp_server.jsonrpc import (
    RpcError,
    check_version_header,
    negotiate_version,
    parse_message,
)
from caxton.http.mcp_server.tools import ask_tool_name


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (b"{", -32700, 400),
        (b"\xff\xfe", -32700, 400),
        (b"[" * 100_000, -32700, 400),
        (b"[]", -32600, 400),
        (b'"ping"', -32600, 400),
        (b'{"id": 1, "method": "ping"}', -32600, 400),
        (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', -32600, 400),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32600, 400),
        (b'{"jsonrpc": "2.0", "id": 1}', -32600, 400),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600, 400),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}', -32602, 200),
    ],
)
def test_what_is_not_one_message_is_refused(body: bytes, code: int, status: int) -> None:
    with pytest.raises(RpcError) as caught:
        parse_message(body)
    assert (caught.value.code, caught.value.http_status) == (code, status)
    answer = caught.value.response(None, "req-1")
    assert answer["error"]["data"]["request_id"] == "req-1"
    assert answer["error"]["message"]


def test_requests_notifications_and_responses() -> None:
    request = parse_message(b'{"jsonrpc": "2.0", "id": "a", "method": "tools/list"}')
    assert (request.method, request.id, request.is_request) == ("tools/list", "a", True)
    note = parse_message(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert not note.is_request
    response = parse_message(b'{"jsonrpc": "2.0", "id": 3, "result": {}}')
    assert (response.method, response.is_request) == (None, False)


def test_protocol_versions() -> None:
    assert negotiate_version("2025-06-18") == "2025-06-18"
    assert negotiate_version("1999-01-01") == "2025-11-25"
    check_version_header(None)
    check_version_header("2025-03-26")
    with pytest.raises(RpcError, match="unsupported MCP-Protocol-Version"):
        check_version_header("2099-01-01")


def test_agent_tool_names_fit_the_providers_rule() -> None:
    assert ask_tool_name("echo") == "ask_echo"
    long = ask_tool_name("a" * 64)
    assert len(long) == 64
    assert long != ask_tool_name("a" * 63 + "b")
