"""Every feature's store migrations, per backend: what a store must be opened with.

The server opens its store with these (:func:`caxton.server._choose_backend`), and so do the
commands that open a store of their own (``caxton storage verify`` on a stopped server,
``caxton storage migrate`` on its target), so no feature's tables are ever left out of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton.a2a.schema import A2A_TASK_MIGRATIONS, A2A_TASK_POSTGRES_MIGRATIONS
from caxton.agents.deployments import DEPLOYMENT_POSTGRES_MIGRATIONS
from caxton.cluster import CLUSTER_POSTGRES_MIGRATIONS
from caxton.memory import MEMORY_MIGRATIONS, MEMORY_POSTGRES_MIGRATIONS
from caxton.messaging.schema import CONVERSATION_MIGRATIONS, CONVERSATION_POSTGRES_MIGRATIONS
from caxton.ops.safe_mode import SAFE_MODE_POSTGRES_MIGRATIONS
from caxton.usage.schema import USAGE_MIGRATIONS, USAGE_POSTGRES_MIGRATIONS

if TYPE_CHECKING:
    from caxton.store import Migration


def embedded_migrations() -> tuple[Migration, ...]:
    """The DuckDB file's tables: memory, conversations, LLM usage and A2A tasks (the rest are
    files in data_dir)."""
    return (*MEMORY_MIGRATIONS, *CONVERSATION_MIGRATIONS, *USAGE_MIGRATIONS, *A2A_TASK_MIGRATIONS)


def postgres_migrations() -> tuple[Migration, ...]:
    """PostgreSQL's tables: memory, conversations, deployed agents, the safe-mode flag, the
    cluster's instances, LLM usage and A2A tasks."""
    return (
        *MEMORY_POSTGRES_MIGRATIONS,
        *CONVERSATION_POSTGRES_MIGRATIONS,
        *DEPLOYMENT_POSTGRES_MIGRATIONS,
        *SAFE_MODE_POSTGRES_MIGRATIONS,
        *CLUSTER_POSTGRES_MIGRATIONS,
        *USAGE_POSTGRES_MIGRATIONS,
        *A2A_TASK_POSTGRES_MIGRATIONS,
    )
