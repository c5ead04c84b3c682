"""The one error hierarchy of Caxton.

Every error a user can see is a :class:`CaxtonError`. Each subclass fixes its machine-readable
``code`` and the HTTP status it maps to; the message is written for a person and says what was
wrong, where, and how to fix it. The HTTP layer (``caxton.http.errors``) and the CLI
(``caxton.cli``) are the only places that translate these into responses and exit codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from caxton.tracing.spans import trace_id

if TYPE_CHECKING:
    from collections.abc import Mapping

JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


class CaxtonError(Exception):
    """Root of every error Caxton reports to a user.

    Args:
        message: one or more sentences a user can act on.
        details: JSON-serialisable facts for programs (key paths, limits, names).
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def as_json(self, *, request_id: str | None = None) -> dict[str, Any]:
        """The error envelope every boundary answers with (HTTP bodies, SSE and WebSocket
        frames): ``{"error": {"code", "message", "details", "request_id"}}``."""
        return error_json(self.code, self.message, self.details, request_id=request_id)


def error_json(
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    request_id: str | None = None,
) -> dict[str, Any]:
    """``{"error": {"code", "message", "details", "request_id"}}``: the one shape of an error
    answer (DESIGN §7), for errors that are not a :class:`CaxtonError` (an HTTP framework
    refusal, an early 413) as well."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "details": dict(details or {}),
        "request_id": request_id,
    }
    trace = trace_id()
    if trace is not None:  # with tracing on (issue #18): the trace to look up
        error["trace_id"] = trace
    return {"error": error}


class ConfigError(CaxtonError):
    """The server configuration is invalid; ``problems`` lists every finding, one per line."""

    code = "CONFIG_INVALID"
    http_status = 422

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(problems)
        head = f"{source}: {count} configuration error{'s' if count != 1 else ''}"
        super().__init__(
            "\n".join([head, *(f"  - {p}" for p in problems)]),
            details={"source": source, "problems": list(problems)},
        )


class StartupError(CaxtonError):
    """The server cannot start (data_dir locked or unwritable, port in use, ...)."""

    code = "STARTUP_FAILED"


class DataDirLockedError(StartupError):
    """Another process already serves from this data_dir."""

    code = "DATA_DIR_LOCKED"


class ValidationFailed(CaxtonError):
    """A request body or a file failed validation."""

    code = "VALIDATION_ERROR"
    http_status = 422


class BadRequest(CaxtonError):
    """The request could not be understood (bad JSON, bad query parameter)."""

    code = "BAD_REQUEST"
    http_status = 400


class NotFound(CaxtonError):
    """The named resource does not exist."""

    code = "NOT_FOUND"
    http_status = 404


class MethodNotAllowed(CaxtonError):
    """The route exists but not for this HTTP method."""

    code = "METHOD_NOT_ALLOWED"
    http_status = 405


class Conflict(CaxtonError):
    """The request conflicts with existing state (a name already taken, ...)."""

    code = "CONFLICT"
    http_status = 409


class PayloadTooLarge(CaxtonError):
    """The request body is larger than ``server.max_request_size``."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class ServiceUnavailable(CaxtonError):
    """A component the request needs is not ready or is shutting down."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503


class AgentBusy(ServiceUnavailable):
    """An agent has too many calls waiting, or this one waited its whole time budget (503).

    The HTTP layer adds ``Retry-After: retry_after_s``.
    """

    code = "AGENT_BUSY"

    def __init__(self, *, agent: str, why: str, retry_after_s: int) -> None:
        self.agent = agent
        self.retry_after_s = retry_after_s
        super().__init__(
            f"agent {agent!r} is busy: {why}. Retry in {retry_after_s}s, send fewer messages "
            "at once, or make the agent answer faster.",
            details={"agent": agent, "retry_after_seconds": retry_after_s},
        )


class ClientError(CaxtonError):
    """The CLI could not talk to the server, or the server answered with an error."""

    code = "CLIENT_ERROR"
