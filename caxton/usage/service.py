"""The usage component: accounts every LLM call and enforces budgets (issue #18).

A config agent asks :meth:`UsageService.check` before each LLM call (the agent's
``[performance]`` budget and the caller's key-file budget, against today's records) and hands
each finished call to :meth:`UsageService.record`, which prices it (``usage.prices``), keeps it
in the store, counts it in ``caxton_llm_tokens_total`` and adds it to the request's meter.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

import trio

from caxton.events import Event
from caxton.usage.context import current_caller, current_meter
from caxton.usage.model import (
    ANONYMOUS,
    Budget,
    UsageRecord,
    day_of,
    over_budget,
    price_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from prometheus_client import Counter

    from caxton.events import EventHub
    from caxton.llm.types import Usage
    from caxton.usage.ledger import UsageLedger
    from caxton.usage.model import ModelPrice

LOGGER = logging.getLogger("caxton.usage")

#: The ``key`` label value of callers past the first ``max_metric_keys``.
OTHER_KEYS: Final = "other"
#: The longest a call's record may take to be kept (the write is shielded from cancellation).
RECORD_TIMEOUT_S: Final = 10.0


class KeyLabels:
    """Bounded ``key`` label values: the first ``limit`` callers seen keep their name, the
    rest share ``other`` (Prometheus series must not grow with the callers)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, key: str) -> str:
        if key in self._known:
            return key
        if len(self._known) < self.limit:
            self._known.add(key)
            return key
        return OTHER_KEYS


class UsageService:
    """Accounting and budgets over a :class:`~caxton.usage.ledger.UsageLedger`.

    Args:
        ledger: where the records are kept (``None``: counted in the metric and the request's
            meter only, budgets not enforced, as in tests of one agent without a store).
        prices: ``usage.prices``: price per million tokens of each kind, by model.
        tokens: the ``caxton_llm_tokens_total`` counter (labels agent, provider, kind, key).
        events: the hub ``budget_exceeded`` events go to.
        key_budget: the budget of an API key (from the key file), or ``None``.
        max_metric_keys: ``usage.max_metric_keys``.
    """

    def __init__(
        self,
        ledger: UsageLedger | None,
        *,
        prices: Mapping[str, ModelPrice],
        tokens: Counter,
        events: EventHub | None = None,
        key_budget: Callable[[str], Budget | None] = lambda key: None,
        max_metric_keys: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.prices = dict(prices)
        self.tokens = tokens
        self.events = events
        self.key_budget = key_budget
        self.key_labels = KeyLabels(max_metric_keys)
        self.clock = clock

    def budgets(self, agent: Budget | None, key: str) -> list[Budget]:
        """The budgets a call of ``agent`` for ``key`` is under."""
        found = [agent] if agent is not None and agent.limited else []
        if key != ANONYMOUS:
            key_budget = self.key_budget(key)
            if key_budget is not None and key_budget.limited:
                found.append(key_budget)
        return found

    async def check(self, agent: Budget | None, *, key: str | None = None) -> None:
        """Refuse a call that would start over a budget: the agent's own, or its caller's.

        Raises:
            BudgetExceeded: 429, naming the budget and when it resets; a ``budget_exceeded``
                event is published on ``/ws/events`` as well.
        """
        key = key if key is not None else current_caller()
        budgets = self.budgets(agent, key)
        if not budgets or self.ledger is None:
            return
        now = self.clock()
        day = day_of(now)
        for budget in budgets:
            if budget.scope == "agent":
                spent = await self.ledger.spent_on(day, agent=budget.name)
            else:
                spent = await self.ledger.spent_on(day, key=budget.name)
            refusal = over_budget(budget, spent, now)
            if refusal is not None:
                agent_name = agent.name if agent is not None else None
                LOGGER.warning("budget: %s", refusal.message)
                if self.events is not None:
                    data: dict[str, Any] = {**refusal.details, "key": key}
                    self.events.publish(Event(type="budget_exceeded", agent=agent_name, data=data))
                raise refusal

    async def record(
        self, *, agent: str, provider: str, model: str, usage: Usage, key: str | None = None
    ) -> UsageRecord:
        """Account one finished LLM call (see the module docstring); return its record."""
        key = key if key is not None else current_caller()
        price = price_for(self.prices, model)
        cost = price.cost(usage) if price is not None else 0.0
        record = UsageRecord(
            at=self.clock(),
            agent=agent,
            key=key,
            model=model,
            provider=provider,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost=cost,
        )
        label = self.key_labels(key)
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
        ):
            if count:
                self.tokens.labels(agent=agent, provider=provider, kind=kind, key=label).inc(count)
        meter = current_meter()
        if meter is not None:
            meter.add(usage, cost)
        if self.ledger is not None:
            # the provider bills the call whether or not the caller is still there: the write
            # is shielded from the request's cancellation, bounded by RECORD_TIMEOUT_S
            with trio.CancelScope(shield=True, deadline=trio.current_time() + RECORD_TIMEOUT_S):
                await self.ledger.record(record)
                return record
            LOGGER.warning(
                "usage: the record of a call of agent %s was not kept (the store took more "
                "than %ss)",
                agent,
                RECORD_TIMEOUT_S,
            )
        return record
