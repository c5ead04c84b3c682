"""Export and import file formats (pure): JSON documents and JSONL streams.

JSON: ``{"entities": [...], "relations": [...], "metadata": {"version", "exported_at",
"entity_count", "relation_count"}}``.

JSONL: the first line is ``{"kind": "metadata", ...}`` with the same metadata, then one
``{"kind": "entity", ...}`` or ``{"kind": "relation", ...}`` object per line. The counts in the
metadata let an import tell a complete file from a truncated one.

Parsing checks everything before anything is written: a wrong version, a truncated file, a bad
record (with its position) or a relation to an entity that is neither in the file nor stored
is a :class:`~caxton.errors.ValidationFailed`.

Formatting, parsing and the import plan (:func:`plan_import`) are pure. The two reads a transfer
makes, :meth:`Snapshot.read` and :func:`read_import_state`, are ``fn(conn)`` calls for a store
read (:meth:`caxton.store.Store.execute_fn`) or a read-only connection to a stopped server's
file; :class:`caxton.memory.MemoryService` runs them and writes the plan.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any, Literal

import attrs

from caxton.errors import CaxtonError, ValidationFailed
from caxton.memory import queries, validation
from caxton.memory.plan import EntityPlan, RelationPlan, plan_entities, plan_relations
from caxton.memory.types import (
    Entity,
    ImportReport,
    MergeStrategy,
    NewEntity,
    NewRelation,
    Relation,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from caxton.errors import JSONValue
    from caxton.memory.sql import MemorySQL
    from caxton.store import Connection

#: The export format version this build writes and reads.
EXPORT_VERSION = "1.0"
SUPPORTED_VERSIONS = frozenset({EXPORT_VERSION})

ImportFormat = Literal["json", "jsonl"]


@attrs.frozen(kw_only=True)
class ImportData:
    """A parsed, validated import file."""

    entities: tuple[NewEntity, ...]
    relations: tuple[NewRelation, ...]


def export_metadata(
    *, entity_count: int, relation_count: int, exported_at: dt.datetime
) -> dict[str, JSONValue]:
    """The ``metadata`` object of both formats."""
    return {
        "version": EXPORT_VERSION,
        "exported_at": exported_at.isoformat(),
        "entity_count": entity_count,
        "relation_count": relation_count,
    }


@attrs.frozen(kw_only=True)
class Snapshot:
    """Every entity and relation from one consistent read, ready to be written out.

    The formatters are pure generators, so the HTTP layer can stream them and the CLI can
    write them from a database file read while the server is stopped.
    """

    entities: tuple[Entity, ...]
    relations: tuple[Relation, ...]
    exported_at: dt.datetime

    @classmethod
    def read(cls, conn: Connection, sql: MemorySQL = queries) -> Snapshot:
        """Every entity and relation ``conn`` sees (through ``sql``, the memory SQL of its
        dialect), stamped with the time of the read."""
        entities, relations = sql.snapshot(conn)
        return cls(
            entities=tuple(entities),
            relations=tuple(relations),
            exported_at=dt.datetime.now(dt.UTC),
        )

    def metadata(self) -> dict[str, JSONValue]:
        """The ``metadata`` object both formats carry."""
        return export_metadata(
            entity_count=len(self.entities),
            relation_count=len(self.relations),
            exported_at=self.exported_at,
        )

    def document(self) -> dict[str, JSONValue]:
        """The whole JSON export document, in memory."""
        return {
            "entities": [e.to_json() for e in self.entities],
            "relations": [r.to_json() for r in self.relations],
            "metadata": self.metadata(),
        }

    def jsonl_lines(self) -> Iterator[str]:
        """The JSONL export, one line (ending in a newline) at a time; metadata first."""
        yield json.dumps({"kind": "metadata", **self.metadata()}, ensure_ascii=False) + "\n"
        for entity in self.entities:
            yield json.dumps({"kind": "entity", **entity.to_json()}, ensure_ascii=False) + "\n"
        for relation in self.relations:
            yield json.dumps({"kind": "relation", **relation.to_json()}, ensure_ascii=False) + "\n"

    def json_chunks(self) -> Iterator[str]:
        """The JSON export document in pieces (one per record); joined they parse to
        :meth:`document`."""
        yield '{"entities": ['
        for position, entity in enumerate(self.entities):
            yield _item(position, entity.to_json())
        yield '\n], "relations": ['
        for position, relation in enumerate(self.relations):
            yield _item(position, relation.to_json())
        yield '\n], "metadata": ' + json.dumps(self.metadata(), ensure_ascii=False) + "}\n"


def _item(position: int, record: dict[str, JSONValue]) -> str:
    return ("," if position else "") + "\n" + json.dumps(record, ensure_ascii=False)


def _fail(where: str, problem: str) -> ValidationFailed:
    return ValidationFailed(f"{where}: {problem}", details={"location": where})


def _check_metadata(meta: object, where: str) -> tuple[int, int]:
    if not isinstance(meta, dict):
        raise _fail(where, "the metadata object is missing; is this a Caxton memory export?")
    version = meta.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise _fail(
            where,
            f"unsupported export version {version!r}; this Caxton reads version "
            f"{EXPORT_VERSION!r}. Export the data again with this version",
        )
    counts = []
    for key in ("entity_count", "relation_count"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(where, f"metadata.{key} must be a non-negative integer, got {value!r}")
        counts.append(value)
    return counts[0], counts[1]


def _time(value: object, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(where, f"must be an ISO 8601 time, got {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise _fail(where, f"must be an ISO 8601 time, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_entity(record: object, where: str) -> NewEntity:
    """Turn one JSON entity object into a :class:`NewEntity`, naming ``where`` on errors."""
    if not isinstance(record, dict):
        raise _fail(where, f"an entity must be an object, got {type(record).__name__}")
    observations = record.get("observations", [])
    if not isinstance(observations, list):
        raise _fail(f"{where}.observations", "must be a list of strings")
    try:
        return NewEntity(
            name=validation.text(record.get("name"), "name"),
            entity_type=validation.text(record.get("entity_type"), "entity_type"),
            observations=[
                validation.text(o, f"observations[{i}]") for i, o in enumerate(observations)
            ],
            scope=_scope(record.get("scope", "global")),
            agent=None if record.get("agent") is None else str(record.get("agent")),
            metadata=record.get("metadata") or {},
            created_at=_time(record.get("created_at"), f"{where}.created_at"),
            updated_at=_time(record.get("updated_at"), f"{where}.updated_at"),
        )
    except CaxtonError as exc:
        raise _fail(where, exc.message) from exc
    except (TypeError, ValueError) as exc:
        raise _fail(where, str(exc)) from exc


def _scope(value: object) -> str:
    if value not in ("agent", "workspace", "global"):
        raise ValueError(f"scope must be agent, workspace or global, got {value!r}")
    return str(value)


def parse_relation(record: object, where: str) -> NewRelation:
    """Turn one JSON relation object (``from``, ``to``, ...) into a :class:`NewRelation`."""
    if not isinstance(record, dict):
        raise _fail(where, f"a relation must be an object, got {type(record).__name__}")
    try:
        return NewRelation(
            source=validation.text(record.get("from"), "from"),
            target=validation.text(record.get("to"), "to"),
            relation_type=validation.text(record.get("relation_type"), "relation_type"),
            strength=record.get("strength", 1.0),
            confidence=record.get("confidence", 1.0),
            created_at=_time(record.get("created_at"), f"{where}.created_at"),
        )
    except CaxtonError as exc:
        raise _fail(where, exc.message) from exc


def parse_document(document: object) -> ImportData:
    """Validate a JSON export document.

    Raises:
        ValidationFailed: naming the first problem and where it is.
    """
    if not isinstance(document, dict):
        raise _fail("document", "an import must be a JSON object with entities and relations")
    entity_count, relation_count = _check_metadata(document.get("metadata"), "metadata")
    records = document.get("entities", [])
    links = document.get("relations", [])
    if not isinstance(records, list) or not isinstance(links, list):
        raise _fail("document", "entities and relations must be lists")
    _check_counts(len(records), entity_count, len(links), relation_count)
    return ImportData(
        entities=tuple(parse_entity(r, f"entities[{i}]") for i, r in enumerate(records)),
        relations=tuple(parse_relation(r, f"relations[{i}]") for i, r in enumerate(links)),
    )


def _check_counts(entities: int, expected_entities: int, relations: int, expected: int) -> None:
    if entities != expected_entities or relations != expected:
        raise _fail(
            "document",
            f"the file is truncated or edited: its metadata announces {expected_entities} "
            f"entities and {expected} relations, but it holds {entities} and {relations}",
        )


def parse_jsonl(lines: Iterable[str]) -> ImportData:
    """Validate a JSONL export, line by line.

    Raises:
        ValidationFailed: naming the line and the problem (a cut-off last line, a missing
            metadata line, counts that do not match the metadata).
    """
    entities: list[NewEntity] = []
    relations: list[NewRelation] = []
    counts: tuple[int, int] | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record: Any = json.loads(line)
        except ValueError as exc:
            raise _fail(where, f"is not JSON ({exc}); the file may be truncated") from exc
        kind = record.get("kind") if isinstance(record, dict) else None
        if counts is None:
            if kind != "metadata":
                raise _fail(where, 'the first line must be {"kind": "metadata", ...}')
            counts = _check_metadata(record, where)
        elif kind == "entity":
            entities.append(parse_entity(record, where))
        elif kind == "relation":
            relations.append(parse_relation(record, where))
        else:
            raise _fail(where, f'"kind" must be "entity" or "relation", got {kind!r}')
    if counts is None:
        raise _fail("line 1", "the file is empty; expected a metadata line")
    _check_counts(len(entities), counts[0], len(relations), counts[1])
    return ImportData(entities=tuple(entities), relations=tuple(relations))


def parse_bytes(data: bytes, *, format: ImportFormat | None = None) -> ImportData:
    """Decode and validate an export file; ``format=None`` tells JSON from JSONL by content.

    Raises:
        ValidationFailed: the bytes are not UTF-8, not JSON/JSONL, or fail the checks above.
    """
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail("file", f"is not UTF-8 text (byte {exc.start})") from exc
    if format is None:
        first = content.lstrip().split("\n", 1)[0]
        try:
            head = json.loads(first)
        except ValueError:
            head = None
        format = "jsonl" if isinstance(head, dict) and "kind" in head else "json"
    if format == "jsonl":
        return parse_jsonl(content.splitlines())
    try:
        document = json.loads(content)
    except ValueError as exc:
        raise _fail("file", f"is not valid JSON ({exc}); the file may be truncated") from exc
    return parse_document(document)


def check_relation_ends(data: ImportData, stored: set[str]) -> None:
    """Every relation must join entities that are in the file or already stored.

    Raises:
        ValidationFailed: naming the first relation with a missing end.
    """
    known = stored | {e.name for e in data.entities}
    for index, relation in enumerate(data.relations):
        for end, name in (("from", relation.source), ("to", relation.target)):
            if name not in known:
                raise _fail(
                    f"relations[{index}].{end}",
                    f"entity {name!r} is neither in the file nor stored",
                )


# --------------------------------------------------------------------------------- import plan


def parse_merge_strategy(value: MergeStrategy | str) -> MergeStrategy:
    """The strategy ``value`` names.

    Raises:
        ValidationFailed: ``value`` is not a strategy (the message lists them).
    """
    try:
        return MergeStrategy(value)
    except ValueError as exc:
        raise validation.invalid(
            "merge_strategy",
            f"must be one of {', '.join(s.value for s in MergeStrategy)}, got {value!r}",
        ) from exc


@attrs.frozen(kw_only=True)
class ImportState:
    """What the store holds of the names and relations an import touches."""

    entities: dict[str, Entity]
    stored_ends: set[str]
    relations: dict[queries.RelationKey, Relation]


def read_import_state(conn: Connection, data: ImportData, sql: MemorySQL = queries) -> ImportState:
    """Read the stored entities, relation ends and relations ``data`` names (``fn(conn)``)."""
    names = list({e.name for e in data.entities})
    ends = list({n for r in data.relations for n in (r.source, r.target)})
    keys = [(r.source, r.target, r.relation_type) for r in data.relations]
    return ImportState(
        entities=sql.fetch_entities(conn, names),
        stored_ends=sql.existing_names(conn, ends),
        relations=sql.fetch_relations(conn, keys),
    )


@attrs.frozen(kw_only=True)
class ImportPlan:
    """The writes an import makes, and the report it answers with."""

    strategy: MergeStrategy
    entities: EntityPlan
    relations: RelationPlan

    def report(self) -> ImportReport:
        """The counts of what the import did."""
        return ImportReport(
            merge_strategy=self.strategy,
            entities_created=len(self.entities.created),
            entities_updated=len(self.entities.updated),
            entities_skipped=len(self.entities.skipped),
            relations_created=self.relations.created,
            relations_updated=self.relations.updated,
            relations_skipped=self.relations.skipped,
        )


def plan_import(
    data: ImportData, state: ImportState, *, strategy: MergeStrategy, now: dt.datetime
) -> ImportPlan:
    """Decide the final state of every imported entity and relation (see
    :mod:`caxton.memory.plan`).

    Raises:
        ValidationFailed: a relation end is neither in the file nor stored, or a record fails
            a merge check.
        Conflict: ``error_on_conflict`` met stored names or relations.
    """
    check_relation_ends(data, state.stored_ends)
    return ImportPlan(
        strategy=strategy,
        entities=plan_entities(data.entities, state.entities, mode=strategy, now=now),
        relations=plan_relations(data.relations, state.relations, mode=strategy, now=now),
    )
