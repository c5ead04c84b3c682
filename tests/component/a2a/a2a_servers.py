"""A server in this process for the A2A tests: authentication and audit on, with the example
echo agent and a slow agent (a WASM guest that works for a while before it answers)."""

from __future__ import annotations

import functools
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import a2a_pb2
from servers import loopback_config, write_slow_agent

from caxton.security.keys import KeyEntry, KeyRing, generate_key, hash_key, write_key_file
from caxton.security.roles import Role
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx
    from a2a.client import Client
    from opentelemetry.sdk.trace.export import SpanExporter

REPO_AGENTS = Path(__file__).parents[3] / "agents"


@attrs.frozen(kw_only=True)
class A2AServer:
    info: ServerInfo
    key: str
    other_key: str
    data_dir: Path

    @property
    def url(self) -> str:
        return self.info.api_urls[0]

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "audit.log"


def write_agents(agents_dir: Path) -> None:
    agents_dir.mkdir(parents=True, exist_ok=True)
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO_AGENTS / name, agents_dir / name)
    write_slow_agent(agents_dir)


async def start_a2a_server(
    nursery: trio.Nursery,
    base: Path,
    *,
    span_exporters: Sequence[SpanExporter] = (),
    **extra: object,
) -> A2AServer:
    """A server with authentication and audit on: ``key`` (user) and ``other_key`` (user)."""
    write_agents(base / "agents")
    key, other = generate_key(), generate_key()
    key_file = base / "api-keys.yaml"
    write_key_file(
        key_file,
        KeyRing(
            (
                KeyEntry(name="a2a-client", role=Role.USER, hash=hash_key(key)),
                KeyEntry(name="someone-else", role=Role.USER, hash=hash_key(other)),
            )
        ),
    )
    secret = base / "jwt-secret"
    secret.write_bytes(secrets.token_hex(32).encode() + b"\n")
    secret.chmod(0o600)
    settings: dict[str, object] = {
        "server__agents_dir": str(base / "agents"),
        "security__authentication__enabled": True,
        "security__authentication__jwt_secret_file": str(secret),
        "security__api_keys__required": True,
        "security__api_keys__key_file": str(key_file),
        "security__rate_limiting__requests_per_minute": 100_000,
        "security__rate_limiting__burst_size": 100_000,
        **extra,
    }
    loaded = loopback_config(base / "data", **settings)
    info: ServerInfo = await nursery.start(
        functools.partial(serve, loaded, handle_signals=False, span_exporters=span_exporters)
    )
    return A2AServer(info=info, key=key, other_key=other, data_dir=base / "data")


async def sdk_client(
    http: httpx.AsyncClient, base_url: str, agent: str, *, streaming: bool = False
) -> Client:
    """The ``a2a-sdk`` client for ``agent``, from its card (read with ``http``'s headers)."""
    card = await A2ACardResolver(http, f"{base_url}/a2a/{agent}").get_agent_card()
    return ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)


def user_message(text: str, *, context_id: str = "", **metadata: Any) -> a2a_pb2.Message:
    """A user's message of one text part."""
    message = a2a_pb2.Message(message_id=f"m-{time.monotonic_ns()}", role=a2a_pb2.ROLE_USER)
    message.parts.add(text=text)
    if context_id:
        message.context_id = context_id
    if metadata:
        message.metadata.update(metadata)
    return message


async def follow_and_cancel(
    follower: Client, canceller: Client, task_id: str, *, subscribe_within: float
) -> tuple[list[a2a_pb2.StreamResponse], a2a_pb2.Task, float]:
    """Follow task ``task_id`` with ``follower`` (a streaming client) and, once its first
    event is in, cancel it with ``canceller``.

    Returns:
        The events followed until the stream ended, the cancelled task, and the seconds the
        cancel took.
    """
    followed: list[a2a_pb2.StreamResponse] = []
    subscribed = trio.Event()

    async def follow() -> None:
        async for event in follower.subscribe(a2a_pb2.SubscribeToTaskRequest(id=task_id)):
            followed.append(event)
            subscribed.set()

    async with trio.open_nursery() as following:
        following.start_soon(follow)
        with trio.fail_after(subscribe_within):
            await subscribed.wait()
        before = time.monotonic()
        canceled = await canceller.cancel_task(a2a_pb2.CancelTaskRequest(id=task_id))
        took = time.monotonic() - before
    return followed, canceled, took
