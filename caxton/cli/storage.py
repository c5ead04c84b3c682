"""``caxton storage verify [--comprehensive]``: check the stored data (exit 0 sound, 1 not).

Asks the running server (``GET /api/v1/admin/storage/verify``); when none answers and the
configuration is known, opens the DuckDB file of the stopped server read-only instead.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from caxton.cli.client import ApiClient, resolve_base_url
from caxton.cli.offline import load_offline_config, server_unreachable
from caxton.cli.output import emit_json, output_option, table
from caxton.errors import ClientError


@click.group()
def storage() -> None:
    """Check the database, the model files and the search index."""


def _offline(ctx: click.Context, config_file: str | None, url: str, comprehensive: bool) -> Any:
    from caxton.datadir import holder_pid
    from caxton.memory import MEMORY_MIGRATIONS
    from caxton.messaging import CONVERSATION_MIGRATIONS
    from caxton.ops.verify import verify_files

    config, _ = load_offline_config(ctx, config_file, url=url, what="verify storage")
    pid = holder_pid(config.data_dir)
    if pid is not None:
        raise server_unreachable(url, config.data_dir, pid)
    click.echo(
        f"the server at {url} is not reachable; checking the files of {config.data_dir}", err=True
    )
    report = verify_files(
        config,
        comprehensive=comprehensive,
        migrations=(*MEMORY_MIGRATIONS, *CONVERSATION_MIGRATIONS),
    )
    return report.to_json()


@storage.command()
@click.option(
    "--comprehensive",
    is_flag=True,
    help="Read every row of every table and compare the HNSW index with every vector.",
)
@click.option(
    "--config",
    "config_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="caxton.yaml, to check the files when the server is stopped (default: caxton "
    "--config, CAXTON_CONFIG_PATH).",
)
@output_option
@click.pass_context
def verify(ctx: click.Context, comprehensive: bool, config_file: str | None, output: str) -> None:
    """Check the database (tables readable, orphans, embeddings), model files and index."""
    root = ctx.find_root().obj or {}
    # this command's --config also names the server to ask, as the group's option does
    url = resolve_base_url(root.get("url"), config_file or root.get("config_path"))
    client = ApiClient(url, timeout_s=600)
    params = {"comprehensive": "true" if comprehensive else "false"}
    try:
        data = client.json("GET", "/api/v1/admin/storage/verify", params=params)
    except ClientError as exc:
        if "cannot connect" not in exc.message:
            raise
        data = _offline(ctx, config_file, client.base_url, comprehensive)
    if output == "json":
        emit_json(data)
    else:
        rows = [[f["severity"], f["check"], f["message"]] for f in data["findings"]]
        click.echo(table(["severity", "check", "finding"], rows))
        tables = ", ".join(f"{name} {rows}" for name, rows in data["tables"].items())
        click.echo(f"\ntables: {tables or '-'}")
        verdict = "OK" if data["ok"] else "PROBLEMS FOUND"
        click.echo(
            f"{verdict}: {data['errors']} errors, {data['warnings']} warnings "
            f"({'comprehensive' if data['comprehensive'] else 'quick'} check of "
            f"{data['database']}, from the {data['source']})",
            err=not data["ok"],
        )
    if not data["ok"]:
        sys.exit(1)
