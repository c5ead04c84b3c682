"""Helpers for commands that fall back to the files when the server is stopped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from caxton.errors import ClientError

if TYPE_CHECKING:
    import click

    from caxton.config import CaxtonConfig


def config_path(ctx: click.Context, own: str | None = None) -> Path | None:
    """The configuration file: the command's ``--config``, the group's, or the environment."""
    root = ctx.find_root().obj or {}
    value = own or root.get("config_path") or os.environ.get("CAXTON_CONFIG_PATH")
    return Path(value) if value else None


def load_offline_config(
    ctx: click.Context, own: str | None, *, url: str, what: str
) -> tuple[CaxtonConfig, Path | None]:
    """The configuration of a stopped server, or a ClientError that says how to name it."""
    from caxton.config import load_config

    path = config_path(ctx, own)
    if path is None:
        raise ClientError(
            f"cannot connect to the Caxton server at {url}; to {what} from the files of a "
            "stopped server, name its configuration: caxton --config caxton.yaml … (or set "
            "CAXTON_CONFIG_PATH)"
        )
    return load_config(path).config, path


def server_unreachable(url: str, data_dir: Path, pid: int) -> ClientError:
    """The error for a server that holds data_dir but does not answer at ``url``."""
    return ClientError(
        f"a Caxton server (pid {pid}) holds data_dir {data_dir} but does not answer at {url}; "
        "point --url (or CAXTON_URL) at it, or stop it first"
    )
