"""``caxton conversations list | show ID | close ID``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from caxton.cli.client import api_client
from caxton.cli.message import content_cell
from caxton.cli.output import emit, emit_json, key_values, output_option, table


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group()
def conversations() -> None:
    """Inspect the conversations agents and clients have had."""


@conversations.command("list")
@click.option("--status", type=click.Choice(["active", "closed"]), default=None)
@click.option("--agent", default=None, help="Only conversations this agent took part in.")
@click.option("--limit", type=int, default=100, show_default=True)
@output_option
@click.pass_context
def list_conversations(
    ctx: click.Context, status: str | None, agent: str | None, limit: int, output: str
) -> None:
    """List conversations, most recently active first."""
    params: dict[str, Any] = {"limit": limit}
    params.update({k: v for k, v in (("status", status), ("agent", agent)) if v})
    data = api_client(ctx).json("GET", "/api/v1/conversations", params=params)
    if output == "json":
        emit_json(data)
        return
    rows = [
        [
            c["conversation_id"],
            c["status"],
            c["message_count"],
            ",".join(c["participants"]),
            _when(c["last_activity"]),
        ]
        for c in data["conversations"]
    ]
    click.echo(table(["id", "status", "messages", "participants", "last activity"], rows))


def _destination(message: dict[str, Any]) -> str:
    if message.get("capability"):
        return f"[{message['capability']}]"
    return str(message.get("receiver") or "-")


@conversations.command()
@click.argument("conversation_id")
@output_option
@click.pass_context
def show(ctx: click.Context, conversation_id: str, output: str) -> None:
    """Show a conversation: who said what to whom, in order."""
    data = api_client(ctx).json("GET", f"/api/v1/conversations/{conversation_id}")
    if output == "json":
        emit_json(data)
        return
    click.echo(
        key_values(
            [
                ("conversation", data["conversation_id"]),
                ("status", data["status"]),
                ("participants", ", ".join(data["participants"])),
                ("messages", data["message_count"]),
                ("last activity", _when(data["last_activity"])),
            ]
        )
    )
    click.echo()
    rows = [
        [
            i,
            m["performative"],
            m.get("sender") or "-",
            _destination(m),
            _short(content_cell(m["content"])),
        ]
        for i, m in enumerate(data["messages"], start=1)
    ]
    click.echo(table(["#", "performative", "from", "to", "content"], rows))


@conversations.command()
@click.argument("conversation_id")
@output_option
@click.pass_context
def close(ctx: click.Context, conversation_id: str, output: str) -> None:
    """Close a conversation; further messages in it are refused."""
    data = api_client(ctx).json("POST", f"/api/v1/conversations/{conversation_id}/close")
    emit(output, data, lambda d: f"closed conversation {d['conversation_id']}")
