"""``caxton storage verify [--comprehensive]``: is the stored data sound?

Checks, each reported as a :class:`Finding` (``error`` makes the report fail, ``warning`` does
not):

* **database** — the DuckDB file opens, every table can be read (``--comprehensive`` reads
  every column of every row, so DuckDB checks each block's checksum), every migration of this
  build is recorded;
* **relations** — no observation, relation, embedding or conversation row points at a missing
  entity or conversation (orphans);
* **embeddings** — every entity has exactly one embedding;
* **model** — the embedding model folder has its files, and ``model.onnx`` its recorded
  SHA-256;
* **hnsw** — the saved search index (``<db>.hnsw`` and ``<db>.hnsw.mirror``) matches its
  sidecar and, with ``--comprehensive``, the rows in DuckDB (a stale index is only a warning:
  it is read from the database and rebuilt at start);
* **qdrant** — with ``memory.backend: qdrant`` (issue #16): both collections exist, the
  entity one takes vectors of the configured size with cosine distance, and they hold one
  point per entity and per relation the memory reports.

The checks over a connection are plain functions, run by the server through a store read
(``GET /api/v1/admin/storage/verify``) or by the CLI on a read-only connection to the file of a
stopped server.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import attrs
import duckdb
import psycopg

from caxton.memory.model import (
    DEFAULT_MODEL_NAME,
    MANIFEST_FILE,
    ONNX_FILE,
    REQUIRED_FILES,
    sha256_file,
)
from caxton.memory.schema import TOTALS_FILL, TOTALS_FUNCTIONS, TOTALS_TRIGGERS
from caxton.store.store import read_table_query

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from caxton.config import CaxtonConfig
    from caxton.store import Connection, Migration
    from caxton.store.backend import Dialect
    from caxton.store.qdrant import QdrantConnection, QdrantStore

Severity = Literal["error", "warning", "info"]
#: Orphan checks: (what is wrong, SQL listing the orphans, what a row names, tables needed).
_ORPHANS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "observations without their entity",
        "SELECT DISTINCT o.entity FROM memory_observations o "
        "WHERE NOT EXISTS (SELECT 1 FROM memory_entities e WHERE e.name = o.entity)",
        "entity",
        ("memory_observations", "memory_entities"),
    ),
    (
        "relations whose entity is missing",
        "SELECT r.from_entity || ' -> ' || r.to_entity FROM memory_relations r "
        "WHERE NOT EXISTS (SELECT 1 FROM memory_entities e WHERE e.name = r.from_entity) "
        "OR NOT EXISTS (SELECT 1 FROM memory_entities e WHERE e.name = r.to_entity)",
        "relation",
        ("memory_relations", "memory_entities"),
    ),
    (
        "embeddings without their entity",
        "SELECT m.entity FROM memory_embeddings m "
        "WHERE NOT EXISTS (SELECT 1 FROM memory_entities e WHERE e.name = m.entity)",
        "embedding",
        ("memory_embeddings", "memory_entities"),
    ),
    (
        "entities without an embedding",
        "SELECT e.name FROM memory_entities e "
        "WHERE NOT EXISTS (SELECT 1 FROM memory_embeddings m WHERE m.entity = e.name)",
        "entity",
        ("memory_embeddings", "memory_entities"),
    ),
    (
        "conversation messages without their conversation",
        "SELECT DISTINCT m.conversation_id FROM conversation_messages m "
        "WHERE NOT EXISTS (SELECT 1 FROM conversations c "
        "WHERE c.conversation_id = m.conversation_id)",
        "conversation",
        ("conversation_messages", "conversations"),
    ),
)


@attrs.frozen(kw_only=True)
class Finding:
    """One result of a check."""

    check: str
    severity: Severity
    message: str

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity, "message": self.message}


@attrs.frozen(kw_only=True)
class VerifyReport:
    """Everything ``storage verify`` found."""

    source: str
    database: str
    comprehensive: bool
    tables: dict[str, int]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": self.source,
            "database": self.database,
            "comprehensive": self.comprehensive,
            "tables": dict(self.tables),
            "errors": sum(1 for f in self.findings if f.severity == "error"),
            "warnings": sum(1 for f in self.findings if f.severity == "warning"),
            "findings": [f.to_json() for f in self.findings],
        }


# --------------------------------------------------------------------------------- database


#: The tables of the database, per dialect.
_TABLES_SQL: dict[Dialect, str] = {
    "duckdb": "SELECT table_name FROM duckdb_tables() "
    "WHERE database_name = current_database() AND NOT temporary ORDER BY table_name",
    "postgres": "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
}
#: What a failed read raises, per dialect.
_DATABASE_ERRORS = (duckdb.Error, psycopg.Error)


def _table_names(conn: Any, dialect: Dialect) -> list[str]:
    return [str(row[0]) for row in conn.execute(_TABLES_SQL[dialect]).fetchall()]


def _read_table(conn: Any, name: str, *, comprehensive: bool, dialect: Dialect) -> int:
    if dialect == "duckdb":
        row = conn.execute(read_table_query(name, comprehensive=comprehensive)).fetchone()
    else:
        quoted = '"' + name.replace('"', '""') + '"'
        # comprehensive: every row is read and detoasted (a damaged page or TOAST chunk fails)
        query = (
            f"SELECT count(*), sum(length(t::text)) FROM {quoted} AS t"
            if comprehensive
            else f"SELECT count(*) FROM {quoted}"
        )
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def check_database(
    conn: Any,
    *,
    comprehensive: bool,
    migrations: Sequence[Migration],
    dialect: Dialect = "duckdb",
) -> tuple[dict[str, int], list[Finding]]:
    """Read every table, compare the recorded migrations, look for orphans.

    Args:
        conn: a DuckDB connection, or a psycopg one with ``dialect="postgres"``.

    Returns:
        (rows per table, findings).
    """
    findings: list[Finding] = []
    tables: dict[str, int] = {}
    try:
        names = _table_names(conn, dialect)
    except _DATABASE_ERRORS as exc:
        return {}, [
            Finding(check="database", severity="error", message=f"catalog unreadable: {exc}")
        ]
    for name in names:
        try:
            tables[name] = _read_table(conn, name, comprehensive=comprehensive, dialect=dialect)
        except _DATABASE_ERRORS as exc:
            findings.append(
                Finding(
                    check="database", severity="error", message=f"table {name} unreadable: {exc}"
                )
            )
            if dialect == "postgres":
                break  # the transaction is aborted: nothing more can be read in it
    findings.extend(_check_migrations(conn, names, migrations))
    for check, sql, what, needed in _ORPHANS:
        if not set(needed) <= set(names):
            continue
        try:
            rows = conn.execute(sql).fetchall()
        except _DATABASE_ERRORS as exc:
            findings.append(Finding(check="relations", severity="error", message=f"{check}: {exc}"))
            continue
        if rows:
            sample = ", ".join(str(r[0]) for r in rows[:5])
            findings.append(
                Finding(
                    check="relations",
                    severity="error",
                    message=f"{len(rows)} {check} ({what}s: {sample}"
                    f"{', …' if len(rows) > 5 else ''})",
                )
            )
    if "memory_totals" in names:
        findings.extend(_check_totals(conn))
    if "memory_entities" in tables and "memory_embeddings" in tables:
        entities, embeddings = tables["memory_entities"], tables["memory_embeddings"]
        severity: Severity = "info" if entities == embeddings else "error"
        findings.append(
            Finding(
                check="embeddings",
                severity=severity,
                message=f"{embeddings} embeddings for {entities} entities",
            )
        )
    return tables, findings


#: Puts ``memory_totals`` right (PostgreSQL), as the message of a wrong one says.
TOTALS_FIX = f"DELETE FROM memory_totals; {TOTALS_FILL};"


def _check_totals(conn: Any) -> list[Finding]:
    """The totals PostgreSQL keeps in ``memory_totals`` (what every memory write checks
    ``memory.max_entities`` against) against a count of the tables, in one statement (one
    snapshot, so instances writing meanwhile cannot make them differ); and its triggers, each
    there and enabled (else the next write puts the totals wrong again)."""
    try:
        triggers = _totals_trigger_findings(conn)
        row = conn.execute(
            "SELECT (SELECT count(*) FROM memory_totals), "
            "(SELECT max(entities) FROM memory_totals), "
            "(SELECT max(relations) FROM memory_totals), "
            "(SELECT count(*) FROM memory_entities), (SELECT count(*) FROM memory_relations)"
        ).fetchone()
    except _DATABASE_ERRORS as exc:
        return [Finding(check="totals", severity="error", message=f"memory_totals: {exc}")]
    rows, entities, relations, counted_entities, counted_relations = row
    if rows == 1 and (entities, relations) == (counted_entities, counted_relations):
        return [
            *triggers,
            Finding(
                check="totals",
                severity="info",
                message=f"memory_totals: {entities} entities, {relations} relations, as counted",
            ),
        ]
    held = (
        f"it holds {entities} entities and {relations} relations"
        if rows == 1
        else f"it has {rows} rows instead of one"
    )
    return [
        *triggers,
        Finding(
            check="totals",
            severity="error",
            message=f"memory_totals is wrong: {held}, the tables {counted_entities} and "
            f"{counted_relations}. With its triggers in place and every Caxton stopped, in "
            f"psql: BEGIN; {TOTALS_FIX} COMMIT;",
        ),
    ]


def _totals_trigger_findings(conn: Any) -> list[Finding]:
    """An error for each function or trigger of ``memory_totals`` that is missing, and for
    each trigger that is disabled, with the statement that puts it back."""
    functions = {
        str(name)
        for (name,) in conn.execute(
            # resolved as CREATE TRIGGER resolves them: through the search path
            "SELECT name FROM unnest(%s::text[]) AS name "
            "WHERE to_regprocedure(name || '()') IS NOT NULL",
            [sorted(name for name, _ in TOTALS_FUNCTIONS.values())],
        ).fetchall()
    }
    rows = conn.execute(
        "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND c.relname = ANY(%s)",
        [sorted({table for table, _ in TOTALS_TRIGGERS})],
    ).fetchall()
    enabled = {(str(table), str(name)): str(state) != "D" for table, name, state in rows}
    findings = []
    for table, (function, statement) in TOTALS_FUNCTIONS.items():
        if function not in functions:
            findings.append(
                Finding(
                    check="totals",
                    severity="error",
                    message=f"function {function} is missing: {table}'s triggers cannot keep "
                    f"memory_totals. Create it first, in psql: {_one_line(statement)};",
                )
            )
    for (table, name), statement in TOTALS_TRIGGERS.items():
        if (table, name) not in enabled:
            problem = (
                f"trigger {name} on {table} is missing: memory_totals no longer follows that "
                f"table. In psql: {statement};"
            )
        elif not enabled[(table, name)]:
            problem = (
                f"trigger {name} on {table} is disabled: memory_totals no longer follows that "
                f"table. In psql: ALTER TABLE {table} ENABLE TRIGGER {name};"
            )
        else:
            continue
        findings.append(Finding(check="totals", severity="error", message=problem))
    return findings


def _one_line(statement: str) -> str:
    """``statement`` with its runs of whitespace made single spaces (a finding is one line;
    PL/pgSQL reads the function's body the same)."""
    return " ".join(statement.split())


def _check_migrations(
    conn: Any, names: Sequence[str], migrations: Sequence[Migration]
) -> list[Finding]:
    if "schema_migrations" not in names:
        return [
            Finding(
                check="database",
                severity="error",
                message="no schema_migrations table: this is not a Caxton database",
            )
        ]
    applied: dict[str, int] = {}
    for feature, version in conn.execute(
        "SELECT feature, version FROM schema_migrations"
    ).fetchall():
        applied[str(feature)] = max(int(version), applied.get(str(feature), 0))
    findings = [
        Finding(
            check="database",
            severity="error",
            message=f"migration {m.feature} v{m.version} ({m.description}) is not applied",
        )
        for m in migrations
        if applied.get(m.feature, 0) < m.version
    ]
    known: dict[str, int] = {}
    for m in migrations:
        known[m.feature] = max(m.version, known.get(m.feature, 0))
    findings.extend(
        Finding(
            check="database",
            severity="warning",
            message=f"{feature} is at v{version}, newer than this build knows (v{known[feature]})",
        )
        for feature, version in sorted(applied.items())
        if feature in known and version > known[feature]
    )
    return findings


def embeddings_token(conn: Connection) -> str | None:
    """The content token of what DuckDB holds (hashes every embedding in the database)."""
    from caxton.memory import queries

    return queries.content_token(conn)


# --------------------------------------------------------------------------------- qdrant


def check_qdrant(
    conn: QdrantConnection,
    *,
    vector_size: int,
    entity_count: int,
    relation_count: int,
    where: str,
) -> list[Finding]:
    """Check memory's Qdrant collections (blocking: ``QdrantClient`` calls).

    Args:
        conn: the memory store's connection (the client and both collection names).
        vector_size: ``memory.qdrant_config.vector_size``.
        entity_count, relation_count: what the memory reports; the entity collection holds a
            point per entity, the relation collection one per relation.
        where: the URL or folder, for messages.

    Returns:
        Findings: an error when a collection is missing or unreadable, when the entity
        collection takes vectors of another size or distance, or when a collection holds
        another number of points than the memory reports.
    """
    from qdrant_client.http import models

    client = conn.client
    try:
        absent = [c for c in (conn.entities, conn.relations) if not client.collection_exists(c)]
        if absent:
            return [
                Finding(
                    check="qdrant",
                    severity="error",
                    message=f"{where} has no collection {name!r} (a server on memory.backend: "
                    "qdrant creates it at start; caxton memory migrate --to qdrant fills it)",
                )
                for name in absent
            ]
        vectors = client.get_collection(conn.entities).config.params.vectors
        points = int(client.count(conn.entities, exact=True).count)
        relation_points = int(client.count(conn.relations, exact=True).count)
    except Exception as exc:  # qdrant-client raises transport and API errors of its own
        return [Finding(check="qdrant", severity="error", message=f"{where} cannot be read: {exc}")]
    findings: list[Finding] = []
    if not isinstance(vectors, models.VectorParams):
        findings.append(
            Finding(
                check="qdrant",
                severity="error",
                message=f"collection {conn.entities!r} has named vectors; Caxton writes one "
                "unnamed vector per point",
            )
        )
    else:
        if vectors.size != vector_size:
            findings.append(
                Finding(
                    check="qdrant",
                    severity="error",
                    message=f"collection {conn.entities!r} takes vectors of size "
                    f"{vectors.size}, memory.qdrant_config.vector_size is {vector_size}",
                )
            )
        if vectors.distance != models.Distance.COSINE:
            findings.append(
                Finding(
                    check="qdrant",
                    severity="error",
                    message=f"collection {conn.entities!r} measures {vectors.distance.value} "
                    "distance; memory search ranks by cosine similarity",
                )
            )
    size = vectors.size if isinstance(vectors, models.VectorParams) else "-"
    for name, held, reported, what in (
        (conn.entities, points, entity_count, "entities"),
        (conn.relations, relation_points, relation_count, "relations"),
    ):
        severity: Severity = "info" if held == reported else "error"
        extra = f", vector size {size}" if what == "entities" else ""
        findings.append(
            Finding(
                check="qdrant",
                severity=severity,
                message=f"collection {name!r} at {where}: {held} points for {reported} "
                f"{what}{extra}",
            )
        )
    return findings


async def verify_qdrant(
    store: QdrantStore, *, entity_count: int, relation_count: int
) -> list[Finding]:
    """:func:`check_qdrant` on a running memory store, in its worker thread.

    A store that cannot answer (:class:`~caxton.errors.CaxtonError`, e.g. 503
    ``MEMORY_UNAVAILABLE``) is an error finding, not raised.
    """
    from caxton.errors import CaxtonError

    def check(conn: QdrantConnection) -> list[Finding]:
        return check_qdrant(
            conn,
            vector_size=store.vector_size,
            entity_count=entity_count,
            relation_count=relation_count,
            where=store.where,
        )

    try:
        return await store.execute_fn(check)
    except CaxtonError as exc:
        return [Finding(check="qdrant", severity="error", message=exc.message)]


def verify_qdrant_offline(config: CaxtonConfig) -> list[Finding]:
    """:func:`check_qdrant` for a stopped server on ``memory.backend: qdrant`` (blocking).

    Connects with a client of its own (creating nothing: a local-mode folder that does not
    exist is reported, not made) and counts through :mod:`caxton.memory.qdrant_memory`, which
    reads every point's payload.
    """
    import math

    from qdrant_client import QdrantClient

    from caxton.memory import qdrant_memory
    from caxton.store.qdrant import RELATIONS_SUFFIX, QdrantConnection, redact

    settings = config.memory.qdrant_config
    path = None if settings.path is None else config.resolve_path(settings.path)
    where = redact(settings.url) if path is None else f"(local mode) {path}"
    if path is not None and not path.is_dir():
        return [
            Finding(
                check="qdrant",
                severity="error",
                message=f"{path} does not exist (memory.qdrant_config.path: a server on "
                "memory.backend: qdrant makes it at start)",
            )
        ]
    try:
        client = (
            QdrantClient(
                url=settings.url,
                api_key=settings.api_key,
                timeout=max(1, math.ceil(settings.timeout)),
                check_compatibility=False,
            )
            if path is None
            else QdrantClient(path=str(path))
        )
    except (
        Exception
    ) as exc:  # qdrant-client raises transport errors, and RuntimeError on a held folder
        return [
            Finding(check="qdrant", severity="error", message=f"{where} cannot be opened: {exc}")
        ]
    try:
        conn = QdrantConnection(
            client=client,
            entities=settings.collection,
            relations=settings.collection + RELATIONS_SUFFIX,
            local=path is not None,
        )
        try:
            figures = qdrant_memory.counts(conn)
        except Exception as exc:  # a missing collection (check_qdrant names it), or bad points
            absent = [c for c in (conn.entities, conn.relations) if not client.collection_exists(c)]
            if absent:
                return check_qdrant(
                    conn,
                    vector_size=settings.vector_size,
                    entity_count=0,
                    relation_count=0,
                    where=where,
                )
            return [
                Finding(
                    check="qdrant",
                    severity="error",
                    message=f"the points of {settings.collection!r} at {where} cannot be read: "
                    f"{exc}",
                )
            ]
        return check_qdrant(
            conn,
            vector_size=settings.vector_size,
            entity_count=int(figures["entities"]),
            relation_count=int(figures["relations"]),
            where=where,
        )
    finally:
        client.close()


def with_findings(report: VerifyReport, findings: Sequence[Finding]) -> VerifyReport:
    """``report`` with ``findings`` added at the end."""
    return attrs.evolve(report, findings=(*report.findings, *findings))


# --------------------------------------------------------------------------------- files


def check_hnsw(database_path: Path, embeddings: int | None, content: str | None) -> list[Finding]:
    """Compare the saved search index with the database (warnings only: it is rebuildable).

    ``content``: the database's content token (``--comprehensive``), checked when given.
    """
    from caxton.memory import saved_index

    path = database_path.with_name(database_path.name + ".hnsw")
    side = saved_index.sidecar_path(path)
    if not any(p.exists() for p in (path, side, saved_index.mirror_path(path))):
        return [Finding(check="hnsw", severity="info", message="no saved HNSW index")]
    rebuilt = "; it is read from the database and rebuilt at the next start"
    try:
        described = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [Finding(check="hnsw", severity="warning", message=f"{side}: {exc}{rebuilt}")]
    if not isinstance(described, dict):
        return [Finding(check="hnsw", severity="warning", message=f"{side}: not a JSON object")]
    reason = saved_index.problem(path, described, dim=None, content=content)
    rows = described.get("rows")
    if reason is None and embeddings is not None and rows != embeddings:
        reason = f"it holds {rows} vectors, the database {embeddings}"
    if reason is not None:
        return [Finding(check="hnsw", severity="warning", message=f"{path}: {reason}{rebuilt}")]
    checked = "vectors match the database" if content else f"{rows} vectors, files intact"
    return [Finding(check="hnsw", severity="info", message=f"{path}: {checked}")]


def model_folder(config: CaxtonConfig) -> tuple[Path, bool]:
    """(the model folder the server loads, whether it is the packaged default)."""
    model = config.memory.embedding_model
    if model == DEFAULT_MODEL_NAME:
        return config.data_dir / "models", True
    return config.resolve_path(model), False


def check_model(config: CaxtonConfig) -> list[Finding]:
    """Check the embedding model folder's files and (for the packaged model) their SHA-256."""
    folder, packaged = model_folder(config)
    if not folder.is_dir():
        if packaged:
            return [
                Finding(
                    check="model",
                    severity="info",
                    message=f"{folder} is not assembled yet (done at the next start)",
                )
            ]
        return [Finding(check="model", severity="error", message=f"{folder} does not exist")]
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        return [
            Finding(
                check="model",
                severity="error",
                message=f"{folder} lacks {', '.join(missing)}",
            )
        ]
    actual = sha256_file(folder / ONNX_FILE)
    if not packaged:
        return [
            Finding(check="model", severity="info", message=f"{folder}: model.onnx sha256 {actual}")
        ]
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        expected = manifest["onnx_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [
            Finding(
                check="model",
                severity="error",
                message=f"{folder / MANIFEST_FILE} is unreadable ({exc}); delete {folder} and "
                "restart to rebuild it",
            )
        ]
    if actual != expected:
        return [
            Finding(
                check="model",
                severity="error",
                message=f"{folder / ONNX_FILE} has SHA-256 {actual}, expected {expected} (the "
                f"file is damaged; delete {folder} and restart to rebuild it)",
            )
        ]
    return [Finding(check="model", severity="info", message=f"{folder}: model.onnx checksum ok")]


# --------------------------------------------------------------------------------- runners


def open_read_only(path: Path) -> Connection:
    """A read-only DuckDB connection to ``path`` (raises duckdb errors as they are)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return duckdb.connect(str(path), read_only=True)


def inspect_connection(
    conn: Connection,
    config: CaxtonConfig,
    *,
    comprehensive: bool,
    migrations: Sequence[Migration],
    source: str,
) -> VerifyReport:
    """Every check over an open connection (the server's reader, or a read-only file)."""
    tables, findings = check_database(conn, comprehensive=comprehensive, migrations=migrations)
    content = None
    if comprehensive and "memory_embeddings" in tables:
        try:
            content = embeddings_token(conn)
        except duckdb.Error as exc:
            findings.append(
                Finding(check="embeddings", severity="error", message=f"unreadable: {exc}")
            )
    findings.extend(check_hnsw(config.database_path, tables.get("memory_embeddings"), content))
    findings.extend(check_model(config))
    return VerifyReport(
        source=source,
        database=str(config.database_path),
        comprehensive=comprehensive,
        tables=tables,
        findings=tuple(findings),
    )


def inspect_postgres(
    conn: Any, *, comprehensive: bool, migrations: Sequence[Migration], database: str
) -> VerifyReport:
    """The database checks over a PostgreSQL connection (``storage.backend: postgres``):
    every table read, migrations, orphans, one embedding per entity. There is no HNSW file
    (pgvector keeps its index in the database) and the model is checked by each instance."""
    tables, findings = check_database(
        conn, comprehensive=comprehensive, migrations=migrations, dialect="postgres"
    )
    return VerifyReport(
        source="server",
        database=database,
        comprehensive=comprehensive,
        tables=tables,
        findings=tuple(findings),
    )


def verify_files(
    config: CaxtonConfig, *, comprehensive: bool, migrations: Sequence[Migration]
) -> VerifyReport:
    """Verify the files of a stopped server (blocking; the database is opened read-only).

    A file DuckDB cannot open is reported as an error finding, not raised.
    """
    path = config.database_path
    try:
        conn = open_read_only(path)
    except (duckdb.Error, OSError) as exc:
        findings = [
            Finding(check="database", severity="error", message=f"{path} cannot be opened: {exc}"),
            *check_model(config),
        ]
        return VerifyReport(
            source="files",
            database=str(path),
            comprehensive=comprehensive,
            tables={},
            findings=tuple(findings),
        )
    try:
        return inspect_connection(
            conn, config, comprehensive=comprehensive, migrations=migrations, source="files"
        )
    finally:
        conn.close()
