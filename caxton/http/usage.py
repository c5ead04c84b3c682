"""``GET /api/v1/usage``: LLM tokens and cost, filtered and grouped (issue #18).

The answer (kept simple for consoles and scripts)::

    {"since": ISO|null, "until": ISO|null, "group_by": "agent",
     "filters": {"agent": null, "key": null},
     "groups": [{"group": "support", "calls": 3, "input_tokens": ..., "output_tokens": ...,
                 "cache_read_tokens": ..., "cache_write_tokens": ..., "total_tokens": ...,
                 "cost": 0.0123}, ...],
     "totals": {... the same sums over every selected call ...},
     "budgets": [{"scope": "agent"|"key", "name", "max_tokens_per_day", "max_cost_per_day",
                  "used_today": {...sums...}, "resets_at": ISO}, ...]}

``since`` and ``until`` take an ISO 8601 date or time (UTC when no offset is given) or a
duration back from now (``24h``, ``7d``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any, Final, cast

from quart import request

from caxton.errors import BadRequest, ServiceUnavailable
from caxton.http.routes import QueryParam, RouteTable
from caxton.http.state import current_services
from caxton.security.roles import Role
from caxton.units import parse_duration
from caxton.usage.model import GROUP_BY, UsageFilter, day_of, iso, next_reset

if TYPE_CHECKING:
    from caxton.services import Services
    from caxton.usage.model import Budget, GroupBy

routes = RouteTable("usage")

#: Longest agent or key name accepted in a filter.
MAX_NAME: Final = 128


def parse_time(name: str, value: str | None, *, now: float) -> float | None:
    """A ``since``/``until`` value as epoch seconds (see the module docstring)."""
    if value is None or value == "":
        return None
    text = value.strip()
    if len(text) > 64:
        raise BadRequest(f"{name} is too long: give an ISO 8601 date or time, or a duration")
    if text[-1:].isalpha() and not text[:4].isdigit():
        try:
            return now - parse_duration(text)
        except ValueError as exc:
            raise BadRequest(f"{name}={value!r}: {exc}") from None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name}={value!r} is not a date: give an ISO 8601 date or time (2026-12-05, "
            "2026-12-05T10:00:00Z) or a duration back from now (24h, 7d)",
            details={"parameter": name},
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _name_arg(name: str) -> str | None:
    value = request.args.get(name) or None
    if value is not None and len(value) > MAX_NAME:
        raise BadRequest(f"{name} is longer than {MAX_NAME} characters")
    return value


@routes.route(
    "/api/v1/usage",
    role=Role.READONLY,
    summary="LLM tokens (input, output, cache read, cache write) and cost, grouped by agent, "
    "key, model or day; with the budgets in force and what they have used today.",
    query=(
        QueryParam(name="since", description="ISO 8601 date/time or a duration back (24h)"),
        QueryParam(name="until", description="ISO 8601 date/time or a duration back"),
        QueryParam(name="agent", description="only this agent's calls"),
        QueryParam(name="key", description="only this caller's calls (API key name or subject)"),
        QueryParam(name="group_by", description="agent (default), key, model or day"),
    ),
    responses=(200, 400, 503),
)
async def usage_report() -> dict[str, Any]:
    state = current_services()
    usage = state.usage
    if usage is None or usage.ledger is None:
        raise ServiceUnavailable("usage accounting is not available until the server has started")
    now = time.time()
    group_by = request.args.get("group_by") or "agent"
    if group_by not in GROUP_BY:
        raise BadRequest(
            f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}",
            details={"parameter": "group_by", "allowed": list(GROUP_BY)},
        )
    where = UsageFilter(
        since=parse_time("since", request.args.get("since"), now=now),
        until=parse_time("until", request.args.get("until"), now=now),
        agent=_name_arg("agent"),
        key=_name_arg("key"),
    )
    groups, totals = await usage.ledger.report(where, cast("GroupBy", group_by))
    return {
        "since": None if where.since is None else iso(where.since),
        "until": None if where.until is None else iso(where.until),
        "group_by": group_by,
        "filters": {"agent": where.agent, "key": where.key},
        "groups": [{"group": name, **sums.to_json()} for name, sums in groups],
        "totals": totals.to_json(),
        "budgets": await _budgets(now),
    }


async def _budgets(now: float) -> list[dict[str, Any]]:
    """Every budget set (agents' [performance], keys in the key file) with today's use."""
    state = current_services()
    usage = state.usage
    assert usage is not None
    assert usage.ledger is not None
    found: list[Budget] = []
    for name in sorted(state.table.state.agents):
        instance = _instance_budget(state, name)
        if instance is not None and instance.limited:
            found.append(instance)
    ring = state.security.keys
    for entry in ring.entries if ring is not None else ():
        budget = usage.key_budget(entry.name)
        if budget is not None and budget.limited:
            found.append(budget)
    day = day_of(now)
    answer = []
    for budget in found:
        if budget.scope == "agent":
            spent = await usage.ledger.spent_on(day, agent=budget.name)
        else:
            spent = await usage.ledger.spent_on(day, key=budget.name)
        answer.append(
            {**budget.to_json(), "used_today": spent.to_json(), "resets_at": iso(next_reset(now))}
        )
    return answer


def _instance_budget(state: Services, name: str) -> Budget | None:
    """The budget of the version serving ``name`` (config agents only), if any."""
    from caxton.agents.config_agent import ConfigAgentInstance

    table = state.table
    agent = table.state.agents.get(name)
    entry = agent.active_entry if agent is not None else None
    version = table.versions.get((name, entry.revision)) if entry is not None else None
    instance = version.instance if version is not None else None
    return instance.budget if isinstance(instance, ConfigAgentInstance) else None
