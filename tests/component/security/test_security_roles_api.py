"""Every role against every route the running app registered (``app.config[ROUTES_KEY]``).

The routes come from the app at test time, so a route added later is checked too: each must
answer 401 without credentials (unless public), 403 to a role below its declaration (or to
readonly on anything that is not a read), and get past the gate for roles that may call it.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import httpx
import trio
from security_servers import ROLES, Secured, ws_handshake

from caxton.http.app import create_app
from caxton.http.state import ROUTES_KEY
from caxton.security.roles import Requirement, Role, denial
from caxton.security.tokens import issue_token

if TYPE_CHECKING:
    from caxton.http.routes import RouteSpec


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"no-such-\1", rule)


async def _ws_status(secured: Secured, path: str, headers: dict[str, str]) -> int:
    """The handshake answer: 101 when accepted, else the HTTP status of the refusal."""
    return await ws_handshake(secured.url, path, headers)


async def _status(
    client: httpx.AsyncClient, secured: Secured, spec: RouteSpec, method: str, role: str | None
) -> int:
    path = _concrete(spec.rule)
    if spec.websocket:
        return await _ws_status(secured, path, secured.headers(role))
    body: dict[str, object] | None = {} if method in ("POST", "PUT") else None
    response = await client.request(method, path, headers=secured.headers(role), json=body)
    if response.status_code in (401, 403):
        error = response.json()["error"]
        assert error["code"] == ("UNAUTHENTICATED" if response.status_code == 401 else "FORBIDDEN")
        assert error["request_id"] == response.headers["X-Request-ID"]
    return response.status_code


async def test_every_role_against_every_route(secured: Secured) -> None:
    routes: list[RouteSpec] = create_app(secured.info.services).config[ROUTES_KEY]
    assert len(routes) >= 30
    assert {"/health", "/api/v1/agents", "/ws/events", "/api/v1/memory/entities"} <= {
        s.rule for s in routes
    }
    checked = 0
    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=secured.url, timeout=30) as client:
            for spec in routes:
                for method in spec.methods:
                    requirement = Requirement.of(spec, spec.rule)
                    anonymous = await _status(client, secured, spec, method, None)
                    if spec.role is Role.PUBLIC:
                        assert anonymous not in (401, 403), (method, spec.rule)
                        continue
                    assert anonymous == 401, (method, spec.rule, anonymous)
                    # lowest role first, so refused calls come before any call that changes state
                    for name, role in ROLES.items():
                        status = await _status(client, secured, spec, method, name)
                        if denial(role, requirement, method) is None:
                            assert status not in (401, 403), (name, method, spec.rule, status)
                        else:
                            assert status == 403, (name, method, spec.rule, status)
                        checked += 1
    assert checked >= 4 * 30


async def test_tokens_carry_their_role(secured: Secured) -> None:
    user = issue_token(secured.secret, subject="dash", role=Role.USER, now=time.time(), expiry_s=60)
    operator = issue_token(
        secured.secret, subject="ci", role=Role.OPERATOR, now=time.time(), expiry_s=60
    )
    async with httpx.AsyncClient(base_url=secured.url) as client:
        as_user = {"Authorization": f"Bearer {user}"}
        assert (await client.get("/api/v1/agents", headers=as_user)).status_code == 200
        refused = await client.post("/api/v1/memory/optimize", headers=as_user, json={})
        assert refused.status_code == 403
        assert "operator" in refused.json()["error"]["message"]
        as_operator = {"Authorization": f"Bearer {operator}"}
        allowed = await client.post("/api/v1/memory/optimize", headers=as_operator, json={})
        assert allowed.status_code not in (401, 403)
        # an API key works as a bearer credential too (DESIGN §11)
        as_key = {"Authorization": f"Bearer {secured.keys['readonly']}"}
        assert (await client.get("/api/v1/agents", headers=as_key)).status_code == 200
