"""``GET /api/v1/cluster``: the instances sharing this server's database (issue #15).

With the PostgreSQL backend, every instance whose heartbeat is recent; with the embedded
backend, this instance alone. Answered from the :class:`~caxton.cluster.ClusterView` in
``Services.cluster``.
"""

from __future__ import annotations

from typing import Any

from caxton.errors import ServiceUnavailable
from caxton.http.routes import RouteTable
from caxton.http.state import current_services
from caxton.security.roles import Role

routes = RouteTable("cluster")


@routes.route(
    "/api/v1/cluster",
    role=Role.READONLY,
    summary="The instances sharing this server's database: with storage.backend postgres, "
    "each whose heartbeat is at most three intervals old (self marks the one answering); "
    "embedded, this instance alone.",
    responses=(200, 503),
)
async def cluster_status() -> dict[str, Any]:
    view = current_services().cluster
    if view is None:
        raise ServiceUnavailable("the cluster view is not available until the server has started")
    instances = await view.live_instances()
    return {
        "instance": view.instance_id,
        "backend": view.backend,
        "instances": [instance.to_json() for instance in instances],
    }
