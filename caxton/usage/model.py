"""Token usage and budgets as plain values (issue #18): what one LLM call used, what it cost,
the filters and groupings of a usage report, and the pure budget decision.

Nothing here does I/O: :mod:`caxton.usage.ledger` keeps the records in the store and
:mod:`caxton.usage.service` applies the decisions.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from caxton.errors import CaxtonError
from caxton.llm.types import Usage

if TYPE_CHECKING:
    from collections.abc import Mapping


GroupBy = Literal["agent", "key", "model", "day"]
GROUP_BY: Final[tuple[str, ...]] = ("agent", "key", "model", "day")
#: The four kinds of token (the ``kind`` label of ``caxton_llm_tokens_total``).
KINDS: Final[tuple[str, ...]] = ("input", "output", "cache_read", "cache_write")
#: The caller of a request when authentication is off (or an agent's own background work).
ANONYMOUS: Final = "anonymous"
#: Prices are per this many tokens (the providers' price lists are per million).
PRICE_UNIT: Final = 1_000_000


@attrs.frozen(kw_only=True)
class ModelPrice:
    """What a million tokens of each kind cost (in the operator's currency, e.g. USD)."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        ) / PRICE_UNIT


def price_for(prices: Mapping[str, ModelPrice], *models: str | None) -> ModelPrice | None:
    """The price of the first of ``models`` that ``prices`` lists (the answering model, then
    the requested one), or ``None`` when none is priced (the cost is then 0)."""
    for model in models:
        if model and model in prices:
            return prices[model]
    return None


@attrs.frozen(kw_only=True)
class UsageRecord:
    """One LLM call: who asked (``key``: an API key's name or a token's subject), which agent
    made it, on which model, the four token counts and the cost."""

    at: float
    agent: str
    key: str
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: float = 0.0

    @property
    def day(self) -> str:
        return day_of(self.at)

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


@attrs.frozen(kw_only=True)
class UsageFilter:
    """Which records a report covers: ``since <= at < until`` (epoch seconds), one agent, one
    key; ``None`` means no bound."""

    since: float | None = None
    until: float | None = None
    agent: str | None = None
    key: str | None = None


@attrs.frozen(kw_only=True)
class UsageTotals(Usage):
    """Sums over a group of records: the four token counts, the calls and their cost."""

    calls: int = 0
    cost: float = 0.0

    def __add__(self, other: UsageTotals) -> UsageTotals:  # type: ignore[override]
        tokens = Usage.__add__(self, other)
        return UsageTotals(
            calls=self.calls + other.calls, cost=self.cost + other.cost, **attrs.asdict(tokens)
        )

    def to_json(self) -> dict[str, Any]:
        return {"calls": self.calls, **usage_json(self, self.cost)}


def usage_json(usage: Usage, cost: float) -> dict[str, Any]:
    """One call's (or one reply's) usage as ``done`` frames carry it."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "total_tokens": usage.total_tokens,
        "cost": round(cost, 6),
    }


def day_of(at: float) -> str:
    """The UTC day of an epoch time, ``YYYY-MM-DD`` (budgets reset at UTC midnight)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


def day_start(at: float) -> float:
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def next_reset(at: float) -> float:
    """When the daily budgets of the day of ``at`` reset: the next UTC midnight."""
    return day_start(at) + 86_400.0


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


# -- budgets --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Budget:
    """A daily cap on tokens and/or cost for one agent or one key; ``None`` is no cap.

    ``where`` says where the operator set it (for the error message).
    """

    scope: Literal["agent", "key"]
    name: str
    max_tokens_per_day: int | None = None
    max_cost_per_day: float | None = None
    where: str = ""

    @property
    def limited(self) -> bool:
        return self.max_tokens_per_day is not None or self.max_cost_per_day is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "name": self.name,
            "max_tokens_per_day": self.max_tokens_per_day,
            "max_cost_per_day": self.max_cost_per_day,
        }


class BudgetExceeded(CaxtonError):
    """A call would start with an agent's or a key's daily budget spent (429)."""

    code = "BUDGET_EXCEEDED"
    http_status = 429


def over_budget(budget: Budget, spent: UsageTotals, now: float) -> BudgetExceeded | None:
    """The refusal for a call starting at ``now`` when ``spent`` (today's use) has reached
    ``budget``, else ``None`` (pure)."""
    if budget.max_tokens_per_day is not None and spent.total_tokens >= budget.max_tokens_per_day:
        what = f"{spent.total_tokens} of {budget.max_tokens_per_day} tokens"
        field = "max_tokens_per_day"
    elif budget.max_cost_per_day is not None and spent.cost >= budget.max_cost_per_day:
        what = f"{spent.cost:.4f} of {budget.max_cost_per_day:g} (cost)"
        field = "max_cost_per_day"
    else:
        return None
    resets = next_reset(now)
    return BudgetExceeded(
        f"the daily budget of {budget.scope} {budget.name!r} is spent ({what} used today, "
        f"{budget.where}); it resets at {iso(resets)}; raise {field} there, or wait",
        details={
            "budget": {**budget.to_json(), "limit": field},
            "used": spent.to_json(),
            "resets_at": iso(resets),
            "retry_after_s": max(1, int(resets - now)),
        },
    )
