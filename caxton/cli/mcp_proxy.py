"""``caxton mcp``: a stdio MCP server that proxies to a running server's ``/mcp`` (issue #19).

Desktop and IDE MCP clients start a command and speak JSON-RPC over its stdin and stdout; this
command is that server. Each message read from stdin is POSTed to ``<CAXTON_URL>/mcp`` with
``CAXTON_API_KEY`` (``--url``, ``--config`` and ``--cacert`` work as for every runtime
command), and the response is written to stdout, one JSON line per message. Requests run
concurrently (at most :data:`MAX_IN_FLIGHT`), so a long agent call does not hold up a ping. What
goes wrong on the way (the server is down, the key is refused, the body is too large) becomes a
JSON-RPC error for that request, whose message says what to fix (a line that is not JSON-RPC
is reported on stderr); stdout never carries anything but JSON-RPC, and the command ends when
stdin closes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final

import click
import httpx
import trio
from mcp import types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from caxton.cli.client import api_client

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from caxton.cli.client import ApiClient

#: Requests forwarded at the same time.
MAX_IN_FLIGHT: Final = 8
#: How long one forwarded request may take (an agent's answer included).
REQUEST_TIMEOUT_S: Final = 300.0
#: JSON-RPC server error code for a failure between this proxy and the server.
PROXY_ERROR: Final = -32000


@click.command("mcp")
@click.pass_context
def mcp_command(ctx: click.Context) -> None:
    """Serve MCP over stdio, proxying to the running server's /mcp (for desktop and IDE MCP
    clients; uses CAXTON_URL and CAXTON_API_KEY)."""
    client = api_client(ctx)
    trio.run(proxy, client)


async def proxy(client: ApiClient) -> None:
    """Forward every message from stdin to ``/mcp`` until stdin closes.

    Cancellation:
        In-flight requests are cancelled; their clients get no answer (the process is ending).
    """
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        **({"X-API-Key": client.api_key} if client.api_key else {}),
    }
    timeout = httpx.Timeout(30.0, read=REQUEST_TIMEOUT_S)
    slots = trio.Semaphore(MAX_IN_FLIGHT)
    async with (
        httpx.AsyncClient(
            base_url=client.base_url,
            headers=headers,
            timeout=timeout,
            verify=client.ssl_context(),
        ) as http,
        stdio_server() as (read, write),
        # closing ``write`` once every answer is out ends the SDK's stdout writer
        write,
        trio.open_nursery() as nursery,
        read,
    ):
        async for incoming in read:
            if isinstance(incoming, Exception):
                # no id to answer to: say so on stderr, which MCP clients show in their log
                print(_not_jsonrpc(incoming), file=sys.stderr, flush=True)
                continue
            await slots.acquire()
            nursery.start_soon(_forward, http, client.base_url, incoming, write, slots)


async def _forward(
    http: httpx.AsyncClient,
    base_url: str,
    incoming: SessionMessage,
    write: MemoryObjectSendStream[SessionMessage],
    slots: trio.Semaphore,
) -> None:
    message = incoming.message.root
    request_id = message.id if isinstance(message, types.JSONRPCRequest) else None
    try:
        body = incoming.message.model_dump(by_alias=True, exclude_none=True, mode="json")
        answer = await _post(http, base_url, body)
        if answer is not None:
            await write.send(answer)
        elif request_id is not None:
            await write.send(
                _error(request_id, PROXY_ERROR, f"{base_url}/mcp answered no response")
            )
    except _ProxyFailed as exc:
        if request_id is not None:  # a notification has nobody to tell
            await write.send(_error(request_id, PROXY_ERROR, str(exc)))
    finally:
        slots.release()


class _ProxyFailed(Exception):
    """The message did not reach ``/mcp``, or its answer was not JSON-RPC."""


async def _post(
    http: httpx.AsyncClient, base_url: str, body: dict[str, Any]
) -> SessionMessage | None:
    try:
        response = await http.post("/mcp", json=body)
    except httpx.ConnectError:
        raise _ProxyFailed(
            f"cannot connect to the Caxton server at {base_url}; is it running? (set "
            "CAXTON_URL, or --url, to point elsewhere)"
        ) from None
    except httpx.TimeoutException:
        raise _ProxyFailed(
            f"the Caxton server at {base_url} did not answer within {REQUEST_TIMEOUT_S:g}s"
        ) from None
    except httpx.HTTPError as exc:
        raise _ProxyFailed(f"POST {base_url}/mcp failed: {exc}") from None
    if response.status_code == 202:
        return None
    try:
        document = response.json()
    except ValueError:
        raise _ProxyFailed(
            f"{base_url}/mcp answered HTTP {response.status_code} with a body that is not JSON"
        ) from None
    if isinstance(document, dict) and "jsonrpc" in document:
        try:
            return SessionMessage(types.JSONRPCMessage.model_validate(document))
        except ValueError:
            raise _ProxyFailed(f"{base_url}/mcp answered JSON that is not JSON-RPC") from None
    # an error envelope from the HTTP layer: 401, 403, 413, 429, 503 ...
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        hint = " (set CAXTON_API_KEY to a valid key)" if response.status_code == 401 else ""
        raise _ProxyFailed(
            f"{error.get('message')} ({error.get('code')}, HTTP {response.status_code}){hint}"
        )
    raise _ProxyFailed(f"{base_url}/mcp answered HTTP {response.status_code}")


def _error(request_id: str | int, code: int, message: str) -> SessionMessage:
    error = types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message)
    )
    return SessionMessage(types.JSONRPCMessage(error))


def _not_jsonrpc(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"a line on stdin is not a JSON-RPC message ({text[:200]}); write one per line"


__all__ = ["mcp_command", "proxy"]
