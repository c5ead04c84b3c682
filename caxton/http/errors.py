"""The JSON error envelope: ``{"error": {"code", "message", "details", "request_id"}}``.

This module is the one place where exceptions become HTTP responses.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from quart import g, jsonify

from caxton.errors import AgentBusy, error_json
from caxton.usage.model import BudgetExceeded

if TYPE_CHECKING:
    from quart import Response
    from werkzeug.exceptions import HTTPException

    from caxton.errors import CaxtonError, JSONValue

LOGGER = logging.getLogger("caxton.http")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def envelope(
    status: int, code: str, message: str, details: dict[str, JSONValue] | None = None
) -> Response:
    """Build the error response every 4xx/5xx answer uses."""
    response = jsonify(
        error_json(code, message, details, request_id=getattr(g, "request_id", None))
    )
    response.status_code = status
    return response


async def caxton_error(error: CaxtonError) -> Response:
    response = envelope(error.http_status, error.code, error.message, error.details)
    if isinstance(error, AgentBusy):
        response.headers["Retry-After"] = str(error.retry_after_s)
    elif isinstance(error, BudgetExceeded):  # until the budget resets (issue #18)
        response.headers["Retry-After"] = str(error.details.get("retry_after_s", 60))
    return response


async def http_error(error: HTTPException) -> Response:
    status = error.code or 500
    details: dict[str, JSONValue] = {}
    message = error.description or error.name
    if status == 404:
        message = "no route matches this path; GET /api/v1/openapi.json lists every route"
    elif status == 405:
        allowed = sorted(getattr(error, "valid_methods", None) or [])
        details["allowed_methods"] = list(allowed)
        message = f"this route does not accept this method; allowed: {', '.join(allowed)}"
    elif status == 413:
        message = (
            "the request body is larger than server.max_request_size; send less, or raise "
            "the limit in caxton.yaml"
        )
    response = envelope(status, _HTTP_CODES.get(status, f"HTTP_{status}"), message, details)
    if status == 405 and details.get("allowed_methods"):
        response.headers["Allow"] = ", ".join(getattr(error, "valid_methods", []) or [])
    return response


async def unexpected_error(error: Exception) -> Response:
    LOGGER.error("unhandled error: %r", error, exc_info=error)
    return envelope(
        500,
        "INTERNAL_ERROR",
        "the server failed while handling this request; the log has the details "
        "(search for this request_id)",
    )
