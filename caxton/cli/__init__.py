"""The ``caxton`` command line.

Exit codes: 0 success, 1 failure (an error is printed as one line, never a traceback),
2 usage errors (click's own). Runtime commands talk to a running server through
:class:`caxton.cli.client.ApiClient`.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import click

from caxton import __version__
from caxton.cli.client import api_client
from caxton.cli.output import emit, emit_json, key_values, output_option
from caxton.errors import CaxtonError, ClientError, ConfigError


class CaxtonGroup(click.Group):
    """Turns every :class:`CaxtonError` into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)
        except CaxtonError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)


@click.group(cls=CaxtonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="CAXTON_URL",
    default=None,
    help="Server URL for runtime commands (env CAXTON_URL; default from --config).",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="caxton.yaml to take the server address from (env CAXTON_CONFIG_PATH).",
)
@click.option(
    "--cacert",
    envvar="CAXTON_CACERT",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate (PEM) to verify an HTTPS server with (env CAXTON_CACERT).",
)
@click.version_option(__version__, "--version", prog_name="caxton")
@click.pass_context
def main(ctx: click.Context, url: str | None, config_path: str | None, cacert: str | None) -> None:
    """Caxton: a self-hosted multi-agent application server."""
    ctx.ensure_object(dict)
    ctx.obj["url"] = url
    ctx.obj["config_path"] = config_path
    ctx.obj["cacert"] = cacert


@main.command()
@click.option(
    "--config",
    "config_path",
    envvar="CAXTON_CONFIG_PATH",
    type=click.Path(dir_okay=False),
    help="caxton.yaml (env CAXTON_CONFIG_PATH; default: built-in defaults).",
)
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=int, default=None, help="Override server.port.")
@click.option("--data-dir", default=None, help="Override server.data_dir.")
@click.option("--agents-dir", default=None, help="Override server.agents_dir.")
@click.option("--metrics-port", type=int, default=None, help="Override observability.metrics_port.")
@click.option(
    "--log-level",
    type=click.Choice(["trace", "debug", "info", "warn", "warning", "error", "critical"]),
    default=None,
    help="Override logging.level.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Override server.workers (server processes on one port; needs storage.backend: postgres).",
)
@click.option("--worker-index", type=int, default=None, hidden=True)
def start(
    config_path: str | None,
    host: str | None,
    port: int | None,
    data_dir: str | None,
    agents_dir: str | None,
    metrics_port: int | None,
    log_level: str | None,
    workers: int | None,
    worker_index: int | None,
) -> None:
    """Start the server and run until SIGTERM or SIGINT (exit 0).

    With server.workers above 1 this process supervises that many server processes sharing
    the port (caxton.workers); --worker-index is how it starts each of them.
    """
    import trio

    from caxton.config import Override, load_config
    from caxton.datadir import SERVER_UMASK
    from caxton.logs import configure_logging
    from caxton.server import serve

    flags: list[Override] = []
    for path, value, flag in (
        (("server", "host"), host, "--host"),
        (("server", "port"), port, "--port"),
        (("server", "data_dir"), data_dir, "--data-dir"),
        (("server", "agents_dir"), agents_dir, "--agents-dir"),
        (("observability", "metrics_port"), metrics_port, "--metrics-port"),
        (("logging", "level"), log_level, "--log-level"),
        (("server", "workers"), workers, "--workers"),
    ):
        if value is not None:
            flags.append(Override(path, value, flag))
    loaded = load_config(Path(config_path) if config_path else None, overrides=flags)
    if worker_index is not None:
        from caxton.workers import tag_worker_logs, worker_overrides

        tag_worker_logs(worker_index)
        flags.extend(worker_overrides(loaded.config, worker_index))
        loaded = load_config(Path(config_path) if config_path else None, overrides=flags)
    config = loaded.config
    # everything the server writes (database, agent files, logs, backups) is its owner's only
    os.umask(SERVER_UMASK)
    log_file = config.resolve_path(config.logging.file) if config.logging.file else None
    configure_logging(config.logging, log_file=log_file)
    log = logging.getLogger("caxton.cli")
    for warning in loaded.warnings:
        log.warning("config: %s", warning)
    if config.server.workers > 1 and worker_index is None:
        from caxton.workers import supervise

        args = [] if config_path is None else ["--config", config_path]
        for override in flags:
            if override.origin != "--port":
                args.extend((override.origin, str(override.value)))
        sys.exit(0 if trio.run(supervise, loaded, args) else 1)
    trio.run(serve, loaded)


@main.command()
@click.option(
    "--config",
    "config_path",
    envvar="CAXTON_CONFIG_PATH",
    required=True,
    type=click.Path(dir_okay=False),
    help="The caxton.yaml to check.",
)
@output_option
def validate(config_path: str, output: str) -> None:
    """Check a configuration file without starting anything (exit 0 valid, 1 invalid)."""
    from caxton.config import load_config
    from caxton.config.checks import ineffective_settings, missing_files
    from caxton.security.checks import security_refusals

    path = Path(config_path)
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        invalid = {"valid": False, "errors": exc.problems, "warnings": []}
        emit(output, invalid, exc.message, err=True)
        sys.exit(1)
    warnings = [
        *loaded.warnings,
        *missing_files(loaded.config),
        *ineffective_settings(loaded.config),
        *(f"caxton start will refuse this file: {p}" for p in security_refusals(loaded.config)),
    ]
    if output == "json":
        emit_json({"valid": True, "errors": [], "warnings": warnings})
        return
    for warning in warnings:
        click.echo(f"warning: {warning}")
    click.echo(f"{path}: valid")


@main.command()
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds to wait for /ready to answer 200.",
)
@output_option
@click.pass_context
def health(ctx: click.Context, timeout: float, output: str) -> None:
    """Exit 0 when the server's /ready answers 200 within --timeout, else 1."""
    client = api_client(ctx, timeout_s=max(0.5, min(timeout, 5.0)))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = client.request("GET", "/ready")
            if response.status_code == 200:
                healthy = {"healthy": True, "url": client.base_url}
                emit(output, healthy, f"healthy: {client.base_url}")
                return
            last = f"HTTP {response.status_code}: {_error_message(response)}"
        except ClientError as exc:
            last = exc.message
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    unhealthy = {"healthy": False, "url": client.base_url, "reason": last}
    emit(output, unhealthy, f"unhealthy: {last}", err=True)
    sys.exit(1)


def _error_message(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(response.text[:200])


@main.command()
@output_option
def version(output: str) -> None:
    """Print the Caxton version."""
    info = {
        "version": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "executable": sys.executable,
        "pid": os.getpid(),
    }
    emit(output, info, lambda i: key_values([(k, v) for k, v in i.items() if k != "pid"]))


def _register() -> None:
    from caxton.cli.agents import agents, logs
    from caxton.cli.backup import backup
    from caxton.cli.chat import chat
    from caxton.cli.cluster import cluster
    from caxton.cli.conversations import conversations
    from caxton.cli.keys import keys
    from caxton.cli.mcp_proxy import mcp_command
    from caxton.cli.memory import memory
    from caxton.cli.message import message
    from caxton.cli.safe_mode import safe_mode
    from caxton.cli.storage import storage
    from caxton.cli.token import token
    from caxton.cli.usage import usage

    main.add_command(agents)
    main.add_command(logs)
    main.add_command(chat)
    main.add_command(message)
    main.add_command(conversations)
    main.add_command(keys)
    main.add_command(token)
    main.add_command(memory)
    main.add_command(backup)
    main.add_command(safe_mode)
    main.add_command(storage)
    main.add_command(cluster)
    main.add_command(usage)
    main.add_command(mcp_command)


_register()

__all__ = ["api_client", "main"]
