"""Liveness, readiness and the health report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response

from caxton import __version__
from caxton.errors import CaxtonError, JSONValue, ServiceUnavailable
from caxton.http.routes import RouteTable
from caxton.http.state import current_services
from caxton.security.roles import Role

if TYPE_CHECKING:
    from caxton.store.backend import Backend

routes = RouteTable("health")


#: The liveness answer, encoded once: what Quart's JSON provider makes of ``{"status": "ok"}``.
LIVENESS_BODY = b'{"status":"ok"}\n'


@routes.route("/health", role=Role.PUBLIC, summary="Liveness: the process answers.")
async def liveness() -> Response:
    return Response(LIVENESS_BODY, mimetype="application/json")


@routes.route(
    "/ready",
    role=Role.PUBLIC,
    summary=(
        "Readiness: 200 once every component has started and the database answers; 503 "
        "before, while stopping, and while the database does not answer."
    ),
    responses=(200, 503),
)
async def readiness() -> dict[str, Any]:
    state = current_services()
    if state.lifecycle.stopping.is_set():
        raise ServiceUnavailable("the server is shutting down", details={"stopping": True})
    if not state.components.all_running():
        waiting = [s.name for s in state.components.statistics() if s.state.value != "running"]
        raise ServiceUnavailable(
            f"not ready: waiting for {', '.join(waiting) or 'components to start'}",
            details={"waiting_for": list[JSONValue](waiting)},
        )
    stores: list[tuple[str, Backend]] = [("the database", state.store)]
    if state.memory.store is not state.store:  # memory.backend: qdrant (issue #16)
        stores.append(("the memory store", state.memory.store))
    for what, store in stores:
        try:
            await store.ping()
        except CaxtonError as exc:
            # a public route: the cause's code, not its message (which names the server)
            raise ServiceUnavailable(
                f"not ready: {what} does not answer (the server log says why)",
                details={"cause": exc.code},
            ) from exc
    return {"status": "ready"}


@routes.route(
    "/api/v1/health",
    role=Role.PUBLIC,
    summary="Health report: status, version, uptime and the state of each component.",
)
async def health_report() -> dict[str, Any]:
    state = current_services()
    components = state.components.statistics()
    if state.lifecycle.stopping.is_set():
        status = "stopping"
    elif state.components.all_running():
        status = "healthy"
    elif any(c.state.value == "failed" for c in components):
        status = "degraded"
    else:
        status = "starting"
    storage: dict[str, Any] = {"backend": state.config.storage.backend, "available": True}
    try:
        await state.store.ping()
    except CaxtonError as exc:
        storage.update(available=False, error=exc.code)  # public: no server address
        if status == "healthy":
            status = "degraded"
    report: dict[str, Any] = {
        "status": status,
        "version": __version__,
        "uptime_seconds": round(state.lifecycle.uptime_seconds(), 3),
        "safe_mode": state.safe_mode.enabled,
        "storage": storage,
        "components": [
            {"name": c.name, "state": c.state.value, "detail": c.detail} for c in components
        ],
    }
    stats = state.registry.statistics()
    report["agents"] = {"config": stats["config"], "wasm": stats["wasm"]}
    report["memory"] = {
        "backend": state.config.memory.backend,
        # without waiting: a probe must answer at once, also while the database does not
        # (on a shared store, as of this instance's last write or stats or metrics read)
        "entities": state.memory.statistics().entity_count,
    }
    if state.memory.store is not state.store:  # memory in Qdrant: its own store to ask
        try:
            await state.memory.store.ping()
        except CaxtonError as exc:
            report["memory"].update(available=False, error=exc.code)
            if report["status"] == "healthy":
                report["status"] = "degraded"
    report["security"] = state.security.summary()
    return report
