"""The errors the security layer raises; the HTTP layer turns them into the JSON envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caxton.errors import CaxtonError, StartupError

if TYPE_CHECKING:
    from collections.abc import Mapping


class Unauthenticated(CaxtonError):
    """No credential, or one that does not prove who is calling (401).

    Args:
        message: what was wrong with the credential and how to send a good one.
        reason: a short machine label (``missing``, ``unknown_key``, ``expired_token`` ...),
            also the label of ``caxton_api_authentication_failures_total``.
    """

    code = "UNAUTHENTICATED"
    http_status = 401

    def __init__(
        self, message: str, *, reason: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={"reason": reason, **(details or {})})
        self.reason = reason


class Forbidden(CaxtonError):
    """The caller is known, but their role does not allow this route (403)."""

    code = "FORBIDDEN"
    http_status = 403


class RateLimited(CaxtonError):
    """The caller's token bucket is empty (429); ``retry_after_s`` says when to come back."""

    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, details={"retry_after_seconds": retry_after_s})
        self.retry_after_s = retry_after_s


class KeyFileError(StartupError):
    """The API key file cannot be used; the message names the file and the line."""

    code = "KEY_FILE_INVALID"

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        where = f"{source}, line {line}" if line else source
        super().__init__(
            f"API key file {where}: {problem}",
            details={"source": source, "line": line, "problem": problem},
        )
        self.source = source
        self.line = line
        self.problem = problem


class TokenSecretError(StartupError):
    """The JWT secret file is missing, unreadable or too short."""

    code = "JWT_SECRET_INVALID"


class HostNotAllowed(CaxtonError):
    """A ``Host`` this server does not answer to while authentication is off (421).

    A web page on another site can point its own domain at this machine (DNS rebinding); the
    browser then sends that domain as ``Host``. Only loopback names, the bound address and
    ``server.allowed_hosts`` are served.
    """

    code = "HOST_NOT_ALLOWED"
    http_status = 421


class OriginNotAllowed(CaxtonError):
    """A browser request from a foreign origin to an unsafe method or a WebSocket (403)."""

    code = "ORIGIN_NOT_ALLOWED"
    http_status = 403
