"""Stream readers that never read hold no WASM worker thread (issue #13 item 11).

Five SSE clients with a 4 KiB receive buffer each ask one of five agents that stream 2 MB in
1 KB chunks, and never read a byte; the server's pool has only four worker threads. An
unrelated echo call must still answer at once: the guests' chunks wait in memory (bounded by
their ``max_message_size``) for their readers, not in the worker threads.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import httpx
import trio
from agents_wat import deploy_body
from messaging_servers import start_server

if TYPE_CHECKING:
    from pathlib import Path

STREAMER = """(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 8192))
  (func (export "handle_message") (param i32 i32) (result i32)
    (local $i i32)
    (memory.fill (i32.const 0) (i32.const 97) (i32.const 1000))
    (loop $again
      (call $reply (i32.const 0) (i32.const 1000))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 2000))))
    (i32.const 0)))"""


async def never_reading_stream(url: str, agent: str) -> trio.SocketStream:
    """POST a message asking for SSE, on a socket whose owner never reads the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    body = json.dumps({"content": "go"}).encode()
    head = (
        f"POST /api/v1/agents/{agent}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    stream = trio.SocketStream(sock)
    await stream.send_all(head + body)
    return stream


async def read_until_done(stream: trio.SocketStream) -> bytes:
    """Everything an SSE answer sends up to its done frame."""
    received = bytearray()
    while b"event: done" not in received[-65536:]:
        data = await stream.receive_some(65536)
        assert data, "the connection closed before the done frame"
        received += data
    return bytes(received)


async def test_clients_that_never_read_streams_do_not_hold_other_agents(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    server = await start_server(
        nursery, tmp_path / "data", agents_dir, wasm__max_concurrent_calls=4
    )
    url = server.api_urls[0]
    limits = '[limits]\nmax_message_size = "3MB"\n'
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        names = [f"streamer-{i}" for i in range(5)]
        for name in names:
            body = deploy_body(name, STREAMER, extra=limits)
            created = await client.post("/api/v1/agents", json=body)
            assert created.status_code == 201, created.text
        streams = [await never_reading_stream(url, name) for name in names]
        try:
            table = server.services.table
            with trio.fail_after(10):  # every stream is being answered
                while sum(table.in_flight(name) for name in names) < 5:
                    await trio.sleep(0.01)
            await trio.sleep(0.5)  # the streams fill the sockets and stall
            with trio.fail_after(5):  # forever, when the stalled streams hold the threads
                reply = await client.post("/api/v1/agents/echo/messages", json={"content": "hi"})
            assert reply.status_code == 200, reply.text
            # the chunks waited for their reader, and reach it whole once it reads
            with trio.fail_after(20):
                received = await read_until_done(streams[0])
            assert received.count(b"event: chunk") == 2000
        finally:
            for stream in streams:
                await stream.aclose()
