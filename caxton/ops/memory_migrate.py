"""``caxton memory migrate --to qdrant``: copy a stopped server's memory into Qdrant (issue #16).

The source is whatever ``storage.backend`` keeps the memory in: the DuckDB file of the embedded
store, opened read-only, or the PostgreSQL database (opened with every feature's migrations, as
``caxton storage migrate`` opens its target). Both are read through their dialect's
:class:`~caxton.memory.sql.MemorySQL` (``snapshot`` and ``load_index``), and the target is
written through the Qdrant one (``write_entities``, ``write_relations``), so nothing here knows
a statement or a point layout:

* entities go with their observations and their embeddings **as stored** (the source's unit
  vectors, never re-embedded: searches rank and score as before), then relations;
* each batch (``batch_size`` entities or relations) is one write that replaces what the target
  holds under the same key; entities and relations the target already holds identical are
  skipped, so running again after an interruption completes the copy and a second full run
  writes nothing;
* at the end entities, relations and observations are counted on both sides:
  :attr:`MemoryMigrationReport.verified` is false, naming each difference, when they differ (a
  collection that held other entities before shows up there too).

The source server must be stopped: its data_dir lock is held for the whole copy (the lock, the
read-only DuckDB connection and the snapshot of the memory are :mod:`caxton.ops.migrate`'s).
With qdrant-client's local mode (``path``) the target folder is locked by qdrant-client too, so
no server may use it meanwhile. The memory is read whole before it is written (~1.5 KB of
vector per entity).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import TYPE_CHECKING, Any, Final

import attrs

from caxton.components import running
from caxton.memory import postgres_sql, qdrant_memory, queries
from caxton.memory.model import EMBEDDING_DIM
from caxton.ops.errors import MigrationRefused

# what ``storage migrate`` reads and reports with, shared on purpose: the data_dir lock, the
# read-only DuckDB source, the memory snapshot and the counted report
from caxton.ops.migrate import (
    CountedCopy,
    KindCount,
    MemorySnapshot,
    MigrationSource,
    Progress,
    Step,
    _hold_data_dir,
    _open_source,
    read_snapshot,
)
from caxton.ops.schema import postgres_migrations
from caxton.store.postgres import PostgresStore, redact
from caxton.store.qdrant import QdrantStore
from caxton.store.qdrant import redact as qdrant_redact

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    import numpy as np
    from numpy.typing import NDArray

    from caxton.config.model import PostgresConfig, QdrantConfig
    from caxton.memory.sql import MemorySQL
    from caxton.memory.types import Entity, Relation
    from caxton.store.backend import Backend

#: Entities or relations per write.
BATCH_SIZE: Final = 256
#: What is counted on both sides at the end (keys of ``MemorySQL.counts``).
KINDS: Final = ("entities", "relations", "observations")


@attrs.frozen(kw_only=True)
class MemoryMigrationReport(CountedCopy):
    """What ``memory migrate`` copied and whether the target now holds what the source does.

    ``target`` names the Qdrant URL (or "(local mode) <folder>") and the collection.
    """

    source: str  # "duckdb <file>" or the PostgreSQL URL without its password
    config_block: str  # the caxton.yaml lines that switch memory to the target

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, **super().to_json(), "config": self.config_block}


def qdrant_store(settings: QdrantConfig) -> QdrantStore:
    """The memory store (not started) on ``memory.qdrant_config``: its ``path`` (local mode)
    when set, else its ``url``."""
    path = settings.path
    return QdrantStore(
        url=None if path else settings.url,
        path=path,
        collection=settings.collection,
        vector_size=settings.vector_size,
        api_key=settings.api_key,
        timeout_s=settings.timeout,
    )


def config_block(settings: QdrantConfig) -> str:
    """The ``memory`` section of caxton.yaml that makes a server keep memory in ``settings``'
    collection (the guide's block; ``path`` in place of ``url`` for local mode)."""
    path = settings.path
    where = f'path: "{path}"' if path else f'url: "{qdrant_redact(settings.url)}"'
    lines = [
        "memory:",
        '  backend: "qdrant"',
        "  qdrant_config:",
        f"    {where}",
        f'    collection: "{settings.collection}"',
        f"    vector_size: {settings.vector_size}",
    ]
    if settings.api_key:
        lines.append("    api_key: ${QDRANT_API_KEY}")
    return "\n".join(lines) + "\n"


# -- the copy ------------------------------------------------------------------------------------


def _unchanged_entities(sql: MemorySQL, batch: Sequence[Entity], conn: Any) -> set[str]:
    held = sql.fetch_entities(conn, [e.name for e in batch])
    return {e.name for e in batch if held.get(e.name) == e}


def _unchanged_relations(sql: MemorySQL, batch: Sequence[Relation], conn: Any) -> set[int]:
    held = sql.fetch_relations(conn, [(r.source, r.target, r.relation_type) for r in batch])
    return {i for i, r in enumerate(batch) if held.get((r.source, r.target, r.relation_type)) == r}


def _write_entities(
    sql: MemorySQL, entities: Sequence[Entity], vectors: NDArray[np.float32], conn: Any
) -> None:
    sql.lock_writes(conn)
    sql.write_entities(conn, entities, vectors)


def _write_relations(sql: MemorySQL, relations: Sequence[Relation], conn: Any) -> None:
    sql.lock_writes(conn)
    sql.write_relations(conn, relations)


async def copy_memory(
    snapshot: MemorySnapshot,
    target: Backend,
    sql: MemorySQL,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress,
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Write ``snapshot`` into ``target`` through ``sql``, in batches, skipping what it holds
    identical already.

    Returns:
        (written, skipped, problems): entities, relations and observations written by this
        run and left alone; a line per problem met (entities without an embedding).
    """
    copied = dict.fromkeys(KINDS, 0)
    skipped = dict.fromkeys(KINDS, 0)
    present, problems = snapshot.embedded()
    progress(Step(kind="entities", done=0, total=len(present)))
    for start in range(0, len(present), batch_size):
        batch = present[start : start + batch_size]
        same = await target.execute_fn(functools.partial(_unchanged_entities, sql, batch))
        todo = [e for e in batch if e.name not in same]
        if todo:
            vectors = snapshot.matrix[[snapshot.rows[e.name] for e in todo]]
            await target.execute_write_fn(functools.partial(_write_entities, sql, todo, vectors))
        for entity in batch:
            tally = skipped if entity.name in same else copied
            tally["entities"] += 1
            tally["observations"] += len(entity.observations)
        progress(Step(kind="entities", done=start + len(batch), total=len(present)))
    relations = snapshot.relations
    progress(Step(kind="relations", done=0, total=len(relations)))
    for start in range(0, len(relations), batch_size):
        chunk = relations[start : start + batch_size]
        alike = await target.execute_fn(functools.partial(_unchanged_relations, sql, chunk))
        todo_relations = [r for i, r in enumerate(chunk) if i not in alike]
        if todo_relations:
            await target.execute_write_fn(functools.partial(_write_relations, sql, todo_relations))
        copied["relations"] += len(todo_relations)
        skipped["relations"] += len(alike)
        progress(Step(kind="relations", done=start + len(chunk), total=len(relations)))
    return copied, skipped, problems


def count_kinds(sql: MemorySQL, conn: Any) -> dict[str, int]:
    """Entities, relations and observations ``conn`` holds."""
    figures = sql.counts(conn)
    return {kind: int(figures[kind]) for kind in KINDS}


# -- the source and the target -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_source_memory(
    source: MigrationSource, postgres: PostgresConfig | None
) -> AsyncIterator[tuple[str, MemorySnapshot]]:
    """Hold the source's data_dir lock and read its memory whole: (its name, the snapshot).

    Args:
        source: the stopped server's data_dir and DuckDB file (read when ``postgres`` is None).
        postgres: ``storage.postgres`` when ``storage.backend`` is postgres.
    """
    async with _hold_data_dir(source.data_dir):
        if postgres is None:
            async with _open_source(source.database_path) as reader:
                snapshot = await reader.read(functools.partial(read_snapshot, queries))
            yield f"duckdb {source.database_path}", snapshot
            return
        store = PostgresStore(
            postgres.url,
            migrations=postgres_migrations(),
            pool_size=1,
            connect_timeout_s=postgres.connect_timeout,
            statement_timeout_s=postgres.statement_timeout,
        )
        async with running(store.run):
            snapshot = await store.execute_fn(functools.partial(read_snapshot, postgres_sql))
        yield redact(postgres.url), snapshot


def _ignore(step: Step) -> None:
    del step


async def migrate_memory(
    snapshot: MemorySnapshot,
    *,
    source_name: str,
    target: Backend,
    sql: MemorySQL,
    target_name: str,
    config: str,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _ignore,
) -> MemoryMigrationReport:
    """Copy ``snapshot`` into the running ``target`` and count both sides.

    Args:
        snapshot: the source's memory (:func:`open_source_memory`).
        target: a running store of ``sql``'s dialect.
        target_name, source_name: how the report names both.
        config: the caxton.yaml block the report hands on (:func:`config_block`).
        batch_size: entities or relations per write.
        progress: called on the event loop after each batch, and with ``done=0`` as each kind
            starts.

    Cancellation:
        Batches already written stay in the target; running again completes the copy.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started = time.monotonic()
    copied, skipped, problems = await copy_memory(
        snapshot, target, sql, batch_size=batch_size, progress=progress
    )
    after = await target.execute_fn(functools.partial(count_kinds, sql))
    before = {
        "entities": len(snapshot.entities),
        "relations": len(snapshot.relations),
        "observations": snapshot.observations,
    }
    return MemoryMigrationReport(
        source=source_name,
        target=target_name,
        counts=tuple(
            KindCount(
                kind=kind,
                source=before[kind],
                target=after[kind],
                copied=copied[kind],
                skipped=skipped[kind],
            )
            for kind in KINDS
        ),
        problems=tuple(problems),
        seconds=time.monotonic() - started,
        config_block=config,
    )


def check_vector_size(settings: QdrantConfig) -> None:
    """The collection must take the memory's embeddings as they are."""
    if settings.vector_size != EMBEDDING_DIM:
        raise MigrationRefused(
            f"memory.qdrant_config.vector_size is {settings.vector_size}, but the memory's "
            f"embeddings have {EMBEDDING_DIM} dimensions (all-MiniLM-L6-v2), and they are "
            f"copied as stored: set vector_size: {EMBEDDING_DIM}",
            details={"vector_size": settings.vector_size, "embedding_dim": EMBEDDING_DIM},
        )


async def migrate_to_qdrant(
    source: MigrationSource,
    settings: QdrantConfig,
    *,
    postgres: PostgresConfig | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress = _ignore,
) -> MemoryMigrationReport:
    """Copy a stopped server's memory into the Qdrant collection of ``settings``, then count
    both sides.

    Args:
        source: the server's data_dir and DuckDB file.
        settings: ``memory.qdrant_config`` with the target (``url`` or ``path``, collection).
        postgres: ``storage.postgres`` when ``storage.backend`` is postgres (the memory is
            read from there).
        batch_size: entities or relations per write.
        progress: see :func:`migrate_memory`.

    Returns:
        What was copied and the counts of both sides (:attr:`MemoryMigrationReport.verified`).

    Raises:
        MigrationRefused: data_dir is missing, a server runs on it, or the collection's vector
            size is not the memory's.
        StoreOpenError: the DuckDB file is missing or unreadable.
        PostgresStartError: the PostgreSQL source cannot be used.
        QdrantStartError: Qdrant cannot be used (unreachable, a collection of another size).

    Cancellation:
        Batches already written stay in Qdrant; running again completes the copy.

    Resource handling:
        The data_dir lock and every connection are released before returning, also on error or
        cancellation.
    """
    check_vector_size(settings)
    store = qdrant_store(settings)
    async with (
        open_source_memory(source, postgres) as (source_name, snapshot),
        running(store.run),
    ):
        return await migrate_memory(
            snapshot,
            source_name=source_name,
            target=store,
            sql=qdrant_memory,
            target_name=f"{store.where}, collection {store.collection}",
            config=config_block(settings),
            batch_size=batch_size,
            progress=progress,
        )
