"""Helpers for servers with authentication on: one key per role, a JWT secret, CORS."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs
import trio
from trio_websocket import ConnectionRejected, wrap_client_stream

from caxton.security.keys import KeyEntry, KeyRing, generate_key, hash_key, write_key_file
from caxton.security.roles import Role
from caxton.server import ServerInfo

DASHBOARD = "https://dashboard.example.com"
ROLES = {
    "readonly": Role.READONLY,
    "user": Role.USER,
    "operator": Role.OPERATOR,
    "admin": Role.ADMIN,
}


@attrs.frozen(kw_only=True)
class Secured:
    info: ServerInfo
    #: role name -> key, plus "revoked" (an admin key that was revoked)
    keys: dict[str, str]
    secret: bytes
    key_file: Path
    data_dir: Path

    @property
    def url(self) -> str:
        return self.info.api_urls[0]

    def headers(self, role: str | None) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]} if role else {}


class StartSecured(Protocol):
    async def __call__(self, **extra: object) -> Secured: ...


def write_keys(path: Path) -> dict[str, str]:
    keys = {name: generate_key() for name in (*ROLES, "revoked")}
    entries = [
        KeyEntry(name=f"{name}-key", role=role, hash=hash_key(keys[name]))
        for name, role in ROLES.items()
    ]
    entries.append(
        KeyEntry(name="old-admin", role=Role.ADMIN, hash=hash_key(keys["revoked"]), revoked=True)
    )
    write_key_file(path, KeyRing(tuple(entries)))
    return keys


async def ws_handshake(
    base_url: str, path: str, headers: dict[str, str], *, host_header: str | None = None
) -> int:
    """Open a WebSocket at ``path``: 101 when accepted, else the HTTP status of the refusal.

    ``host_header`` replaces the ``Host`` value (the address without its port by default).
    """
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    extra = [(k.encode(), v.encode()) for k, v in headers.items()]
    status = 101
    try:
        async with trio.open_nursery() as nursery:
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                ws = await wrap_client_stream(
                    nursery, stream, host_header or host, path, extra_headers=extra
                )
                with trio.move_on_after(2):
                    await ws.aclose()
            nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        rejected = group.exceptions[0]
        assert isinstance(rejected, ConnectionRejected)
        status = int(rejected.status_code)
    return status


REPO_AGENTS = Path(__file__).parents[3] / "agents"


def copy_echo(agents_dir: Path) -> None:
    """The example ``echo`` agent (WAT), into ``agents_dir``."""
    agents_dir.mkdir(parents=True, exist_ok=True)
    for name in ("echo.toml", "echo.wat"):
        (agents_dir / name).write_bytes((REPO_AGENTS / name).read_bytes())
