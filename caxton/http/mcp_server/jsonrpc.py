"""JSON-RPC 2.0 as MCP's streamable HTTP transport carries it: parsing and answers (pure).

``/mcp`` is stateless: every POST carries one JSON-RPC message (batches are refused, as the
2025-06-18 protocol and later do); a request gets its response as ``application/json``, a
notification or a response gets ``202 Accepted``. No session id is issued, so clients neither
open the optional GET stream nor send DELETE.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs
from mcp import types
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS

#: Longest method name echoed back in an error.
_SHOWN: Final = 80


@attrs.frozen(kw_only=True)
class RpcError(Exception):
    """A JSON-RPC error answer: ``code`` is JSON-RPC's, ``caxton_code`` Caxton's.

    The ``data`` member carries Caxton's error fields (``code``, ``details``, ``request_id``), so
    a client sees the same names as in the REST API's error envelope.
    """

    code: int
    message: str
    caxton_code: str
    details: dict[str, Any] = attrs.field(factory=dict)
    http_status: int = 200

    def response(self, request_id: object, caxton_request_id: str | None) -> dict[str, Any]:
        data = {"code": self.caxton_code, "details": self.details, "request_id": caxton_request_id}
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": self.code, "message": self.message, "data": data},
        }


@attrs.frozen(kw_only=True)
class Incoming:
    """One parsed message: a request has an ``id``; a notification or response has not."""

    method: str | None
    id: str | int | None
    params: dict[str, Any]
    is_request: bool


def parse_message(body: bytes) -> Incoming:
    """Parse one POSTed JSON-RPC message.

    Raises:
        RpcError: not JSON (-32700), a batch, or not a JSON-RPC 2.0 message (-32600).
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RpcError(
            code=types.PARSE_ERROR,
            message=f"the body is not JSON ({exc}); send one JSON-RPC 2.0 message",
            caxton_code="MCP_PARSE_ERROR",
            http_status=400,
        ) from None
    if isinstance(document, list):
        raise _invalid("batches are not supported; send one JSON-RPC message per POST")
    if not isinstance(document, dict):
        raise _invalid(f"a JSON-RPC message is a JSON object, got {type(document).__name__}")
    if document.get("jsonrpc") != "2.0":
        raise _invalid('"jsonrpc" must be "2.0"')
    method = document.get("method")
    has_id = "id" in document
    message_id = document.get("id")
    if has_id and (isinstance(message_id, bool) or not isinstance(message_id, str | int)):
        raise _invalid('"id" must be a string or an integer')
    if method is None:
        if has_id and ("result" in document or "error" in document):
            # a client's response to a server request; this server sends none: accepted
            return Incoming(method=None, id=message_id, params={}, is_request=False)
        raise _invalid('a request or notification needs a "method" string')
    if not isinstance(method, str):
        raise _invalid('"method" must be a string')
    params = document.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(
            code=types.INVALID_PARAMS,
            message='"params" must be a JSON object',
            caxton_code="MCP_INVALID_PARAMS",
        )
    return Incoming(method=method, id=message_id, params=params, is_request=has_id)


def _invalid(message: str) -> RpcError:
    return RpcError(
        code=types.INVALID_REQUEST,
        message=f"invalid JSON-RPC request: {message}",
        caxton_code="MCP_INVALID_REQUEST",
        http_status=400,
    )


def method_not_found(method: str) -> RpcError:
    return RpcError(
        code=types.METHOD_NOT_FOUND,
        message=f"unknown method {method[:_SHOWN]!r}; this server answers initialize, ping, "
        "tools/list and tools/call",
        caxton_code="MCP_METHOD_NOT_FOUND",
        details={"method": method[:_SHOWN]},
    )


def invalid_params(message: str, **details: Any) -> RpcError:
    return RpcError(
        code=types.INVALID_PARAMS,
        message=message,
        caxton_code="MCP_INVALID_PARAMS",
        details=details,
    )


def negotiate_version(requested: object) -> str:
    """The protocol version to answer ``initialize`` with: the client's when supported, else
    the newest this server speaks (the client then decides whether to go on)."""
    if isinstance(requested, str) and requested in SUPPORTED_PROTOCOL_VERSIONS:
        return requested
    return types.LATEST_PROTOCOL_VERSION


def check_version_header(value: str | None) -> None:
    """Refuse an ``MCP-Protocol-Version`` header this server does not speak.

    Raises:
        RpcError: with HTTP status 400, naming the supported versions.
    """
    if value is None or value in SUPPORTED_PROTOCOL_VERSIONS:
        return
    raise RpcError(
        code=types.INVALID_REQUEST,
        message=f"unsupported MCP-Protocol-Version {value[:_SHOWN]!r}; this server speaks "
        + ", ".join(SUPPORTED_PROTOCOL_VERSIONS),
        caxton_code="MCP_UNSUPPORTED_VERSION",
        details={"supported": list(SUPPORTED_PROTOCOL_VERSIONS)},
        http_status=400,
    )


def result(request_id: object, value: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}
