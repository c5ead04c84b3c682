"""Reading request bodies and query parameters, with errors that say what to send instead.

Every JSON body (and every JSON WebSocket frame) is parsed here, in one place, within bounds
(issue #13): a JSON body must be sent as ``Content-Type: application/json`` (415 otherwise,
so a cross-site ``text/plain`` form post cannot reach a JSON route); a body that is not JSON
(or not an object) is 400, and so is one nested deeper than :data:`MAX_JSON_DEPTH`, an object
with more than :data:`MAX_JSON_KEYS` keys, or more than :data:`MAX_JSON_VALUES` values in all.
A query parameter that is not a number is 400 and one out of range is 422.
"""

from __future__ import annotations

import json
from typing import Any

from quart import request

from caxton.errors import BadRequest, CaxtonError, ValidationFailed

#: Deepest nesting of arrays and objects a request body or frame may have.
MAX_JSON_DEPTH = 64
#: Most keys one JSON object in a request body or frame may have.
MAX_JSON_KEYS = 10_000
#: Most values (containers and scalars) a whole request body or frame may hold.
MAX_JSON_VALUES = 1_000_000


class UnsupportedMediaType(CaxtonError):
    """A JSON route was sent a body that does not say it is JSON (415)."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415


class JsonTooComplex(BadRequest):
    """A JSON body or frame beyond one of the parsing bounds (400); names the bound."""

    code = "JSON_TOO_COMPLEX"


def parse_json(raw: bytes | str, hint: str) -> Any:
    """``raw`` parsed as JSON within the bounds above, or a 400 that says what was wrong.

    Raises:
        BadRequest: not JSON; :class:`JsonTooComplex` when a bound is passed.
    """
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc}); {hint}") from None
    check_json_shape(value)
    return value


def check_json_shape(value: Any) -> None:
    """Refuse ``value`` (parsed JSON) when it passes a bound; iterative, so never recursive."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    values = 0
    while stack:
        item, depth = stack.pop()
        values += 1
        if values > MAX_JSON_VALUES:
            raise JsonTooComplex(
                f"the JSON holds more than {MAX_JSON_VALUES} values; send it in parts",
                details={"limit": "MAX_JSON_VALUES", "max": MAX_JSON_VALUES},
            )
        if isinstance(item, dict):
            if len(item) > MAX_JSON_KEYS:
                raise JsonTooComplex(
                    f"a JSON object has {len(item)} keys; at most {MAX_JSON_KEYS} are accepted",
                    details={"limit": "MAX_JSON_KEYS", "max": MAX_JSON_KEYS},
                )
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= MAX_JSON_DEPTH and children:
            raise _too_deep()
        stack.extend((child, depth + 1) for child in children)


def _too_deep() -> JsonTooComplex:
    return JsonTooComplex(
        f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects; flatten it",
        details={"limit": "MAX_JSON_DEPTH", "max": MAX_JSON_DEPTH},
    )


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type, with any parameters."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def require_json_content_type() -> None:
    """Raise :class:`UnsupportedMediaType` unless the request says its body is JSON."""
    _require_json(request.headers.get("Content-Type"))


def _require_json(content_type: str | None) -> None:
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            "this route takes a JSON body: send it with `Content-Type: application/json`"
            + (f" (got {content_type!r})" if content_type else " (none was sent)"),
            details={"content_type": content_type, "expected": "application/json"},
        )


#: Line-delimited JSON bodies (memory import) are held to the same bounds, line by line.
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})


async def raw_body() -> bytes:
    """The request body; an NDJSON body is checked line by line against the JSON bounds."""
    return await _read_body(request.headers.get("Content-Type"))


async def _read_body(content_type: str | None) -> bytes:
    data: bytes = await request.get_data(True, False, False)
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if mimetype in NDJSON_TYPES:
        for line in data.splitlines():
            if line.strip():
                try:
                    check_json_shape(json.loads(line))
                except RecursionError:
                    raise _too_deep() from None
                except (ValueError, UnicodeDecodeError):
                    pass  # not JSON: the reader names the line
    return data


async def json_body(hint: str) -> Any:
    """The request body parsed as JSON, or a 415/400 that says what was wrong and ``hint``."""
    content_type = request.headers.get("Content-Type")  # one header scan for both checks
    _require_json(content_type)
    return parse_json(await _read_body(content_type), hint)


async def json_object(example: str) -> dict[str, Any]:
    """The request body as a JSON object; ``example`` is shown when it is not one."""
    body = await json_body(f"send for example {example}")
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, for example {example}")
    return body


async def optional_json_object(example: str) -> dict[str, Any]:
    """Like :func:`json_object`, but an empty body is an empty object (of any media type)."""
    if not (await raw_body()).strip():
        return {}
    return await json_object(example)


def int_arg(name: str, default: int, *, low: int, high: int) -> int:
    """Query parameter ``name`` as an integer from ``low`` to ``high``."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(
            f"query parameter {name} must be an integer, got {raw!r}", details={"field": name}
        ) from None
    if not low <= value <= high:
        raise ValidationFailed(
            f"query parameter {name} must be from {low} to {high}, got {value}",
            details={"field": name},
        )
    return value


def float_arg(name: str, default: float) -> float:
    """Query parameter ``name`` as a number."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(
            f"query parameter {name} must be a number, got {raw!r}", details={"field": name}
        ) from None
