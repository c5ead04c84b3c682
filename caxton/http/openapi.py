"""The OpenAPI 3.1 document, generated from the route declarations themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caxton import __version__
from caxton.http.routes import Role, RouteTable
from caxton.http.state import declared_routes

if TYPE_CHECKING:
    from caxton.http.routes import RouteSpec

routes = RouteTable("meta")

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
                "request_id": {"type": ["string", "null"]},
            },
        }
    },
}


def build_openapi(specs: list[RouteSpec]) -> dict[str, Any]:
    """Render ``specs`` as an OpenAPI 3.1 document."""
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        item = paths.setdefault(spec.openapi_path, {})
        codes: list[int | str] = [*spec.responses]
        if spec.role is not Role.PUBLIC:  # with authentication on: who, whether allowed, how often
            codes += [code for code in (401, 403, 429) if code not in codes]
        if spec.mutating and 503 not in codes:
            codes.append(503)  # safe mode refuses changes
        codes.append("default")
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
                        "schema": {"type": q.type},
                    }
                    for q in spec.query
                ],
                "responses": {str(code): _response(code, spec) for code in codes},
            }
            if spec.websocket:
                operation["x-websocket"] = True
            if spec.request_body and method in ("POST", "PUT", "PATCH"):
                operation["requestBody"] = {
                    "required": True,
                    "description": spec.request_body,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            if spec.role is not Role.PUBLIC:
                operation["security"] = [{"apiKey": []}, {"bearer": []}]
            item[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Caxton", "version": __version__},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def _response(code: int | str, spec: RouteSpec) -> dict[str, Any]:
    if code == "default" or (isinstance(code, int) and code >= 400):
        return {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    if code == 101:
        return {"description": "WebSocket upgrade"}
    return {"description": spec.summary, "content": {"application/json": {}}}


@routes.route(
    "/api/v1/openapi.json",
    role=Role.PUBLIC,
    summary="This OpenAPI 3.1 document, generated from the routes.",
)
async def openapi_document() -> dict[str, Any]:
    return build_openapi(declared_routes())
