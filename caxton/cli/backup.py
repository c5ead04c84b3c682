"""``caxton backup create | restore | verify``.

``create`` asks the running server (``POST /api/v1/admin/backup``): without ``--output`` the
server writes the archive under its ``data_dir/backups/`` and the path is printed; with
``--output F`` the archive is streamed back, checked against its manifest and saved as ``F``.
When no server answers and the configuration is known, the archive is made from the files,
holding the data_dir lock so no server starts meanwhile. ``restore`` works only on a stopped
server's files; ``verify`` checks an archive without touching anything.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from caxton.cli.client import ApiClient, api_client
from caxton.cli.files import replacing
from caxton.cli.offline import config_path, load_offline_config, server_unreachable
from caxton.cli.output import byte_size, emit, emit_json, key_values, output_option
from caxton.errors import ClientError


@click.group()
def backup() -> None:
    """Back up and restore the database, deployed agents, agents_dir and configuration."""


def _download(client: ApiClient, destination: Path) -> dict[str, Any]:
    """Stream a fresh backup from the server into ``destination`` (checked, then renamed)."""
    from caxton.ops import archive

    destination.parent.mkdir(parents=True, exist_ok=True)
    with replacing(destination) as partial:
        with client.stream("POST", "/api/v1/admin/backup", json={"download": True}) as response:
            expected = response.headers.get("X-Caxton-Backup-Sha256")
            for chunk in response.iter_bytes():
                partial.file.write(chunk)
        partial.finish()
        with partial.path.open("rb") as check:
            digest, size = archive.sha256_stream(check)
        if expected and digest != expected:
            raise ClientError(
                f"the backup from {client.base_url} arrived damaged (SHA-256 {digest}, the "
                f"server sent {expected}); try again"
            )
        manifest = archive.verify_archive(partial.path)
    return {
        "path": str(destination),
        "size_bytes": size,
        "sha256": digest,
        "created_at": manifest.created_at,
        "version": manifest.version,
        "files": len(manifest.files),
        "source": "server",
    }


def _create_offline(ctx: click.Context, url: str, output: Path | None) -> dict[str, Any]:
    from caxton.datadir import hold_offline, holder_pid
    from caxton.ops.backup import BackupSources, create_offline, default_destination

    config, path = load_offline_config(ctx, None, url=url, what="back up")
    pid = holder_pid(config.data_dir)
    if pid is not None:
        raise server_unreachable(url, config.data_dir, pid)
    click.echo(f"the server at {url} is not reachable; backing up the files instead", err=True)
    now = dt.datetime.now(dt.UTC)
    destination = (output or default_destination(config.data_dir, now)).absolute()
    # the operator's own command may create the folder; the file itself must be new
    destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with hold_offline(config.data_dir):
        report = create_offline(BackupSources.from_config(config, path), destination, now)
    return report.to_json()


@backup.command()
@click.option(
    "--output",
    "destination",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the archive here (streamed from the server); default: the server writes it "
    "under its data_dir/backups/.",
)
@click.option(
    "--report",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="How to print the summary (--output names the file here, as in the seed).",
)
@click.pass_context
def create(ctx: click.Context, destination: Path | None, report: str) -> None:
    """Take a consistent backup while the server runs (no stop needed).

    The archive (tar.gz) holds the DuckDB database, its HNSW index when present, the agents
    deployed through the API, agents_dir and the configuration file, with a manifest of
    SHA-256 sums. With a stopped server and a known configuration (--config or
    CAXTON_CONFIG_PATH) it is made from the files.
    """
    client = api_client(ctx, timeout_s=600)
    started = time.monotonic()
    try:
        if destination is not None:
            result = _download(client, destination.absolute())
        else:
            result = client.json("POST", "/api/v1/admin/backup", json={})
    except httpx.ConnectError:
        result = _create_offline(ctx, client.base_url, destination)
    except ClientError as exc:
        if "cannot connect" not in exc.message:
            raise
        result = _create_offline(ctx, client.base_url, destination)
    result.setdefault("seconds", round(time.monotonic() - started, 3))
    if report == "json":
        emit_json(result)
    else:
        click.echo(
            f"backup written to {result['path']} ({byte_size(result['size_bytes'])}, "
            f"{result['files']} files, sha256 {result['sha256'][:16]}…)"
        )


@backup.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@output_option
def verify(file: Path, output: str) -> None:
    """Check an archive against its manifest and checksums (exit 0 sound, 1 not)."""
    from caxton.ops import archive
    from caxton.ops.errors import ArchiveInvalid

    try:
        manifest = archive.verify_archive(file)
    except ArchiveInvalid as exc:
        damaged = {"ok": False, "archive": str(file), "problems": list(exc.problems)}
        emit(output, damaged, exc.message, err=True)
        sys.exit(1)
    counts: dict[str, int] = {}
    for entry in manifest.files:
        counts[entry.area] = counts.get(entry.area, 0) + 1
    summary = {
        "ok": True,
        "archive": str(file),
        "created_at": manifest.created_at,
        "version": manifest.version,
        "files": len(manifest.files),
        "files_by_area": counts,
        "content_bytes": manifest.total_bytes,
        "sources": manifest.sources,
    }
    if output == "json":
        emit_json(summary)
        return
    click.echo(
        key_values(
            [
                ("archive", file),
                ("created", manifest.created_at),
                ("caxton version", manifest.version),
                ("files", ", ".join(f"{area} {n}" for area, n in sorted(counts.items()))),
                ("content", byte_size(manifest.total_bytes)),
                ("checksums", "ok"),
            ]
        )
    )


@backup.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="caxton.yaml of the server to restore (default: caxton --config, CAXTON_CONFIG_PATH).",
)
@click.option(
    "--agents-dir",
    "replace_agents",
    is_flag=True,
    help="Also replace agents_dir's files when they differ from the backup's (they are moved "
    "aside first); without it a non-empty agents_dir is kept.",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0, 3600),
    default=0.0,
    show_default=True,
    help="Seconds to wait for a stopping server to release data_dir.",
)
@output_option
@click.pass_context
def restore(
    ctx: click.Context,
    file: Path,
    config_file: str | None,
    replace_agents: bool,
    wait_s: float,
    output: str,
) -> None:
    """Restore a backup into a stopped server's data_dir (refused while it runs).

    The archive is checked first (a damaged one changes nothing); the files it replaces are
    moved to data_dir/before-restore-<timestamp>/; then the database, the deployed agents and
    (when agents_dir is empty, or with --agents-dir) agents_dir are put back.
    """
    from caxton.config import load_config
    from caxton.ops.restore import AgentsAction
    from caxton.ops.restore import restore as run_restore

    path = config_path(ctx, config_file)
    config = load_config(path).config
    report = run_restore(
        file.absolute(),
        data_dir=config.data_dir,
        database_path=config.database_path,
        agents_dir=config.agents_dir,
        replace_agents=replace_agents,
        wait_s=wait_s,
    )
    if output == "json":
        emit_json(report.to_json())
        return
    click.echo(
        f"restored {file} (taken {report.manifest.created_at}, Caxton {report.manifest.version})"
    )
    click.echo(f"  database: {config.database_path}")
    click.echo(f"  files restored: {len(report.restored)}")
    if report.aside_dir is not None:
        click.echo(f"previous files moved to {report.aside_dir}")
    if report.agents is AgentsAction.KEPT:
        click.echo(
            f"agents_dir {report.agents_dir} holds other files than the backup and was kept; "
            "add --agents-dir to replace them",
            err=True,
        )
    elif report.agents is AgentsAction.UNCHANGED:
        click.echo(f"agents_dir {report.agents_dir} already matches the backup")
