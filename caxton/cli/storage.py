"""``caxton storage verify [--comprehensive]``: check the stored data (exit 0 sound, 1 not).
``caxton storage migrate --to URL``: copy a stopped embedded server into PostgreSQL.

``verify`` asks the running server (``GET /api/v1/admin/storage/verify``); when none answers and
the configuration is known, opens the DuckDB file of the stopped server read-only instead.
``migrate`` works on the files alone (:mod:`caxton.ops.migrate`).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from caxton.cli.client import ApiClient, resolve_base_url
from caxton.cli.offline import config_path, load_offline_config, server_unreachable
from caxton.cli.output import F, emit_json, output_option, table
from caxton.errors import ClientError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from caxton.config.model import PostgresConfig
    from caxton.ops.migrate import CountedCopy, MigrationSource, Progress, Step

T = TypeVar("T")


@click.group()
def storage() -> None:
    """Check the database, the model files and the search index."""


def _offline(ctx: click.Context, config_file: str | None, url: str, comprehensive: bool) -> Any:
    from caxton.datadir import holder_pid
    from caxton.ops.schema import embedded_migrations
    from caxton.ops.verify import verify_files, verify_qdrant_offline, with_findings

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
        migrations=embedded_migrations(),
    )
    if config.memory.backend == "qdrant":
        report = with_findings(report, verify_qdrant_offline(config))
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


class _Bars:
    """One progress bar per kind on stderr (on a terminal; elsewhere each kind's label once)."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._kind = ""
        self._done = 0
        self._bar: Any = None

    def __call__(self, step: Step) -> None:
        if step.kind != self._kind:
            self.close()
            self._kind, self._done = step.kind, 0
            self._bar = self._stack.enter_context(
                click.progressbar(
                    length=step.total, label=f"copying {step.kind}", file=sys.stderr, width=30
                )
            )
        self._bar.update(step.done - self._done)
        self._done = step.done

    def close(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()


def migration_source(
    ctx: click.Context, config_file: str | None, data_dir: Path | None
) -> tuple[MigrationSource, PostgresConfig]:
    """The source's data_dir and DuckDB file, and the configuration's PostgreSQL settings."""
    from caxton.config import load_config
    from caxton.ops.migrate import MigrationSource

    config = load_config(config_path(ctx, config_file)).config
    if data_dir is None:
        source = MigrationSource(data_dir=config.data_dir, database_path=config.database_path)
    else:
        folder = data_dir.expanduser().absolute()
        database = Path(config.memory.database_path).expanduser()
        source = MigrationSource(
            data_dir=folder,
            database_path=database if database.is_absolute() else folder / database,
        )
    return source, config.storage.postgres


def migration_options(*, server: str, batch_size: int, batch_help: str) -> Callable[[F], F]:
    """The options every ``migrate`` command ends with: ``--data-dir`` and ``--config`` of the
    stopped ``server``, ``--batch-size`` and ``--output`` (and the click context)."""
    options = (
        click.option(
            "--data-dir",
            "data_dir",
            default=None,
            type=click.Path(file_okay=False, path_type=Path),
            help=f"The stopped {server}'s data_dir (default: server.data_dir of the "
            "configuration).",
        ),
        click.option(
            "--config",
            "config_file",
            default=None,
            type=click.Path(dir_okay=False),
            help=f"caxton.yaml of the {server} (default: caxton --config, CAXTON_CONFIG_PATH).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 100_000),
            default=batch_size,
            show_default=True,
            help=batch_help,
        ),
        output_option,
        click.pass_context,
    )

    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def _quiet(step: Step) -> None:
    del step


def run_migration(copy: Callable[[Progress], Awaitable[T]], output: str) -> T:
    """Run ``copy(progress)`` under trio, with a progress bar per kind on stderr (none for
    ``--output json``)."""
    import trio

    bars = _Bars()
    try:
        return trio.run(copy, bars if output != "json" else _quiet)
    finally:
        bars.close()


def finish_migration(
    report: CountedCopy, output: str, *, done: str, notes: Sequence[str] = ()
) -> None:
    """Print ``report``: its JSON, or the table of its counts, the ``notes``, then ``done``
    when every count matches, else each mismatch on stderr; exit 1 unless it is verified."""
    if output == "json":
        emit_json(report.to_json())
    else:
        rows = [
            [c.kind, c.source, c.target, c.copied, c.skipped, "ok" if c.matches else "DIFFERS"]
            for c in report.counts
        ]
        click.echo(table(["kind", "source", "target", "copied", "skipped", "check"], rows))
        for note in notes:
            click.echo(note)
        if report.verified:
            click.echo(done, nl=False)
        else:
            click.echo(f"the counts of {report.target} do not match the source:", err=True)
            for line in report.mismatches:
                click.echo(f"  - {line}", err=True)
    if not report.verified:
        sys.exit(1)


@storage.command()
@click.option(
    "--to",
    "url",
    envvar="CAXTON_DATABASE_URL",
    default=None,
    help="The target, postgresql://user:password@host:5432/dbname (env CAXTON_DATABASE_URL; "
    "default: storage.postgres.url of the configuration).",
)
@migration_options(
    server="embedded server",
    batch_size=500,
    batch_help="Entities, relations or conversations per transaction.",
)
def migrate(
    ctx: click.Context,
    url: str | None,
    data_dir: Path | None,
    config_file: str | None,
    batch_size: int,
    output: str,
) -> None:
    """Copy a stopped embedded server (memory, conversations, deployed agents, LLM usage,
    safe mode) into PostgreSQL, then compare the counts (exit 1 when they differ).

    Embeddings are copied as stored, never recomputed. Safe to run again: an interrupted run
    is completed, and nothing is duplicated. The target is migrated first.
    """
    import psycopg.conninfo

    from caxton.ops.migrate import migrate as copy
    from caxton.store.postgres import redact

    source, settings = migration_source(ctx, config_file, data_dir)
    url = url or settings.url
    if not url:
        raise ClientError(
            "name the PostgreSQL database to migrate to: caxton storage migrate --to "
            "postgresql://user:password@host:5432/dbname (or set CAXTON_DATABASE_URL)"
        )
    if not url.startswith(("postgresql://", "postgres://")):
        raise ClientError(
            f"--to must be a postgresql:// URL, got {redact(url)!r}: "
            "postgresql://user:password@host:5432/dbname"
        )
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        # libpq's message may quote the password: say only that it does not parse
        raise ClientError(
            "--to is not a URL libpq can parse (a space, or a stray % or @ in the password? "
            "percent-encode them): postgresql://user:password@host:5432/dbname"
        ) from None
    report = run_migration(
        lambda progress: copy(
            source,
            url,
            batch_size=batch_size,
            connect_timeout_s=settings.connect_timeout,
            statement_timeout_s=settings.statement_timeout,
            progress=progress,
        ),
        output,
    )
    finish_migration(
        report,
        output,
        done=f"migrated {report.data_dir} to {report.target} in {report.seconds:.1f}s; "
        "every count matches\n",
        notes=["safe mode is on in the source, and now in the target too"]
        if report.safe_mode
        else (),
    )
