"""The memory tables, as store migrations (handed to :class:`caxton.store.Store`).

* ``memory_entities`` — one row per entity; ``metadata`` is JSON text; times are UTC.
* ``memory_observations`` — the entity's observations in order (``position`` from 0), indexed
  by entity (v2) so fetching a search's hits by name does not scan the table.
* ``memory_relations`` — directed, unique per (from, to, relation_type).
* ``memory_embeddings`` — the ``FLOAT[384]`` embedding of ``"{name} {entity_type}
  {observations}"``; the exact search path reads it with ``array_cosine_similarity``. It
  repeats the entity's type, scope and agent so a filtered search scans one table (a join
  with ``memory_entities`` made the 100k scan five times slower).

:data:`MEMORY_POSTGRES_MIGRATIONS` are the same tables for PostgreSQL (issue #15), handed to
:class:`caxton.store.postgres.PostgresStore`: ``TEXT`` for ``VARCHAR``, ``timestamptz`` for the
times, ``DOUBLE PRECISION`` for the floats, and the embedding as pgvector ``vector(384)`` under
an HNSW index (``vector_cosine_ops``), which :mod:`caxton.memory.postgres_sql` searches.
"""

from __future__ import annotations

from caxton.memory.model import EMBEDDING_DIM
from caxton.store import Migration

MEMORY_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        feature="memory",
        version=1,
        description="entities, observations, relations and embeddings",
        statements=(
            """
            CREATE TABLE memory_entities (
                name VARCHAR PRIMARY KEY,
                entity_type VARCHAR NOT NULL,
                scope VARCHAR NOT NULL,
                agent VARCHAR,
                metadata VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )
            """,
            """
            CREATE TABLE memory_observations (
                entity VARCHAR NOT NULL,
                position INTEGER NOT NULL,
                content VARCHAR NOT NULL,
                PRIMARY KEY (entity, position)
            )
            """,
            """
            CREATE TABLE memory_relations (
                from_entity VARCHAR NOT NULL,
                to_entity VARCHAR NOT NULL,
                relation_type VARCHAR NOT NULL,
                strength DOUBLE NOT NULL,
                confidence DOUBLE NOT NULL,
                created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (from_entity, to_entity, relation_type)
            )
            """,
            "CREATE INDEX memory_relations_to ON memory_relations (to_entity)",
            f"""
            CREATE TABLE memory_embeddings (
                entity VARCHAR PRIMARY KEY,
                entity_type VARCHAR NOT NULL,
                scope VARCHAR NOT NULL,
                agent VARCHAR,
                embedding FLOAT[{EMBEDDING_DIM}] NOT NULL
            )
            """,
        ),
    ),
    Migration(
        feature="memory",
        version=2,
        description="index observations by entity (search fetches its hits by name)",
        statements=("CREATE INDEX memory_observations_entity ON memory_observations (entity)",),
    ),
)


#: The tables whose rows ``memory_totals`` counts, with its column for each (PostgreSQL).
TOTALS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("memory_entities", "entities"),
    ("memory_relations", "relations"),
)

#: Fills ``memory_totals`` from a count of the tables (the migration; ``storage verify``'s fix).
TOTALS_FILL = (
    "INSERT INTO memory_totals (entities, relations) SELECT "
    "(SELECT count(*) FROM memory_entities), (SELECT count(*) FROM memory_relations)"
)


def _counting_function(table: str) -> str:
    """The name of the function that counts ``table``'s rows into ``memory_totals``."""
    return f"{table}_counted"


def _trigger_statements(table: str) -> dict[str, str]:
    """The ``CREATE TRIGGER`` statements that keep ``memory_totals`` following ``table``, by
    trigger name (each runs the function :func:`_totals_function` creates for the table)."""
    function = _counting_function(table)
    return {
        f"{table}_added": f"CREATE TRIGGER {table}_added AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"{table}_removed": f"CREATE TRIGGER {table}_removed AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"{table}_truncated": f"CREATE TRIGGER {table}_truncated AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    }


#: The triggers that keep ``memory_totals``: (table, trigger name) -> the statement that
#: creates it (memory migration v2; ``storage verify`` prints it when the trigger is missing).
TOTALS_TRIGGERS: dict[tuple[str, str], str] = {
    (table, name): statement
    for table, _ in TOTALS_COLUMNS
    for name, statement in _trigger_statements(table).items()
}


def _totals_function(table: str, column: str) -> str:
    """The function that keeps ``memory_totals.{column}`` equal to the number of rows of
    ``table``: run once per statement that inserts, deletes or truncates (a statement that
    changes no row leaves the totals row alone)."""
    return f"""
        CREATE FUNCTION {_counting_function(table)}() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            changed BIGINT;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                SELECT count(*) INTO changed FROM added;
            ELSIF TG_OP = 'DELETE' THEN
                SELECT -count(*) INTO changed FROM removed;
            ELSE
                UPDATE memory_totals SET {column} = 0;
                RETURN NULL;
            END IF;
            IF changed <> 0 THEN
                UPDATE memory_totals SET {column} = {column} + changed;
            END IF;
            RETURN NULL;
        END
        $$
        """


#: The functions the triggers run: table -> (function name, the statement that creates it).
TOTALS_FUNCTIONS: dict[str, tuple[str, str]] = {
    table: (_counting_function(table), _totals_function(table, column))
    for table, column in TOTALS_COLUMNS
}


def _totals_triggers(table: str, column: str) -> tuple[str, ...]:
    """The function and triggers that keep ``memory_totals.{column}`` following ``table``."""
    return (_totals_function(table, column), *_trigger_statements(table).values())


MEMORY_POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        feature="memory",
        version=1,
        description="entities, observations, relations and embeddings (pgvector, HNSW)",
        statements=(
            """
            CREATE TABLE memory_entities (
                name TEXT PRIMARY KEY,
                entity_type TEXT NOT NULL,
                scope TEXT NOT NULL,
                agent TEXT,
                metadata TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL
            )
            """,
            # the primary key's index (entity first) serves fetching observations by entity
            """
            CREATE TABLE memory_observations (
                entity TEXT NOT NULL,
                position INTEGER NOT NULL,
                content TEXT NOT NULL,
                PRIMARY KEY (entity, position)
            )
            """,
            """
            CREATE TABLE memory_relations (
                from_entity TEXT NOT NULL,
                to_entity TEXT NOT NULL,
                relation_type TEXT NOT NULL,
                strength DOUBLE PRECISION NOT NULL,
                confidence DOUBLE PRECISION NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (from_entity, to_entity, relation_type)
            )
            """,
            "CREATE INDEX memory_relations_to ON memory_relations (to_entity)",
            f"""
            CREATE TABLE memory_embeddings (
                entity TEXT PRIMARY KEY,
                entity_type TEXT NOT NULL,
                scope TEXT NOT NULL,
                agent TEXT,
                embedding vector({EMBEDDING_DIM}) NOT NULL
            )
            """,
            "CREATE INDEX memory_embeddings_hnsw ON memory_embeddings "
            "USING hnsw (embedding vector_cosine_ops)",
        ),
    ),
    Migration(
        feature="memory",
        version=2,
        description="entity and relation totals kept by triggers (a count scanned the tables)",
        statements=(
            # No insert or delete may come between the count and the triggers; the lock is
            # the one CREATE TRIGGER takes anyway, held to the end of the migration.
            "LOCK TABLE memory_entities, memory_relations IN SHARE ROW EXCLUSIVE MODE",
            """
            CREATE TABLE memory_totals (
                only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
                entities BIGINT NOT NULL,
                relations BIGINT NOT NULL
            )
            """,
            TOTALS_FILL,
            *(
                statement
                for table, column in TOTALS_COLUMNS
                for statement in _totals_triggers(table, column)
            ),
        ),
    ),
)
