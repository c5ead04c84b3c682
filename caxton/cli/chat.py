"""``caxton chat AGENT "text"``: one message over WebSocket, the reply printed as it streams."""

from __future__ import annotations

import json
import ssl
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
import trio
from trio_websocket import ConnectionClosed, HandshakeError, wrap_client_stream

from caxton.cli.client import api_client
from caxton.cli.output import emit_json
from caxton.errors import ClientError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio_websocket import WebSocketConnection


async def _chat(
    base_url: str,
    agent: str,
    text: str,
    conversation: str | None,
    api_key: str | None,
    *,
    print_chunks: bool,
    ssl_context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
) -> dict[str, Any]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        raise ClientError(f"cannot chat through {base_url}: expected an http(s):// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    headers = [(b"x-api-key", api_key.encode())] if api_key else []
    frame: dict[str, Any] = {"content": text}
    if conversation:
        frame["conversation_id"] = conversation
    try:
        tcp = await trio.open_tcp_stream(parts.hostname, port)
    except OSError:
        raise ClientError(
            f"cannot connect to the Caxton server at {base_url}; is it running?"
        ) from None
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    if parts.scheme == "https":
        stream = trio.SSLStream(tcp, ssl_context(), server_hostname=parts.hostname)
    # errors are raised after the nursery closes, so the caller sees the ClientError itself
    # (a CLI message and exit 1), not an exception group around it
    problem: ClientError | None = None
    reply: dict[str, Any] = {}
    async with stream, trio.open_nursery() as nursery:
        try:
            ws = await wrap_client_stream(
                nursery, stream, parts.hostname, f"/ws/agents/{agent}", extra_headers=headers
            )
        except HandshakeError as exc:
            problem = ClientError(f"the server refused the WebSocket: {exc}")
        else:
            try:
                reply = await _converse(ws, frame, print_chunks=print_chunks)
            except ClientError as exc:
                problem = exc
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
        nursery.cancel_scope.cancel()
    if problem is not None:
        raise problem
    return reply


async def _converse(
    ws: WebSocketConnection, frame: dict[str, Any], *, print_chunks: bool
) -> dict[str, Any]:
    """Send ``frame``, print chunks as they come, return the reply message."""
    try:
        await ws.send_message(json.dumps(frame))
        while True:
            message = json.loads(await ws.get_message())
            if message["type"] == "chunk":
                if print_chunks:
                    sys.stdout.write(message["text"])
                    sys.stdout.flush()
            elif message["type"] == "done":
                return dict(message["message"])
            else:
                error = message.get("error", {})
                raise ClientError(
                    f"{error.get('message', 'the agent failed')} ({error.get('code')})"
                )
    except ConnectionClosed as exc:
        raise ClientError(f"the server closed the connection: {exc.reason}") from None


@click.command()
@click.argument("agent")
@click.argument("text")
@click.option("--conversation", default=None, help="Continue this conversation id.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text streams the reply; json prints the reply message.",
)
@click.pass_context
def chat(ctx: click.Context, agent: str, text: str, conversation: str | None, output: str) -> None:
    """Send TEXT to AGENT and stream its reply as it arrives."""

    client = api_client(ctx)
    reply = trio.run(
        lambda: _chat(
            client.base_url,
            agent,
            text,
            conversation,
            client.api_key,
            print_chunks=output == "text",
            ssl_context=client.ssl_context,  # verifies with --cacert when given
        )
    )
    if output == "json":
        emit_json(reply)
    else:
        sys.stdout.write("\n")
