"""How incoming entities and relations combine with stored ones (pure).

Creating an entity whose name is taken:

* with the same ``entity_type``, ``scope`` and ``agent``: the two are merged — new
  observations are appended (exact duplicates are dropped), metadata keys are updated — so
  agents can "remember" facts about a known entity by creating it again;
* with another type (or another scope/owner): :class:`~caxton.errors.Conflict` (409), since a
  name means one thing across the memory.

Imports follow their :class:`~caxton.memory.types.MergeStrategy` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from caxton.errors import Conflict, ValidationFailed
from caxton.memory import validation
from caxton.memory.types import Entity, MergeStrategy, NewEntity, NewRelation, Relation

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping, Sequence

    from caxton.memory.queries import RelationKey

#: ``"create"`` is the API's create call; the strategies are imports.
WriteMode = Literal["create"] | MergeStrategy


@attrs.frozen(kw_only=True)
class EntityPlan:
    """The entities to write (final states, one per name) and what happened to each name."""

    writes: tuple[Entity, ...]
    created: tuple[str, ...]
    updated: tuple[str, ...]
    skipped: tuple[str, ...]


@attrs.frozen(kw_only=True)
class RelationPlan:
    """The relations to write and the counts per outcome."""

    writes: tuple[Relation, ...]
    created: int
    updated: int
    skipped: int


def _merge_observations(old: Sequence[str], new: Sequence[str], name: str) -> tuple[str, ...]:
    merged = list(old)
    seen = set(old)
    for observation in new:
        if observation not in seen:
            merged.append(observation)
            seen.add(observation)
    validation.check_observation_count(len(merged), f"entity {name!r} observations")
    return tuple(merged)


def _fresh(new: NewEntity, now: dt.datetime) -> Entity:
    observations = _merge_observations((), new.observations, new.name)
    return Entity(
        name=new.name,
        entity_type=new.entity_type,
        observations=observations,
        scope=new.scope,
        agent=new.agent,
        metadata=dict(new.metadata),
        created_at=new.created_at or now,
        updated_at=new.updated_at or now,
    )


def _conflict_for_create(old: Entity, new: NewEntity) -> Conflict | None:
    if old.entity_type != new.entity_type:
        return Conflict(
            f"entity {old.name!r} already exists with type {old.entity_type!r}, not "
            f"{new.entity_type!r}. Use another name, or delete the existing entity first",
            details={"name": old.name, "existing_type": old.entity_type},
        )
    if (old.scope, old.agent) != (new.scope, new.agent):
        owner = f"{old.scope}" + (f" (agent {old.agent!r})" if old.agent else "")
        return Conflict(
            f"entity {old.name!r} already exists in scope {owner}; it cannot be merged with "
            f"an entity in scope {new.scope}" + (f" (agent {new.agent!r})" if new.agent else ""),
            details={"name": old.name, "existing_scope": str(old.scope)},
        )
    return None


def plan_entities(
    incoming: Sequence[NewEntity],
    existing: Mapping[str, Entity],
    *,
    mode: WriteMode,
    now: dt.datetime,
) -> EntityPlan:
    """Decide the final state of every incoming entity.

    Raises:
        Conflict: a create meets a name of another type or scope, or an
            ``error_on_conflict`` import meets stored names (all are listed).
        ValidationFailed: an import names one entity twice, or a merge would exceed the
            observation limit.
    """
    if mode != "create":
        seen: dict[str, int] = {}
        for index, new in enumerate(incoming):
            if new.name in seen:
                raise ValidationFailed(
                    f"entities[{index}]: entity {new.name!r} appears twice in the file "
                    f"(also entities[{seen[new.name]}])",
                    details={"name": new.name},
                )
            seen[new.name] = index
    if mode == MergeStrategy.ERROR_ON_CONFLICT:
        clashes = sorted(n.name for n in incoming if n.name in existing)
        if clashes:
            raise Conflict(
                f"{len(clashes)} entities already exist (merge strategy error_on_conflict): "
                + ", ".join(repr(n) for n in clashes[:10])
                + (" ..." if len(clashes) > 10 else "")
                + ". Use merge_strategy=update_existing or skip_existing",
                details={"names": list(clashes[:100])},
            )
    state: dict[str, Entity] = {}
    created: list[str] = []
    updated: list[str] = []
    skipped: list[str] = []
    for new in incoming:
        old = state.get(new.name) or existing.get(new.name)
        if old is None:
            state[new.name] = _fresh(new, now)
            created.append(new.name)
            continue
        if mode == MergeStrategy.SKIP_EXISTING:
            skipped.append(new.name)
            continue
        if mode == "create":
            conflict = _conflict_for_create(old, new)
            if conflict is not None:
                raise conflict
            merged = attrs.evolve(
                old,
                observations=_merge_observations(old.observations, new.observations, new.name),
                metadata={**old.metadata, **new.metadata},
                updated_at=now,
            )
        else:
            merged = Entity(
                name=new.name,
                entity_type=new.entity_type,
                observations=_merge_observations(old.observations, new.observations, new.name),
                scope=new.scope,
                agent=new.agent,
                metadata=dict(new.metadata),
                created_at=old.created_at,
                updated_at=now,
            )
        state[new.name] = merged
        if new.name not in created and new.name not in updated:
            updated.append(new.name)
    return EntityPlan(
        writes=tuple(state.values()),
        created=tuple(created),
        updated=tuple(updated),
        skipped=tuple(skipped),
    )


def plan_relations(
    incoming: Sequence[NewRelation],
    existing: Mapping[RelationKey, Relation],
    *,
    mode: WriteMode,
    now: dt.datetime,
) -> RelationPlan:
    """Decide which relations to write; an existing key keeps its ``created_at``.

    Raises:
        Conflict: an ``error_on_conflict`` import meets stored relations.
    """
    if mode == MergeStrategy.ERROR_ON_CONFLICT:
        clashes = [r for r in incoming if (r.source, r.target, r.relation_type) in existing]
        if clashes:
            first = clashes[0]
            raise Conflict(
                f"{len(clashes)} relations already exist (merge strategy error_on_conflict), "
                f"for example {first.source!r} -[{first.relation_type}]-> {first.target!r}",
                details={"count": len(clashes)},
            )
    writes: dict[RelationKey, Relation] = {}
    created = updated = skipped = 0
    for new in incoming:
        key = (new.source, new.target, new.relation_type)
        old = writes.get(key) or existing.get(key)
        if old is not None and mode == MergeStrategy.SKIP_EXISTING:
            skipped += 1
            continue
        writes[key] = Relation(
            source=new.source,
            target=new.target,
            relation_type=new.relation_type,
            strength=new.strength,
            confidence=new.confidence,
            created_at=old.created_at if old else (new.created_at or now),
        )
        if old is None:
            created += 1
        else:
            updated += 1
    return RelationPlan(
        writes=tuple(writes.values()), created=created, updated=updated, skipped=skipped
    )
