"""Three small read-only routes the console (issue #20) needs that the API did not have.

- ``GET /api/v1/session``: who the caller is (name, role, how it authenticated) and what that
  role may do, so a page offers only what the server will accept (the server still decides).
- ``GET /api/v1/agents/{name}/definition``: the agent's serving version as it was loaded and
  validated (every key with its effective value), with secrets replaced by ``"***"``.
- ``GET /api/v1/metrics/summary``: the server's own Prometheus figures the Health page draws
  (cumulative counters; a page takes differences between two reads for rates), so a browser
  needs no access to the metrics port.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
from quart import g

from caxton.errors import NotFound
from caxton.http.routes import RouteTable
from caxton.http.schemagen import Schema, array, obj
from caxton.http.state import current_services
from caxton.security.roles import Role, role_name

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from caxton.security.gate import Identity

routes = RouteTable("console")

#: A key any of whose ``_``-separated words is one of these never has its value shown,
#: wherever it sits in a definition (``api_key``, ``client_secret``; not ``max_tokens``).
SECRET_WORDS = frozenset(
    {"key", "apikey", "secret", "token", "password", "passwd", "authorization", "credential"}
)
REDACTED = "***"
_MAX_DEPTH = 12
#: ``scheme://user:password@host``: the user information of a URL is a credential too.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def is_secret_key(key: str) -> bool:
    return any(word in SECRET_WORDS for word in key.lower().replace("-", "_").split("_"))


@routes.route(
    "/api/v1/session",
    role=Role.READONLY,
    summary="Who the caller is: name, role, authentication, and what the role may do.",
)
async def session() -> dict[str, Any]:
    identity: Identity | None = g.get("security_identity")
    state = current_services()
    role = identity.role if identity is not None else Role.READONLY
    return {
        "name": identity.name if identity is not None else "anonymous",
        "role": role_name(role),
        "auth": identity.auth if identity is not None else "none",
        "authentication": state.security.required,
        "can": permissions(role),
    }


def permissions(role: Role) -> dict[str, bool]:
    """What ``role`` may do, by the console's controls (mirrors the routes' declared roles)."""
    return {
        "read": role >= Role.READONLY,
        "chat": role >= Role.USER,
        "write_memory": role >= Role.USER,
        "deploy": role >= Role.OPERATOR,
        "admin": role >= Role.ADMIN,
    }


@routes.route(
    "/api/v1/agents/<name>/definition",
    role=Role.READONLY,
    summary="The serving version of an agent as loaded: every key with its effective value "
    "(secrets shown as ***).",
    responses=(200, 404),
)
async def agent_definition(name: str) -> dict[str, Any]:
    state = current_services()
    view = state.registry.agent_view(name)  # 404 with the known names
    agent = state.table.state.agents.get(name)
    entry = None
    if agent is not None:
        entry = agent.active_entry or (agent.entries[-1] if agent.entries else None)
    if entry is None:
        raise NotFound(
            f"agent {name!r} has no loaded version to show (its file failed: "
            f"{view['last_reload'].get('error')})",
            details={"agent": name},
        )
    spec = entry.spec
    return {
        "name": name,
        "kind": spec.kind,
        "version": spec.version,
        "revision": entry.revision,
        "source": spec.source,
        "content_hash": spec.content_hash,
        "definition": plain(spec),
    }


def plain(value: object, depth: int = 0) -> Any:
    """``value`` (attrs instances, mappings, sequences, enums) as JSON, secrets redacted."""
    if depth > _MAX_DEPTH:
        return "…"
    if attrs.has(type(value)):
        fields = attrs.fields(cast("type[attrs.AttrsInstance]", type(value)))
        return _mapping(((f.name, getattr(value, f.name)) for f in fields), depth)
    if isinstance(value, Mapping):
        return _mapping(((str(k), v) for k, v in value.items()), depth)
    if isinstance(value, enum.Enum):
        return plain(value.value, depth + 1)
    if isinstance(value, list | tuple | frozenset | set):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", value)
    if value is None or isinstance(value, int | float | bool):
        return value
    return str(value)


def _mapping(items: Iterable[tuple[str, object]], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in items:
        if is_secret_key(key) and item not in (None, ""):
            out[key] = REDACTED
        elif key == "headers" and isinstance(item, Mapping):
            out[key] = {str(k): REDACTED for k in item}
        else:
            out[key] = plain(item, depth + 1)
    return out


@routes.route(
    "/api/v1/metrics/summary",
    role=Role.READONLY,
    summary="The server's own figures for the console's Health page: HTTP requests and "
    "latency, reloads, messages, errors (cumulative since start).",
)
async def metrics_summary() -> dict[str, Any]:
    metrics = current_services().metrics
    await metrics.refresh()
    return summarize(metrics.registry)


def summarize(registry: CollectorRegistry) -> dict[str, Any]:
    """Cumulative totals from ``registry``: rates are differences between two reads."""
    sums: dict[str, float] = {}
    http_buckets: dict[float, float] = {}
    http = {"requests": 0.0, "seconds": 0.0, "client_errors": 0.0, "server_errors": 0.0}
    routed = {"ok": 0.0, "failed": 0.0}
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name.startswith("caxton_http_request_duration_seconds"):
                if name.endswith("_count"):
                    http["requests"] += value
                    status = labels.get("status", "")
                    if status.startswith("4"):
                        http["client_errors"] += value
                    elif status.startswith("5"):
                        http["server_errors"] += value
                elif name.endswith("_sum"):
                    http["seconds"] += value
                elif name.endswith("_bucket"):
                    bound = float(labels.get("le", "inf"))
                    http_buckets[bound] = http_buckets.get(bound, 0.0) + value
            elif name == "caxton_messages_routed_total":
                routed["ok" if labels.get("outcome") == "ok" else "failed"] += value
            else:
                sums[name] = sums.get(name, 0.0) + value
    return {
        "uptime_seconds": round(sums.get("caxton_server_uptime_seconds", 0.0), 3),
        "memory_bytes": int(sums.get("caxton_server_memory_usage_bytes", 0.0)),
        "cpu_seconds": round(sums.get("caxton_server_cpu_seconds", 0.0), 3),
        "http": {
            "requests": int(http["requests"]),
            "seconds": round(http["seconds"], 6),
            "client_errors": int(http["client_errors"]),
            "server_errors": int(http["server_errors"]),
            "buckets": [
                {"le": "+Inf" if math.isinf(bound) else bound, "count": int(count)}
                for bound, count in sorted(http_buckets.items())
            ],
        },
        "reloads": {
            "ok": int(sums.get("caxton_agent_reload_success_total", 0.0)),
            "failed": int(sums.get("caxton_agent_reload_failed_total", 0.0)),
        },
        "messages": {"ok": int(routed["ok"]), "failed": int(routed["failed"])},
        "agents": {
            "config": int(sums.get("caxton_agent_config_count", 0.0)),
            "wasm": int(sums.get("caxton_agent_wasm_count", 0.0)),
            "response_p99_seconds": round(sums.get("caxton_agent_response_latency_p99", 0.0), 6),
        },
        "memory": {
            "entities": int(sums.get("caxton_memory_entities_total", 0.0)),
            "search_p99_seconds": round(sums.get("caxton_memory_search_latency_p99", 0.0), 6),
        },
    }


# -- response schemas (caxton.http.schemas.OPERATIONS lists them under these endpoints)

_INT: Schema = {"type": "integer", "minimum": 0}
_NUM: Schema = {"type": "number"}
_STR: Schema = {"type": "string"}

SESSION_SCHEMA: Schema = obj(
    {
        "name": _STR,
        "role": {"type": "string", "enum": ["readonly", "user", "operator", "admin"]},
        "auth": {"type": "string", "enum": ["none", "api_key", "jwt"]},
        "authentication": {"type": "boolean"},
        "can": obj({k: {"type": "boolean"} for k in permissions(Role.READONLY)}),
    },
    description="The caller, and what its role may do.",
)
DEFINITION_SCHEMA: Schema = obj(
    {
        "name": _STR,
        "kind": {"type": "string", "enum": ["config", "wasm"]},
        "version": _STR,
        "revision": _INT,
        "source": _STR,
        "content_hash": _STR,
        "definition": {"type": "object", "description": "every key of the spec as loaded"},
    },
    description="The serving version of an agent as loaded (secrets shown as ***).",
)
SUMMARY_SCHEMA: Schema = obj(
    {
        "uptime_seconds": _NUM,
        "memory_bytes": _INT,
        "cpu_seconds": _NUM,
        "http": obj(
            {
                "requests": _INT,
                "seconds": _NUM,
                "client_errors": _INT,
                "server_errors": _INT,
                "buckets": array(obj({"le": {"type": ["number", "string"]}, "count": _INT})),
            }
        ),
        "reloads": obj({"ok": _INT, "failed": _INT}),
        "messages": obj({"ok": _INT, "failed": _INT}),
        "agents": obj({"config": _INT, "wasm": _INT, "response_p99_seconds": _NUM}),
        "memory": obj({"entities": _INT, "search_p99_seconds": _NUM}),
    },
    description="Cumulative figures since the server started; rates are differences.",
)
