"""Ask an A2A agent (a Caxton agent, or any A2A 1.0 agent) with the ``a2a-sdk`` client.

A DEVELOPMENT TOOL, and an example of an A2A client under trio::

    CAXTON_API_KEY=cxk_... .venv/bin/python tools/a2a_ask.py \\
        http://127.0.0.1:8080/a2a/echo "hello" [--no-stream]

It reads the agent's card (``<url>/.well-known/agent-card.json``), sends the text, and prints
each event the agent sends back, one line each. ``CAXTON_API_KEY`` (when set) is sent as
``X-API-Key``, to that agent's origin only.
"""

from __future__ import annotations

import argparse
import json
import os

import httpx
import trio
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2
from google.protobuf import json_format

from caxton.a2a.wire import integral


def describe(event: a2a_pb2.StreamResponse) -> str:
    """One line for one event."""
    kind = event.WhichOneof("payload")
    if kind == "task":
        task = event.task
        state = a2a_pb2.TaskState.Name(task.status.state)
        return f"task {task.id} in context {task.context_id}: {state}" + "".join(
            f"\n  reply: {parts(a.parts)}" for a in task.artifacts
        )
    if kind == "status_update":
        return f"status: {a2a_pb2.TaskState.Name(event.status_update.status.state)}"
    if kind == "artifact_update":
        update = event.artifact_update
        label = "artifact" if update.last_chunk else "chunk"
        return f"{label}: {parts(update.artifact.parts)}"
    return f"message: {parts(event.message.parts)}"


def parts(items: object) -> str:
    shown = []
    for part in items:  # type: ignore[attr-defined]
        if part.WhichOneof("content") == "data":
            shown.append(json.dumps(integral(json_format.MessageToDict(part.data))))
        else:
            shown.append(repr(part.text))
    return " ".join(shown)


async def ask(url: str, text: str, *, stream: bool) -> None:
    headers = {}
    if os.environ.get("CAXTON_API_KEY"):
        headers["X-API-Key"] = os.environ["CAXTON_API_KEY"]
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        print(f"card: {card.name} {card.version}, skills {[s.id for s in card.skills]}")
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=stream)).create(card)
        message = a2a_pb2.Message(message_id=os.urandom(8).hex(), role=a2a_pb2.ROLE_USER)
        message.parts.add(text=text)
        async for event in client.send_message(a2a_pb2.SendMessageRequest(message=message)):
            print(describe(event))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the agent's URL, e.g. http://127.0.0.1:8080/a2a/echo")
    parser.add_argument("text", help="what to send")
    parser.add_argument("--no-stream", action="store_true", help="SendMessage, not streaming")
    args = parser.parse_args()
    trio.run(lambda: ask(args.url, args.text, stream=not args.no_stream))


if __name__ == "__main__":
    main()
