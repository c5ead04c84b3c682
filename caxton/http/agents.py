"""Agents routes that need no running registry: validation of agent files."""

from __future__ import annotations

from typing import Any

from quart import request

from caxton.agents import check_agent_file
from caxton.errors import BadRequest
from caxton.http.routes import Role, RouteTable

routes = RouteTable("agents")


async def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what was wrong."""
    body = await request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise BadRequest(
            "the request body must be a JSON object, for example "
            '{"content": "name = \\"my-agent\\"\\n..."}'
        )
    return body


@routes.route(
    "/api/v1/agents/validate",
    methods=("POST",),
    role=Role.USER,
    summary="Validate an agent file without deploying it: {valid, errors, warnings}.",
    request_body='{"content": "<toml>"} or {"manifest": "<toml>", "wasm_module": "<base64>"}',
    responses=(200, 400),
)
async def validate_agent() -> dict[str, Any]:
    body = await json_object()
    content = body.get("content", body.get("manifest"))
    if not isinstance(content, str):
        raise BadRequest(
            'give the agent file as a string in "content" (or a WASM manifest in "manifest")',
            details={"keys": sorted(body)},
        )
    with_module = "manifest" in body and "wasm_module" in body
    report = check_agent_file(content, source="<request>", require_module=not with_module)
    return report.as_dict()
