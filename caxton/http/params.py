"""Reading request bodies and query parameters, with errors that say what to send instead.

A body that is not JSON (or not an object) is 400; a query parameter that is not a number is
400 and one out of range is 422.
"""

from __future__ import annotations

import json
from typing import Any

from quart import request

from caxton.errors import BadRequest, ValidationFailed


async def raw_body() -> bytes:
    return await request.get_data(True, False, False)


async def json_body(hint: str) -> Any:
    """The request body parsed as JSON, or a 400 that says what was wrong and ``hint``."""
    raw = await raw_body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc}); {hint}") from None


async def json_object(example: str) -> dict[str, Any]:
    """The request body as a JSON object; ``example`` is shown when it is not one."""
    body = await json_body(f"send for example {example}")
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, for example {example}")
    return body


async def optional_json_object(example: str) -> dict[str, Any]:
    """Like :func:`json_object`, but an empty body is an empty object."""
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
