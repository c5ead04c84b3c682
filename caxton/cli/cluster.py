"""``caxton cluster status [--output json]``: the instances sharing the server's database.

Asks the running server (``GET /api/v1/cluster``): with ``storage.backend: postgres`` every
instance whose heartbeat is recent, with the embedded backend that server alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from caxton.cli.client import api_client
from caxton.cli.output import emit, output_option, table


@click.group()
def cluster() -> None:
    """Show the instances of a cluster (servers sharing one PostgreSQL database)."""


def _ago(stamp: object, now: dt.datetime) -> str:
    """``2026-01-02T03:04:05+00:00`` -> ``1.5s ago`` (the stamp itself when unparsable)."""
    if not isinstance(stamp, str):
        return "-"
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = max(0.0, (now - when).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def render_status(data: dict[str, Any], now: dt.datetime | None = None) -> str:
    """The answer of ``GET /api/v1/cluster`` for people: a header line and one row per
    instance, the one that answered marked with ``*``."""
    now = now or dt.datetime.now(dt.UTC)
    instances = data.get("instances") or []
    header = (
        f"backend: {data.get('backend', '-')}  instances: {len(instances)}  "
        f"answered by: {data.get('instance', '-')}"
    )
    rows = [
        (
            ("* " if item.get("self") else "  ") + str(item.get("id", "-")),
            item.get("address"),
            item.get("version"),
            item.get("agents"),
            item.get("started_at"),
            _ago(item.get("last_heartbeat"), now),
        )
        for item in instances
    ]
    body = table(["  id", "address", "version", "agents", "started", "heartbeat"], rows)
    return f"{header}\n{body}"


@cluster.command("status")
@output_option
@click.pass_context
def status(ctx: click.Context, output: str) -> None:
    """Show the live instances: id, address, version, agents and last heartbeat.

    The instance that answered is marked with *. An instance that stopped without saying so
    drops out after three missed heartbeats.
    """
    data = api_client(ctx).json("GET", "/api/v1/cluster")
    emit(output, data, render_status)
