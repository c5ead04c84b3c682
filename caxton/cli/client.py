"""The HTTP client every runtime command uses to talk to a running server.

Base URL: ``--url``, else ``CAXTON_URL``, else ``server.host``/``server.port`` of the config
file (``--config`` or ``CAXTON_CONFIG_PATH``; only those keys and ``security.tls.enabled`` are
read, so the rest of a server's file never stops a client), else http://127.0.0.1:8080. The
API key comes from ``CAXTON_API_KEY``. Server errors become :class:`ClientError` with the
server's code and message, so the CLI prints one clear line. HTTPS certificates are always
verified: against the system's CAs, or against ``--cacert FILE`` (``CAXTON_CACERT``) for a
private CA.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from caxton.errors import CaxtonError, ClientError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import click

DEFAULT_URL = "http://127.0.0.1:8080"


def resolve_base_url(url: str | None, config_path: str | None) -> str:
    """Apply the precedence documented in the module docstring."""
    if url:
        return url.rstrip("/")
    if os.environ.get("CAXTON_URL"):
        return os.environ["CAXTON_URL"].rstrip("/")
    path = config_path or os.environ.get("CAXTON_CONFIG_PATH")
    if path:
        from caxton.config import load_server_address

        # only the address and TLS: the rest of the file is the server's business
        address = load_server_address(Path(path))
        host = address.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if address.tls else "http"
        return f"{scheme}://{host}:{address.port}"
    return DEFAULT_URL


class ServerError(ClientError):
    """The server answered with an error envelope."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})", details=details)
        self.status = status
        self.server_code = code


@attrs.define
class ApiClient:
    """A small synchronous client for the Caxton API."""

    base_url: str
    api_key: str | None = attrs.field(factory=lambda: os.environ.get("CAXTON_API_KEY"))
    timeout_s: float = 30.0
    cacert: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def ssl_context(self) -> ssl.SSLContext:
        """The context HTTPS connections verify with (system CAs, or ``cacert``)."""
        try:
            return ssl.create_default_context(cafile=self.cacert)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"--cacert {self.cacert}: cannot load it ({exc})") from None

    def _connect_error(self, exc: httpx.ConnectError) -> ClientError:
        if "certificate" in str(exc).lower():
            return ClientError(
                f"the TLS certificate of {self.base_url} is not trusted ({exc}); pass "
                "--cacert FILE (or set CAXTON_CACERT) with the CA that signed it"
            )
        return ClientError(
            f"cannot connect to the Caxton server at {self.base_url}; is it running? "
            "(set --url or CAXTON_URL to point elsewhere)"
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; raise :class:`ClientError` for connection problems."""
        try:
            with httpx.Client(
                base_url=self.base_url,
                timeout=self.timeout_s,
                headers=self._headers(),
                verify=self.ssl_context(),
            ) as client:
                return client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise self._connect_error(exc) from None
        except httpx.TimeoutException:
            raise ClientError(
                f"the Caxton server at {self.base_url} did not answer within {self.timeout_s}s"
            ) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.base_url}{path} failed: {exc}") from None

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Send a request whose body is read as it arrives (no read timeout).

        Raises:
            ServerError: the server answered with an error status.
            httpx.HTTPError: the transport failed (the caller decides what that means).
        """
        timeout = httpx.Timeout(self.timeout_s, read=None)
        with (
            httpx.Client(
                base_url=self.base_url,
                timeout=timeout,
                headers=self._headers(),
                verify=self.ssl_context(),
            ) as client,
            client.stream(method, path, **kwargs) as response,
        ):
            if not response.is_success:
                response.read()
                decode(response)
            yield response

    def stream_lines(self, path: str, **kwargs: Any) -> Iterator[str]:
        """GET ``path`` and yield its body line by line as it arrives (no read timeout)."""
        try:
            with self.stream("GET", path, **kwargs) as response:
                for line in response.iter_lines():
                    if line:
                        yield line
        except httpx.ConnectError as exc:
            raise self._connect_error(exc) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"stream from {self.base_url}{path} failed: {exc}") from None

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON body; error envelopes raise ServerError."""
        response = self.request(method, path, **kwargs)
        return decode(response)


def decode(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        raise ServerError(
            response.status_code,
            str(error.get("code")),
            str(error.get("message")),
            error.get("details") or {},
        )
    raise ServerError(response.status_code, "HTTP_ERROR", response.text[:200].strip(), {})


__all__ = ["ApiClient", "CaxtonError", "ServerError", "decode", "resolve_base_url"]


def api_client(ctx: click.Context, *, timeout_s: float = 30.0) -> ApiClient:
    """The client for the server this invocation talks to (``caxton --url/--config/--cacert``)."""
    root = ctx.find_root().obj or {}
    return ApiClient(
        resolve_base_url(root.get("url"), root.get("config_path")),
        timeout_s=timeout_s,
        cacert=root.get("cacert"),
    )
