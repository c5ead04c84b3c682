"""``caxton message send``: one FIPA message, routed by receiver or capability."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from caxton.cli.client import api_client
from caxton.cli.output import emit_json, key_values, output_option
from caxton.messages import PERFORMATIVES, content_of


def content_cell(content: object) -> str:
    return content if isinstance(content, str) else json.dumps(content)


@click.group()
def message() -> None:
    """Send FIPA messages to agents."""


@message.command()
@click.option("--to", "receiver", default=None, help="The agent that receives the message.")
@click.option("--capability", default=None, help="Or: any agent that provides this capability.")
@click.option(
    "--performative",
    "-p",
    type=click.Choice(PERFORMATIVES),
    default="request",
    show_default=True,
    help="The FIPA performative.",
)
@click.option(
    "--content", "-c", required=True, help="Text, or a JSON object (when it parses as one)."
)
@click.option("--conversation", default=None, help="Continue this conversation id.")
@click.option("--reply-with", default=None, help="A tag the reply's in_reply_to will carry.")
@click.option("--in-reply-to", default=None, help="The message this one answers.")
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the reply."
)
@click.option("--no-wait", is_flag=True, help="Return at once with the conversation id.")
@output_option
@click.pass_context
def send(
    ctx: click.Context,
    receiver: str | None,
    capability: str | None,
    performative: str,
    content: str,
    conversation: str | None,
    reply_with: str | None,
    in_reply_to: str | None,
    timeout: float,
    no_wait: bool,
    output: str,
) -> None:
    """Send a message and print the reply (exit 1 when the reply is a failure)."""

    if (receiver is None) == (capability is None):
        raise click.UsageError("give exactly one of --to AGENT or --capability CAPABILITY")
    body: dict[str, Any] = {"performative": performative, "content": content_of(content)}
    extras = {
        "receiver": receiver,
        "capability": capability,
        "conversation_id": conversation,
        "reply_with": reply_with,
        "in_reply_to": in_reply_to,
    }
    body.update({k: v for k, v in extras.items() if v is not None})
    client = api_client(ctx, timeout_s=timeout + 5)
    params = {"wait": "false"} if no_wait else {"timeout": str(timeout)}
    reply = client.json("POST", "/api/v1/messages", json=body, params=params)
    if output == "json":
        emit_json(reply)
    elif no_wait:
        click.echo(
            key_values(
                [
                    ("accepted", "yes"),
                    ("conversation", reply["conversation_id"]),
                    ("message", reply["message_id"]),
                ]
            )
        )
    else:
        click.echo(
            key_values(
                [
                    ("conversation", reply["conversation_id"]),
                    ("from", reply["sender"]),
                    ("performative", reply["performative"]),
                    ("content", content_cell(reply["content"])),
                ]
            )
        )
    if not no_wait and reply.get("performative") == "failure":
        error = reply["content"].get("error", {}) if isinstance(reply["content"], dict) else {}
        click.echo(f"error: {error.get('message', 'the message failed')}", err=True)
        sys.exit(1)
