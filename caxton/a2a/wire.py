"""A2A 1.0 over JSON-RPC 2.0, as pure functions: reading a call, the version rule, the
errors (codes and reasons as the ``a2a-sdk`` maps them), and turning A2A messages into
Caxton message content and back.

Messages are read with the SDK's protobuf types (``a2a.types``), so what a client sends is
held to the A2A schema; answers are written as the JSON those types define (camelCase keys,
``TASK_STATE_*`` and ``ROLE_*`` enum names).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from a2a.types import a2a_pb2
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from caxton.errors import CaxtonError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: The protocol version this server speaks (``supportedInterfaces[].protocolVersion``).
PROTOCOL_VERSION = "1.0"
#: The header a client names its protocol version in; absent means 0.3 (the A2A rule).
VERSION_HEADER = "A2A-Version"
#: Methods a JSON-RPC endpoint knows, and the request type of their params.
METHODS: dict[str, type[ProtoMessage]] = {
    "SendMessage": a2a_pb2.SendMessageRequest,
    "SendStreamingMessage": a2a_pb2.SendMessageRequest,
    "GetTask": a2a_pb2.GetTaskRequest,
    "ListTasks": a2a_pb2.ListTasksRequest,
    "CancelTask": a2a_pb2.CancelTaskRequest,
    "SubscribeToTask": a2a_pb2.SubscribeToTaskRequest,
    "CreateTaskPushNotificationConfig": a2a_pb2.TaskPushNotificationConfig,
    "GetTaskPushNotificationConfig": a2a_pb2.GetTaskPushNotificationConfigRequest,
    "ListTaskPushNotificationConfigs": a2a_pb2.ListTaskPushNotificationConfigsRequest,
    "DeleteTaskPushNotificationConfig": a2a_pb2.DeleteTaskPushNotificationConfigRequest,
    "GetExtendedAgentCard": a2a_pb2.GetExtendedAgentCardRequest,
}
PUSH_METHODS = frozenset(m for m in METHODS if "PushNotificationConfig" in m)
#: The key of the hop count in a message's ``metadata`` (the loop guard across servers).
HOP_KEY = "caxtonHop"
#: Longest ``contextId`` taken as a conversation id.
CONTEXT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
A2A_DOMAIN = "a2a-protocol.org"


class RpcError(CaxtonError):
    """An A2A call that fails: answered as a JSON-RPC error (HTTP 200), never as an HTTP error.

    Args:
        rpc_code: the JSON-RPC error code (-32700 ... -32001 ...).
        reason: the A2A reason (``TASK_NOT_FOUND`` ...), sent in a ``google.rpc.ErrorInfo``.
        message: what was wrong and how to fix it.
        http_status: the status the A2A HTTP binding gives it (for audit lines and metrics).
        details: facts for programs (the ErrorInfo's metadata, as strings).
    """

    code: ClassVar[str] = "A2A_ERROR"

    def __init__(
        self,
        rpc_code: int,
        reason: str,
        message: str,
        *,
        http_status: int = 400,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.rpc_code = rpc_code
        self.reason = reason
        self.status = http_status

    def response(self, request_id: str | int | None) -> dict[str, Any]:
        """The JSON-RPC error response, as the ``a2a-sdk`` client reads it."""
        metadata = {key: _metadata_text(value) for key, value in self.details.items()}
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": self.rpc_code,
                "message": self.message,
                "data": [
                    {
                        "@type": ERROR_INFO_TYPE,
                        "reason": self.reason,
                        "domain": A2A_DOMAIN,
                        "metadata": metadata,
                    }
                ],
            },
        }


def _metadata_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_error(text: str) -> RpcError:
    """-32700 for a body that is not JSON (``text`` says why and what to send)."""
    return RpcError(-32700, "PARSE_ERROR", text)


def invalid_request(text: str, **details: object) -> RpcError:
    return RpcError(-32600, "INVALID_REQUEST", text, details=details)


def invalid_params(text: str, **details: object) -> RpcError:
    return RpcError(-32602, "INVALID_PARAMS", text, details=details)


def method_not_found(method: str) -> RpcError:
    return RpcError(
        -32601,
        "METHOD_NOT_FOUND",
        f"unknown method {method!r}; the methods are {', '.join(METHODS)}",
        http_status=404,
        details={"method": method},
    )


def task_not_found(task_id: str) -> RpcError:
    return RpcError(
        -32001,
        "TASK_NOT_FOUND",
        f"no task {task_id!r} of yours on this agent (finished tasks are kept for "
        "a2a.task_ttl); ListTasks shows the ones there are",
        http_status=404,
        details={"taskId": task_id},
    )


def task_not_cancelable(task_id: str, state: str) -> RpcError:
    return RpcError(
        -32002,
        "TASK_NOT_CANCELABLE",
        f"task {task_id!r} is already {state}; only a submitted or working task can be canceled",
        details={"taskId": task_id, "state": state},
    )


def push_not_supported() -> RpcError:
    return RpcError(
        -32003,
        "PUSH_NOTIFICATION_NOT_SUPPORTED",
        "push notifications are not supported (the agent card says pushNotifications: "
        "false); use SendStreamingMessage, or poll with GetTask",
    )


def unsupported_operation(text: str, **details: object) -> RpcError:
    return RpcError(-32004, "UNSUPPORTED_OPERATION", text, details=details)


def content_type_not_supported(text: str) -> RpcError:
    return RpcError(-32005, "CONTENT_TYPE_NOT_SUPPORTED", text)


def extended_card_not_configured() -> RpcError:
    return RpcError(
        -32007,
        "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
        "this agent has no extended card (extendedAgentCard: false); its card at "
        ".well-known/agent-card.json is all there is",
    )


def version_not_supported(version: str | None) -> RpcError:
    given = f"A2A-Version {version!r}" if version else "no A2A-Version header (that means 0.3)"
    return RpcError(
        -32009,
        "VERSION_NOT_SUPPORTED",
        f"this endpoint speaks A2A {PROTOCOL_VERSION} and the request sent {given}; send the "
        f"header A2A-Version: {PROTOCOL_VERSION} (a2a-sdk 1.x clients do)",
        details={"supported": PROTOCOL_VERSION, "requested": version or "0.3"},
    )


def internal_error(text: str) -> RpcError:
    return RpcError(-32603, "INTERNAL", text, http_status=500)


def from_caxton_error(error: CaxtonError) -> RpcError:
    """A Caxton refusal (hop guard, closed conversation, a too-large message, ...) as the
    JSON-RPC error of an A2A call; the Caxton code travels in the error's metadata."""
    if isinstance(error, RpcError):
        return error
    details = {"caxtonCode": error.code, **error.details}
    if error.http_status >= 500:
        return RpcError(
            -32603, "INTERNAL", error.message, http_status=error.http_status, details=details
        )
    return RpcError(
        -32602, "INVALID_PARAMS", error.message, http_status=error.http_status, details=details
    )


# -- calls ---------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RpcCall:
    """One JSON-RPC request: its id (echoed in the answer), method and typed params."""

    id: str | int | None
    method: str
    params: ProtoMessage


def read_id(body: object) -> str | int | None:
    """The request id to answer with (``None`` when it is absent or not a string/integer)."""
    if not isinstance(body, dict):
        return None
    value = body.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int | None):
        return None
    return value


def parse_call(body: object) -> RpcCall:
    """The call ``body`` (the parsed JSON of a request; the HTTP layer parses it within its
    JSON bounds and answers :func:`parse_error` for what is not JSON) holds.

    Raises:
        RpcError: not one JSON-RPC 2.0 request (-32600), an unknown method (-32601), params
            that are not the method's request (-32602). The error's request id is read by
            :func:`read_id`.
    """
    if isinstance(body, list):
        raise invalid_request("batch requests are not supported; send one request object")
    if not isinstance(body, dict):
        raise invalid_request(
            f"a JSON-RPC request is an object, got {type(body).__name__}; for example "
            '{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {...}}'
        )
    if body.get("jsonrpc") != "2.0":
        raise invalid_request('"jsonrpc" must be exactly "2.0"')
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
        raise invalid_request('"id" must be a string, an integer or null')
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise invalid_request('"method" is missing; name one of ' + ", ".join(METHODS))
    request_type = METHODS.get(method)
    if request_type is None:
        raise method_not_found(method[:100])
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise invalid_params(f'"params" of {method} must be an object')
    try:
        parsed = json_format.ParseDict(params, request_type(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise invalid_params(f"the params are not a {request_type.__name__}: {exc}") from None
    return RpcCall(id=request_id, method=method, params=parsed)


_VERSION = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.\d+)?\s*$")


def check_version(header: str | None) -> None:
    """Accept A2A 1.x; anything else (no header means 0.3) is a version error.

    Raises:
        RpcError: -32009 ``VERSION_NOT_SUPPORTED``, naming the header to send.
    """
    match = _VERSION.match(header or "")
    if match is None or match.group(1) != "1":
        raise version_not_supported(header)


def result_response(request_id: str | int | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


# -- message content -----------------------------------------------------------------------------


def content_of(message: a2a_pb2.Message) -> str | dict[str, Any]:
    """A message's parts as Caxton content: one data part is a JSON object, text parts are
    joined with newlines.

    Raises:
        RpcError: file parts (-32005), no text at all, or a data part that is not an object
            beside other parts (-32602).
    """
    texts: list[str] = []
    data: list[Any] = []
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            data.append(integral(json_format.MessageToDict(part.data)))
        else:
            raise content_type_not_supported(
                f"a {kind or 'empty'} part cannot be given to a Caxton agent; send text "
                "parts, or one data part holding a JSON object"
            )
    if len(data) == 1 and not texts and isinstance(data[0], dict):
        return dict(data[0])
    if data:
        texts.extend(json.dumps(value, separators=(",", ":")) for value in data)
    text = "\n".join(texts)
    if not text.strip():
        raise invalid_params(
            'the message has no text; send parts such as [{"text": "hello"}]',
            field="message.parts",
        )
    return text


def integral(value: Any) -> Any:
    """``value`` with whole numbers as integers again: a data part is a protobuf ``Value``,
    whose numbers are all doubles, and ``{"words": 4}`` should not come back as ``4.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral(item) for item in value]
    return value


def parts_of(content: str | dict[str, Any]) -> list[dict[str, Any]]:
    """Caxton content as A2A parts (JSON): a text part, or a data part for an object."""
    if isinstance(content, dict):
        return [{"data": content, "mediaType": "application/json"}]
    return [{"text": content}]


def text_of_parts(parts: Iterable[a2a_pb2.Part]) -> str | dict[str, Any]:
    """What a remote agent answered in ``parts``: one data part holding an object is that
    object; otherwise the text parts (data parts as JSON text) joined in order."""
    texts: list[str] = []
    data: list[Any] = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            texts.append(part.text)
        elif kind == "data":
            value = integral(json_format.MessageToDict(part.data))
            data.append(value)
            texts.append(json.dumps(value, separators=(",", ":")))
        elif kind == "url":
            texts.append(part.url)
    if len(data) == 1 and len(texts) == 1 and isinstance(data[0], dict):
        return dict(data[0])
    return "".join(texts)


def hop_of(metadata: object, *, ceiling: int) -> int:
    """The hop count a calling Caxton put in ``metadata[caxtonHop]`` (0 when absent), capped
    at ``ceiling``: a caller can only make its message refused sooner."""
    if not isinstance(metadata, dict):
        return 0
    value = metadata.get(HOP_KEY)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(int(value), ceiling))


def check_context_id(context_id: str) -> None:
    """A ``contextId`` becomes a conversation id: bounded and plain.

    Raises:
        RpcError: -32602 naming the rule.
    """
    if not CONTEXT_ID_PATTERN.match(context_id):
        raise invalid_params(
            "contextId must be 1-128 characters of letters, digits, '.', '_', ':' or '-' "
            "(it names a Caxton conversation); leave it out to start a new one",
            field="message.contextId",
        )
