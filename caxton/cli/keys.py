"""``caxton keys create | list | revoke``: the API key file, edited in place.

These commands work on the file named by ``security.api_keys.key_file`` of the configuration
(``--config`` or ``CAXTON_CONFIG_PATH``), or on ``--key-file``; the server needs no restart, it
re-reads the file when it changes. A key is printed once, by ``create``; the file keeps only its
SHA-256 hash.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click

from caxton.cli.output import emit_json, output_option, table
from caxton.errors import ClientError

if TYPE_CHECKING:
    from caxton.config import CaxtonConfig

ROLE_CHOICE = click.Choice(["readonly", "user", "operator", "admin"], case_sensitive=False)


def config_option(func: Any) -> Any:
    return click.option(
        "--config",
        "config_path",
        envvar="CAXTON_CONFIG_PATH",
        default=None,
        type=click.Path(dir_okay=False),
        help="caxton.yaml naming the files (env CAXTON_CONFIG_PATH).",
    )(func)


def load_server_config(ctx: click.Context, config_path: str | None) -> CaxtonConfig:
    """The configuration of ``--config`` here, else the group's ``--config``."""
    from caxton.config import load_config

    path = config_path or (ctx.find_root().obj or {}).get("config_path")
    if not path:
        raise ClientError(
            "this command needs the server's configuration: pass --config caxton.yaml "
            "(or set CAXTON_CONFIG_PATH)"
        )
    return load_config(Path(path)).config


def given_file(path: str) -> Path:
    """A file named on the command line, as an absolute path (``~`` expanded)."""
    return Path(path).expanduser().absolute()


def configured_file(config: CaxtonConfig, named: str | None, *, key: str, option: str) -> Path:
    """The file the configuration names at ``key`` (``named``), resolved against it.

    Raises:
        ClientError: the configuration names none; the message points at ``option``.
    """
    if not named:
        raise ClientError(f"the configuration sets no {key}; set it, or pass {option}")
    return config.resolve_path(named)


def _key_file(ctx: click.Context, key_file: str | None, config_path: str | None) -> Path:
    if key_file:
        return given_file(key_file)
    config = load_server_config(ctx, config_path)
    return configured_file(
        config,
        config.security.api_keys.key_file,
        key="security.api_keys.key_file",
        option="--key-file",
    )


def key_file_option(func: Any) -> Any:
    return click.option(
        "--key-file",
        default=None,
        type=click.Path(dir_okay=False),
        help="The key file to edit (default: security.api_keys.key_file of --config).",
    )(func)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command()
@click.option("--name", required=True, help="Who or what the key is for (unique).")
@click.option("--role", required=True, type=ROLE_CHOICE, help="What the key may do.")
@click.option(
    "--max-tokens-per-day",
    type=click.IntRange(min=1),
    default=None,
    help="Daily LLM token budget of this key's calls (resets at UTC midnight).",
)
@click.option(
    "--max-cost-per-day",
    type=click.FloatRange(min=0),
    default=None,
    help="Daily LLM cost budget of this key's calls (priced by usage.prices).",
)
@key_file_option
@config_option
@output_option
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    role: str,
    max_tokens_per_day: int | None,
    max_cost_per_day: float | None,
    key_file: str | None,
    config_path: str | None,
    output: str,
) -> None:
    """Make a key, add its hash to the key file, and print the key (only this once)."""
    from caxton.security.keys import (
        NAME_PATTERN,
        KeyEntry,
        KeyRing,
        generate_key,
        hash_key,
        read_key_file,
        write_key_file,
    )
    from caxton.security.roles import parse_role

    path = _key_file(ctx, key_file, config_path)
    if not NAME_PATTERN.match(name):
        raise ClientError(f"name {name!r}: use letters, digits and . _ @ - (at most 64)")
    ring = read_key_file(path) if path.exists() else KeyRing(())
    if ring.named(name) is not None:
        raise ClientError(
            f"{path} already has a key named {name!r}; revoke it "
            f"(`caxton keys revoke {name}`) or choose another name"
        )
    key = generate_key()
    created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    entry = KeyEntry(
        name=name,
        role=parse_role(role),
        hash=hash_key(key),
        created=created,
        max_tokens_per_day=max_tokens_per_day,
        max_cost_per_day=max_cost_per_day,
    )
    write_key_file(path, KeyRing((*ring.entries, entry)))
    if output == "json":
        emit_json({"name": name, "role": role.lower(), "key": key, "key_file": str(path)})
        return
    click.echo(key)
    click.echo(
        f"key {name!r} ({role.lower()}) added to {path}; this is the only time it is shown",
        err=True,
    )


@keys.command("list")
@key_file_option
@config_option
@output_option
@click.pass_context
def list_keys(
    ctx: click.Context, key_file: str | None, config_path: str | None, output: str
) -> None:
    """List the keys of the key file (names, roles and states; never the keys)."""
    from caxton.security.keys import read_key_file
    from caxton.security.roles import role_name

    path = _key_file(ctx, key_file, config_path)
    ring = read_key_file(path)
    rows = [
        {
            "name": e.name,
            "role": role_name(e.role),
            "created": e.created,
            "revoked": e.revoked,
            "hash": e.hash[:19] + "…",
            "max_tokens_per_day": e.max_tokens_per_day,
            "max_cost_per_day": e.max_cost_per_day,
        }
        for e in ring.entries
    ]
    if output == "json":
        emit_json({"key_file": str(path), "keys": rows})
        return
    click.echo(
        table(
            ["name", "role", "created", "state", "hash"],
            [
                [
                    r["name"],
                    r["role"],
                    r["created"],
                    "revoked" if r["revoked"] else "active",
                    r["hash"],
                ]
                for r in rows
            ],
        )
    )


@keys.command()
@click.argument("name")
@key_file_option
@config_option
@click.pass_context
def revoke(ctx: click.Context, name: str, key_file: str | None, config_path: str | None) -> None:
    """Refuse key NAME from now on (the entry stays, marked revoked)."""
    from caxton.security.keys import KeyRing, read_key_file, write_key_file

    path = _key_file(ctx, key_file, config_path)
    ring = read_key_file(path)
    entry = ring.named(name)
    if entry is None:
        raise ClientError(f"{path} has no key named {name!r}; `caxton keys list` shows them")
    if entry.revoked:
        click.echo(f"key {name!r} was already revoked")
        sys.exit(0)
    entries = tuple(attrs.evolve(e, revoked=True) if e.name == name else e for e in ring.entries)
    write_key_file(path, KeyRing(entries))
    click.echo(f"key {name!r} revoked in {path}; a running server refuses it within a second")
