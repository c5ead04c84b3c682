"""Values of the memory component: entities, relations, search hits, graphs, reports.

All frozen attrs classes; the ones users see have ``to_json()`` giving the wire shape of
DESIGN §6/§11 (relations use ``from`` / ``to``; times are ISO 8601 in UTC). Constructing a
:class:`NewEntity` or :class:`NewRelation` validates it (:mod:`caxton.memory.validation`).
"""

from __future__ import annotations

import datetime as dt
import enum

import attrs

from caxton.errors import JSONValue
from caxton.memory import validation


class Scope(enum.StrEnum):
    """Who may see an entity.

    ``agent`` entities are visible only to their own agent; ``workspace`` and ``global`` ones
    to every agent.
    """

    AGENT = "agent"
    WORKSPACE = "workspace"
    GLOBAL = "global"


class MergeStrategy(enum.StrEnum):
    """What an import does with entities and relations that already exist.

    * ``update_existing`` (default): the imported record wins for type, scope, agent and
      metadata; observations are merged (stored ones first, then new imported ones).
    * ``skip_existing``: stored records are kept as they are; only new ones are added.
    * ``error_on_conflict``: any existing name or relation fails the whole import (409).
    """

    UPDATE_EXISTING = "update_existing"
    SKIP_EXISTING = "skip_existing"
    ERROR_ON_CONFLICT = "error_on_conflict"


def _observations(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise TypeError("observations must be a sequence of strings, not one string")
    if not isinstance(value, tuple | list):
        raise TypeError(f"observations must be a list of strings, got {type(value).__name__}")
    return tuple(value)


def _metadata(value: object) -> dict[str, JSONValue]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"metadata must be an object, got {type(value).__name__}")
    return dict(value)


@attrs.frozen(kw_only=True)
class NewEntity:
    """An entity as a caller hands it in (create, import).

    Raises:
        ValidationFailed: on construction, naming the bad field and the limit.
    """

    name: str
    entity_type: str
    observations: tuple[str, ...] = attrs.field(default=(), converter=_observations)
    scope: Scope = attrs.field(default=Scope.GLOBAL, converter=Scope)
    agent: str | None = None
    metadata: dict[str, JSONValue] = attrs.field(factory=dict, converter=_metadata)
    #: Only set by imports, to keep the original times.
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def __attrs_post_init__(self) -> None:
        validation.check_name(self.name, "name")
        validation.check_entity_type(self.entity_type, "entity_type")
        for index, observation in enumerate(self.observations):
            validation.check_observation(observation, f"observations[{index}]")
        validation.check_observation_count(len(self.observations), "observations")
        if self.scope is Scope.AGENT and self.agent is None:
            raise validation.invalid(
                "agent", "an entity with scope 'agent' needs the owning agent's name"
            )
        if self.agent is not None:
            validation.check_agent(self.agent, "agent")
        validation.check_metadata(self.metadata, "metadata")


@attrs.frozen(kw_only=True)
class Entity:
    """A stored entity."""

    name: str
    entity_type: str
    observations: tuple[str, ...]
    scope: Scope
    agent: str | None
    metadata: dict[str, JSONValue]
    created_at: dt.datetime
    updated_at: dt.datetime

    def embedding_text(self) -> str:
        """The text that is embedded: ``"{name} {entity_type} {observations}"``."""
        return " ".join([self.name, self.entity_type, *self.observations])

    def to_json(self) -> dict[str, JSONValue]:
        """The entity as the API and the export files write it."""
        return {
            "name": self.name,
            "entity_type": self.entity_type,
            "observations": list(self.observations),
            "scope": str(self.scope),
            "agent": self.agent,
            "metadata": dict(self.metadata),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@attrs.frozen(kw_only=True)
class NewRelation:
    """A relation as a caller hands it in; ``source``/``target`` are ``from``/``to``.

    Raises:
        ValidationFailed: on construction, naming the bad field.
    """

    source: str
    target: str
    relation_type: str
    strength: float = 1.0
    confidence: float = 1.0
    created_at: dt.datetime | None = None

    def __attrs_post_init__(self) -> None:
        validation.check_name(self.source, "from")
        validation.check_name(self.target, "to")
        validation.check_entity_type(self.relation_type, "relation_type")
        validation.check_unit_interval(self.strength, "strength")
        validation.check_unit_interval(self.confidence, "confidence")


@attrs.frozen(kw_only=True)
class Relation:
    """A stored relation, directed from ``source`` to ``target``."""

    source: str
    target: str
    relation_type: str
    strength: float
    confidence: float
    created_at: dt.datetime

    def to_json(self) -> dict[str, JSONValue]:
        """The relation as the API and the export files write it."""
        return {
            "from": self.source,
            "to": self.target,
            "relation_type": self.relation_type,
            "strength": self.strength,
            "confidence": self.confidence,
            "created_at": self.created_at.isoformat(),
        }


@attrs.frozen(kw_only=True)
class SearchHit:
    """One search result: the entity and its cosine similarity to the query."""

    entity: Entity
    similarity: float

    def to_json(self) -> dict[str, JSONValue]:
        """The entity's JSON plus ``similarity``."""
        return {**self.entity.to_json(), "similarity": self.similarity}

    def brief(self) -> dict[str, JSONValue]:
        """What a model is shown of the hit (a memory search tool's result): name, type,
        observations and the similarity to three places."""
        return {
            "name": self.entity.name,
            "entity_type": self.entity.entity_type,
            "observations": list(self.entity.observations),
            "similarity": round(self.similarity, 3),
        }


@attrs.frozen(kw_only=True)
class GraphNode:
    """An entity reached from the graph's root, ``depth`` relations away."""

    name: str
    entity_type: str
    depth: int
    observations: tuple[str, ...]

    def to_json(self) -> dict[str, JSONValue]:
        """``{name, entity_type, depth, observations}``."""
        return {
            "name": self.name,
            "entity_type": self.entity_type,
            "depth": self.depth,
            "observations": list(self.observations),
        }


@attrs.frozen(kw_only=True)
class GraphEdge:
    """A relation between two nodes of a graph."""

    source: str
    target: str
    relation_type: str
    strength: float

    def to_json(self) -> dict[str, JSONValue]:
        """``{from, to, relation_type, strength}``."""
        return {
            "from": self.source,
            "to": self.target,
            "relation_type": self.relation_type,
            "strength": self.strength,
        }


@attrs.frozen(kw_only=True)
class Graph:
    """The neighbourhood of ``root`` up to a depth; relations are followed both ways."""

    root: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]

    def to_json(self) -> dict[str, JSONValue]:
        """``{"root", "nodes": [...], "edges": [...]}``."""
        return {
            "root": self.root,
            "nodes": [node.to_json() for node in self.nodes],
            "edges": [edge.to_json() for edge in self.edges],
        }


@attrs.frozen(kw_only=True)
class ImportReport:
    """What an import did."""

    merge_strategy: MergeStrategy
    entities_created: int
    entities_updated: int
    entities_skipped: int
    relations_created: int
    relations_updated: int
    relations_skipped: int

    def to_json(self) -> dict[str, JSONValue]:
        """The counts, keyed by field name."""
        return {
            "merge_strategy": str(self.merge_strategy),
            "entities_created": self.entities_created,
            "entities_updated": self.entities_updated,
            "entities_skipped": self.entities_skipped,
            "relations_created": self.relations_created,
            "relations_updated": self.relations_updated,
            "relations_skipped": self.relations_skipped,
        }


@attrs.frozen(kw_only=True)
class MemoryStats:
    """The content of the memory (``GET /api/v1/memory/stats``)."""

    entity_count: int
    relation_count: int
    observation_count: int
    entities_by_type: dict[str, int]
    entities_by_scope: dict[str, int]
    db_size_bytes: int
    max_entities: int | None

    def to_json(self) -> dict[str, JSONValue]:
        """The figures, keyed by field name."""
        return {
            "entity_count": self.entity_count,
            "relation_count": self.relation_count,
            "observation_count": self.observation_count,
            "entities_by_type": dict(self.entities_by_type),
            "entities_by_scope": dict(self.entities_by_scope),
            "db_size_bytes": self.db_size_bytes,
            "max_entities": self.max_entities,
        }


@attrs.frozen(kw_only=True)
class Capacity:
    """How full the memory is (``caxton memory capacity-check``).

    Attributes:
        used_ratio: entities over ``max_entities`` (0.0 when unlimited).
        warning: True from 90% of ``max_entities``.
        message: one line for operators.
        index_ram_bytes: RAM the in-process search index needs for ``entity_count``
            (:func:`caxton.memory.hnsw.index_ram_bytes`; 0 when searches run in the store).
        index_ram_at_max_bytes: the same at ``max_entities`` (None when unlimited).
    """

    entity_count: int
    max_entities: int | None
    used_ratio: float
    db_size_bytes: int
    warning: bool
    message: str
    index_ram_bytes: int = 0
    index_ram_at_max_bytes: int | None = None


@attrs.frozen(kw_only=True)
class OptimizeReport:
    """What ``optimize`` did and the database size before and after."""

    checkpointed: bool
    vacuumed: bool
    analyzed: bool
    size_before_bytes: int
    size_after_bytes: int
    seconds: float


@attrs.frozen(kw_only=True)
class MemoryStatistics:
    """A snapshot of the memory component's counters (read by health and metrics).

    Attributes:
        search_p99_ms: 99th percentile of the last ``window`` searches (0.0 when none yet).
        hnsw_ready: the HNSW graph is installed (used from ``hnsw_threshold`` entities).
        hnsw_building: a graph is being loaded or built; searches use the numpy scan.
        hnsw_searches / hnsw_fallbacks: searches through the graph, and those of them that
            fell back to the full numpy scan (filters left fewer than ``limit`` hits).
        hnsw_builds / hnsw_loads: graphs built from the mirror / loaded from the saved file.
        entity_cache_entries / entity_cache_bytes: what the entity cache holds (0 on a shared
            store, which has none).
        entity_cache_filling: a fill of the entity cache is asked for or running.
        entity_cache_fill_seconds: how long the latest fill took.
    """

    entity_count: int
    max_entities: int | None
    searches_total: int
    search_window: int
    search_p50_ms: float
    search_p99_ms: float
    accelerator_enabled: bool
    accelerator_ready: bool
    index_rows: int
    hnsw_ready: bool = False
    hnsw_building: bool = False
    hnsw_rows: int = 0
    hnsw_searches: int = 0
    hnsw_fallbacks: int = 0
    hnsw_builds: int = 0
    hnsw_loads: int = 0
    hnsw_build_seconds: float = 0.0
    relation_count: int = 0
    entity_cache_entries: int = 0
    entity_cache_bytes: int = 0
    entity_cache_filling: bool = False
    entity_cache_fill_seconds: float = 0.0
