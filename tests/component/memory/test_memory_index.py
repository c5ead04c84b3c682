"""The accelerator's matrix bookkeeping (pure numpy, no event loop)."""

from __future__ import annotations

import numpy as np

from caxton.latency import LatencyWindow
from caxton.memory.index import IndexEntry, VectorIndex
from caxton.memory.types import Scope


def entry(name, *, scope=Scope.GLOBAL, agent=None, entity_type="t"):
    return IndexEntry(name=name, entity_type=entity_type, scope=scope, agent=agent)


def unit(*values):
    vector = np.zeros(4, dtype=np.float32)
    vector[: len(values)] = values
    return vector


def test_upsert_replace_and_remove_keep_rows_consistent():
    index = VectorIndex(4)
    index.upsert(
        [entry("a"), entry("b"), entry("c")],
        np.stack([unit(1), unit(0, 1), unit(0, 0, 1)]),
    )
    assert len(index) == 3
    assert index.search(unit(0, 0, 1), limit=1) == [("c", 1.0)]
    index.remove(["a", "missing"])  # "c" moves into a's row
    assert len(index) == 2
    assert "a" not in index
    assert index.search(unit(0, 0, 1), limit=1) == [("c", 1.0)]
    assert index.search(unit(1), limit=5, min_similarity=0.5) == []
    index.upsert([entry("b")], np.stack([unit(3, 0, 0)]))  # replaced, and normalised
    assert len(index) == 2
    assert index.search(unit(1), limit=1) == [("b", 1.0)]
    # Growing past the first allocation keeps earlier rows.
    many = [entry(f"n{i}") for i in range(2000)]
    index.upsert(many, np.tile(unit(0, 1), (2000, 1)))
    assert len(index) == 2002
    assert index.search(unit(0, 0, 1), limit=1) == [("c", 1.0)]


def test_ties_break_by_name_and_filters_apply():
    index = VectorIndex(4)
    index.upsert(
        [
            entry("z-global"),
            entry("a-global"),
            entry("mine", scope=Scope.AGENT, agent="me"),
            entry("theirs", scope=Scope.AGENT, agent="them"),
            entry("ws", scope=Scope.WORKSPACE, entity_type="other"),
        ],
        np.tile(unit(1, 1), (5, 1)),
    )
    assert [n for n, _ in index.search(unit(1, 1), limit=2)] == ["a-global", "ws"]
    assert [n for n, _ in index.search(unit(1, 1), limit=10)] == ["a-global", "ws", "z-global"]
    assert [n for n, _ in index.search(unit(1, 1), limit=10, agent="me")] == [
        "a-global",
        "mine",
        "ws",
        "z-global",
    ]
    assert [n for n, _ in index.search(unit(1), limit=10, agent="me", scope=Scope.AGENT)] == [
        "mine"
    ]
    assert [n for n, _ in index.search(unit(1), limit=10, entity_types=["other"])] == ["ws"]
    assert index.search(unit(1), limit=10, entity_types=["unknown"]) == []
    index.clear()
    assert index.search(unit(1), limit=3) == []


def test_filter_rows_follows_agent_scoped_rows_through_writes():
    # The unfiltered search skips its pass over the filter columns only while no row is
    # agent-scoped: the count behind that must follow inserts, replacements and removals.
    index = VectorIndex(4)
    index.upsert([entry("g1"), entry("g2")], np.tile(unit(1), (2, 1)))
    assert index.filter_rows() is None
    index.upsert([entry("a1", scope=Scope.AGENT, agent="me")], np.stack([unit(1)]))
    assert index.filter_rows().tolist() == [0, 1]
    assert index.filter_rows(agent="me") is None
    index.upsert([entry("g1", scope=Scope.AGENT, agent="them")], np.stack([unit(1)]))
    assert index.filter_rows().tolist() == [1]
    index.upsert([entry("a1")], np.stack([unit(1)]))  # now global
    assert index.filter_rows().tolist() == [1, 2]
    index.remove(["g1"])  # the last agent-scoped row goes
    assert index.filter_rows() is None
    # A name twice in one write: its last entry wins, and is what is counted.
    index.upsert(
        [entry("d1", scope=Scope.AGENT, agent="me"), entry("d1"), entry("d2")],
        np.stack([unit(1), unit(0, 1), unit(0, 0, 1)]),
    )
    assert index.filter_rows() is None
    assert index.search(unit(0, 1), limit=1) == [("d1", 1.0)]
    index.upsert(
        [entry("d2"), entry("d2", scope=Scope.AGENT, agent="me")], np.stack([unit(1), unit(1)])
    )
    assert len(index.filter_rows()) == 3  # every row but d2's
    assert [n for n, _ in index.search(unit(1), limit=5)] == ["a1", "g2", "d1"]
    assert [n for n, _ in index.search(unit(1), limit=5, agent="me")] == ["a1", "d2", "g2", "d1"]


def test_latency_window_percentiles():
    window = LatencyWindow(100)
    assert window.percentile(0.99) == 0.0
    for ms in range(1, 201):
        window.record(ms / 1000)
    assert window.count == 200
    assert len(window) == 100  # only the last 100: 101..200 ms
    assert window.percentile(0.5) == 0.150
    assert window.percentile(0.99) == 0.199
