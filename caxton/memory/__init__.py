"""Embedded memory: entities, relations, observations and semantic search in DuckDB.

Compose it inside the store and the embedder (DESIGN §1)::

    async with open_store(path, migrations=[*MEMORY_MIGRATIONS, ...]) as store:
        embedder = await nursery.start(Embedder(cache_dir=...).run)
        memory = await nursery.start(MemoryService(store, embedder).run)

On PostgreSQL (issue #15) the store is a :class:`caxton.store.postgres.PostgresStore` migrated
with :data:`MEMORY_POSTGRES_MIGRATIONS`, and the service gets the pgvector SQL::

    MemoryService(store, embedder, sql=caxton.memory.postgres_sql, hnsw_ef_search=100)
"""

from caxton.memory.embedder import Embedder, EmbedderStatistics, TextEncoder
from caxton.memory.errors import EmbeddingModelError, MemoryLimitExceeded
from caxton.memory.model import DEFAULT_MODEL_NAME, EMBEDDING_DIM, assemble_default_model
from caxton.memory.schema import MEMORY_MIGRATIONS, MEMORY_POSTGRES_MIGRATIONS
from caxton.memory.service import MemoryService
from caxton.memory.sql import MemorySQL
from caxton.memory.transfer import EXPORT_VERSION, ImportData
from caxton.memory.types import (
    Capacity,
    Entity,
    Graph,
    GraphEdge,
    GraphNode,
    ImportReport,
    MemoryStatistics,
    MemoryStats,
    MergeStrategy,
    NewEntity,
    NewRelation,
    OptimizeReport,
    Relation,
    Scope,
    SearchHit,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "EMBEDDING_DIM",
    "EXPORT_VERSION",
    "MEMORY_MIGRATIONS",
    "MEMORY_POSTGRES_MIGRATIONS",
    "Capacity",
    "Embedder",
    "EmbedderStatistics",
    "EmbeddingModelError",
    "Entity",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "ImportData",
    "ImportReport",
    "MemoryLimitExceeded",
    "MemorySQL",
    "MemoryService",
    "MemoryStatistics",
    "MemoryStats",
    "MergeStrategy",
    "NewEntity",
    "NewRelation",
    "OptimizeReport",
    "Relation",
    "Scope",
    "SearchHit",
    "TextEncoder",
    "assemble_default_model",
]
