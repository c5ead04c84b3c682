"""The numpy accelerator against DuckDB's exact scan, on real embeddings."""

from __future__ import annotations

import itertools
import random

import pytest
import trio

from caxton.memory import NewEntity

pytestmark = pytest.mark.trio

SUBJECTS = ["the cat", "a trader", "my neighbour", "the robot", "a child", "the chef", "a pilot"]
VERBS = ["likes", "fears", "repairs", "paints", "studies", "sells", "cooks"]
OBJECTS = [
    "old bicycles",
    "stock options",
    "fresh bread",
    "jet engines",
    "garden roses",
    "mountain maps",
    "jazz records",
    "rainy mornings",
    "chess puzzles",
]
QUERIES = [
    "someone who bakes",
    "financial markets",
    "flying aircraft",
    "music collection",
    "flowers in the garden",
    "a machine that fixes things",
    "hiking in the hills",
    "board games and strategy",
    "pets and animals",
    "weather in the morning",
    "cycling",
    "a kitchen",
    "an artist at work",
    "school homework",
    "selling things at a market",
    "being afraid",
    "vintage vinyl",
    "a pastry chef",
    "airport",
    "children playing",
]


async def test_accelerator_matches_the_exact_path(memory):
    rng = random.Random(7)
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS))
    rng.shuffle(combos)
    entities = []
    for index, (subject, verb, obj) in enumerate(combos[:360]):
        scope = ("global", "workspace", "agent")[index % 3]
        entities.append(
            NewEntity(
                name=f"fact-{index:03d}",
                entity_type=("habit", "opinion")[index % 2],
                observations=[f"{subject} {verb} {obj}"],
                scope=scope,
                agent=("alpha", "beta")[index % 2] if scope == "agent" else None,
            )
        )
    with trio.fail_after(60):
        await memory.create_entities(entities)
        assert memory.statistics().index_rows == 360
        overlaps = []
        for query in QUERIES:
            for filters in ({}, {"agent": "alpha"}, {"entity_types": ["habit"], "agent": "beta"}):
                fast = await memory.search(query, limit=10, **filters)
                exact = await memory.search(query, limit=10, exact=True, **filters)
                assert len(fast) == len(exact) == 10
                fast_names = {h.entity.name for h in fast}
                exact_names = {h.entity.name for h in exact}
                overlaps.append(len(fast_names & exact_names) / 10)
                exact_scores = {h.entity.name: h.similarity for h in exact}
                for hit in fast:
                    if hit.entity.name in exact_scores:
                        assert hit.similarity == pytest.approx(
                            exact_scores[hit.entity.name], abs=1e-4
                        )
                # Filters are honoured by both paths.
                for hit in fast:
                    if hit.entity.scope == "agent":
                        assert hit.entity.agent == filters.get("agent")
                    if "entity_types" in filters:
                        assert hit.entity.entity_type == "habit"
        recall = sum(overlaps) / len(overlaps)
        assert recall >= 0.98, recall
