"""The cluster's table on PostgreSQL, and the statements that read and write it (issue #15).

Only the PostgreSQL backend has the table: with the embedded backend one process owns the
DuckDB file, so the cluster is that one instance and nothing is stored. Times come from the
database clock (``now()``), so instances whose clocks disagree still agree on who is live.
"""

from __future__ import annotations

from typing import Final

from caxton.store.migrations import Migration

#: The feature name of the cluster's migrations.
FEATURE: Final = "cluster"

CLUSTER_POSTGRES_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        feature=FEATURE,
        version=1,
        description="cluster_instances: one row per running instance, refreshed by heartbeats",
        statements=(
            """
            CREATE TABLE cluster_instances (
                id TEXT PRIMARY KEY,
                address TEXT NOT NULL,
                version TEXT NOT NULL,
                agents INTEGER NOT NULL DEFAULT 0,
                started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                last_heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX cluster_instances_last_heartbeat ON cluster_instances (last_heartbeat)",
        ),
    ),
)

#: Insert this instance's row, or refresh it (``started_at`` is kept from the first beat).
UPSERT_INSTANCE: Final = """
INSERT INTO cluster_instances (id, address, version, agents, started_at, last_heartbeat)
VALUES (%s, %s, %s, %s, now(), now())
ON CONFLICT (id) DO UPDATE SET
    address = EXCLUDED.address,
    version = EXCLUDED.version,
    agents = EXCLUDED.agents,
    last_heartbeat = now()
"""

#: Rows of instances gone long ago (crashed without deleting theirs): kept for a while so an
#: operator can see them in the table, then removed by any live instance.
PURGE_DEAD: Final = (
    "DELETE FROM cluster_instances WHERE last_heartbeat < now() - make_interval(secs => %s)"
)

DELETE_INSTANCE: Final = "DELETE FROM cluster_instances WHERE id = %s"

#: The instances whose last heartbeat is recent enough (the window in seconds).
LIVE_INSTANCES: Final = """
SELECT id, address, version, agents, started_at, last_heartbeat
FROM cluster_instances
WHERE last_heartbeat >= now() - make_interval(secs => %s)
ORDER BY started_at, id
"""

__all__ = [
    "CLUSTER_POSTGRES_MIGRATIONS",
    "DELETE_INSTANCE",
    "FEATURE",
    "LIVE_INSTANCES",
    "PURGE_DEAD",
    "UPSERT_INSTANCE",
]
