"""The pure parts of usage accounting (issue #18): provider usage parsing, prices, the budget
decision, bounded metric labels, and budgets in the key file."""

from __future__ import annotations

import datetime as dt

import pytest

from caxton.llm.openai import openai_usage
from caxton.llm.types import Usage
from caxton.security.keys import KeyFileError, parse_key_file
from caxton.usage.model import Budget, ModelPrice, UsageTotals, next_reset, over_budget, price_for
from caxton.usage.service import OTHER_KEYS, KeyLabels

HASH = "sha256:" + "ab" * 32
NOON = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC).timestamp()


def test_openai_cached_tokens_are_taken_out_of_the_prompt_tokens() -> None:
    usage = openai_usage(
        {
            "prompt_tokens": 1208,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 1200},
        }
    )
    assert usage == Usage(input_tokens=8, output_tokens=5, cache_read_tokens=1200)
    assert usage.total_tokens == 1213
    assert openai_usage({"prompt_tokens": 3, "completion_tokens": 1}).cache_read_tokens == 0


def test_cost_is_per_million_tokens_of_each_kind() -> None:
    price = ModelPrice(input=1.0, output=2.0, cache_read=0.5, cache_write=1.25)
    usage = Usage(
        input_tokens=1000, output_tokens=100, cache_read_tokens=4000, cache_write_tokens=8
    )
    assert price.cost(usage) == pytest.approx((1000 + 200 + 2000 + 10) / 1_000_000)
    prices = {"gpt-4o-mini": price}
    assert price_for(prices, "gpt-4o-mini-2024", "gpt-4o-mini") is price
    assert price_for(prices, None, "other") is None


def test_a_budget_refuses_once_reached_and_names_the_reset() -> None:
    budget = Budget(scope="key", name="alice", max_tokens_per_day=100, where="in keys.yaml")
    assert over_budget(budget, UsageTotals(calls=1, input_tokens=99), NOON) is None
    refusal = over_budget(budget, UsageTotals(calls=2, input_tokens=60, output_tokens=40), NOON)
    assert refusal is not None
    assert refusal.code == "BUDGET_EXCEEDED"
    assert refusal.http_status == 429
    assert refusal.details["resets_at"] == "2026-12-06T00:00:00Z"
    assert refusal.details["retry_after_s"] == 12 * 3600
    assert refusal.details["budget"]["limit"] == "max_tokens_per_day"
    assert "key 'alice'" in refusal.message
    assert "in keys.yaml" in refusal.message
    costly = Budget(scope="agent", name="a", max_cost_per_day=0.5)
    assert over_budget(costly, UsageTotals(cost=0.49), NOON) is None
    assert over_budget(costly, UsageTotals(cost=0.5), NOON) is not None
    assert next_reset(NOON) - NOON == 12 * 3600


def test_metric_key_labels_are_bounded() -> None:
    labels = KeyLabels(2)
    assert [labels(k) for k in ("a", "b", "c", "a", "d")] == ["a", "b", OTHER_KEYS, "a", OTHER_KEYS]


def test_key_file_budgets_are_read_and_checked() -> None:
    text = (
        "keys:\n"
        f"  - {{name: alice, role: user, hash: '{HASH}', max_tokens_per_day: 5000, "
        "max_cost_per_day: 1.5}\n"
    )
    (entry,) = parse_key_file(text, "keys.yaml").entries
    assert (entry.max_tokens_per_day, entry.max_cost_per_day) == (5000, 1.5)
    assert entry.as_yaml()["max_tokens_per_day"] == 5000
    bad = text.replace("5000", "lots")
    with pytest.raises(KeyFileError, match="max_tokens_per_day must be a positive number"):
        parse_key_file(bad, "keys.yaml")
