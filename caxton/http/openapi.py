"""The OpenAPI 3.1 document, generated from the route declarations themselves."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from caxton import __version__
from caxton.http import schemas
from caxton.http.routes import RouteTable
from caxton.http.state import declared_routes
from caxton.security.roles import Role

if TYPE_CHECKING:
    from caxton.http.routes import RouteSpec

routes = RouteTable("meta")

#: Error answers every route may give, besides those it declares: the envelope for any 4xx
#: (415 wrong media type, 413 too large, 429 rate limited, ...) and any 5xx (503 busy or in
#: safe mode, 500).
_ERROR_RANGES = ("4XX", "5XX")
_ERROR_RESPONSE = {"$ref": "#/components/responses/Error"}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def build_openapi(specs: list[RouteSpec]) -> dict[str, Any]:
    """Render ``specs`` as an OpenAPI 3.1 document, with the bodies of :mod:`schemas`.

    A route without an entry in :data:`schemas.OPERATIONS` still appears, with untyped
    bodies; a unit test fails on it.
    """
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if not spec.in_api:
            continue
        item = paths.setdefault(spec.openapi_path, {})
        bodies = schemas.OPERATIONS.get(spec.endpoint, schemas.Operation())
        for method in spec.methods:
            operation: dict[str, Any] = {
                "operationId": f"{spec.endpoint}.{method.lower()}",
                "summary": spec.summary,
                "tags": [spec.tag],
                "x-caxton-role": spec.role.name.lower(),
                "parameters": [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in spec.path_params
                ]
                + [
                    {
                        "name": q.name,
                        "in": "query",
                        "required": q.required,
                        "description": q.description,
                        "schema": bodies.query.get(q.name, {"type": q.type}),
                    }
                    for q in spec.query
                ],
                "responses": _responses(spec, bodies),
            }
            if spec.websocket:
                operation["x-websocket"] = True
                if bodies.frames:
                    operation["x-caxton-frames"] = dict(bodies.frames)
            if spec.request_body and method in _BODY_METHODS:
                content = bodies.request or {schemas.JSON: {"type": "object"}}
                operation["requestBody"] = {
                    "required": bodies.request_required,
                    "description": spec.request_body,
                    "content": {media: {"schema": schema} for media, schema in content.items()},
                }
            if spec.role is not Role.PUBLIC:
                operation["security"] = [{"apiKey": []}, {"bearer": []}]
            item[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Caxton", "version": __version__},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": copy.deepcopy(schemas.components()),
            "responses": {
                "Error": {
                    "description": "The error envelope: what was wrong and how to fix it.",
                    "headers": {
                        "X-Request-ID": {
                            "description": "the request_id of the envelope (every answer)",
                            "schema": {"type": "string"},
                        },
                        "Retry-After": {
                            "description": "429 and busy 503 answers: seconds to wait",
                            "schema": {"type": "integer"},
                        },
                    },
                    "content": {schemas.JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            },
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def _responses(spec: RouteSpec, bodies: schemas.Operation) -> dict[str, Any]:
    codes = sorted({*spec.responses, *bodies.responses})
    if spec.role is not Role.PUBLIC:  # with authentication on: who, whether allowed, how often
        codes = sorted({*codes, 401, 403, 429})
    if spec.mutating:
        codes = sorted({*codes, 503})  # safe mode refuses changes
    responses: dict[str, Any] = {}
    for code in codes:
        if code >= 400:
            responses[str(code)] = _ERROR_RESPONSE
        elif code == 101:
            responses[str(code)] = {"description": "WebSocket upgrade"}
        else:
            content = bodies.responses.get(code) or {schemas.JSON: {}}
            responses[str(code)] = {
                "description": spec.summary,
                "content": {media: {"schema": schema} for media, schema in content.items()},
            }
    for key in (*_ERROR_RANGES, "default"):
        responses[key] = _ERROR_RESPONSE
    return responses


@routes.route(
    "/api/v1/openapi.json",
    role=Role.PUBLIC,
    summary="This OpenAPI 3.1 document, generated from the routes.",
)
async def openapi_document() -> dict[str, Any]:
    return build_openapi(declared_routes())
