"""``caxton usage``: LLM tokens and cost, and the budgets in force (issue #18).

Asks the running server (``GET /api/v1/usage``) and prints one row per group, a total row,
then the budgets with what they have used today and when they reset.
"""

from __future__ import annotations

from typing import Any

import click

from caxton.cli.client import api_client
from caxton.cli.output import emit, output_option, table

_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _sums(item: dict[str, Any]) -> tuple[Any, ...]:
    return (
        item.get("calls"),
        *(item.get(kind) for kind in _KINDS),
        item.get("total_tokens"),
        f"{float(item.get('cost') or 0):.6f}",
    )


def _cap(value: Any, used: Any) -> str:
    return "-" if value is None else f"{used}/{value}"


def render_usage(data: dict[str, Any]) -> str:
    """The answer of ``GET /api/v1/usage`` for people."""
    group_by = str(data.get("group_by", "agent"))
    span = f"{data.get('since') or 'the start'} .. {data.get('until') or 'now'}"
    head = [group_by, "calls", "input", "output", "cache_read", "cache_write", "total", "cost"]
    rows = [(item.get("group"), *_sums(item)) for item in data.get("groups") or []]
    rows.append(("TOTAL", *_sums(data.get("totals") or {})))
    parts = [f"usage {span}, by {group_by}", table(head, rows)]
    budgets = data.get("budgets") or []
    if budgets:
        budget_rows = []
        for budget in budgets:
            used = budget.get("used_today") or {}
            cost = f"{float(used.get('cost') or 0):.6f}"
            budget_rows.append(
                (
                    budget.get("scope"),
                    budget.get("name"),
                    _cap(budget.get("max_tokens_per_day"), used.get("total_tokens")),
                    _cap(budget.get("max_cost_per_day"), cost),
                    budget.get("resets_at"),
                )
            )
        parts.append("budgets (today)")
        parts.append(table(["scope", "name", "tokens", "cost", "resets"], budget_rows))
    return "\n".join(parts)


@click.command()
@click.option("--since", default=None, help="ISO 8601 date/time, or a duration back (24h, 7d).")
@click.option("--until", default=None, help="ISO 8601 date/time, or a duration back.")
@click.option("--agent", default=None, help="Only this agent's calls.")
@click.option("--key", default=None, help="Only this caller's calls (API key name or subject).")
@click.option(
    "--group-by",
    type=click.Choice(["agent", "key", "model", "day"]),
    default="agent",
    show_default=True,
    help="One row per agent, key, model or day.",
)
@output_option
@click.pass_context
def usage(
    ctx: click.Context,
    since: str | None,
    until: str | None,
    agent: str | None,
    key: str | None,
    group_by: str,
    output: str,
) -> None:
    """Show LLM tokens (input, output, cache read, cache write) and cost, with budgets."""
    params = {
        name: value
        for name, value in (
            ("since", since),
            ("until", until),
            ("agent", agent),
            ("key", key),
            ("group_by", group_by),
        )
        if value is not None
    }
    data = api_client(ctx).json("GET", "/api/v1/usage", params=params)
    emit(output, data, render_usage)
