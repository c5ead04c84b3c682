"""``caxton safe-mode [--enable | --disable]``: refuse every change while keeping agents up.

Talks to the running server (``GET|POST /api/v1/admin/safe-mode``). When no server answers
and the configuration is known, ``--enable``/``--disable`` write the flag in data_dir, so the
next start comes up in (or out of) safe mode; with ``storage.backend: postgres`` they write the
row every instance shares, and the running ones apply it at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from caxton.cli.client import api_client
from caxton.cli.offline import load_offline_config, server_unreachable
from caxton.cli.output import emit_json, key_values, output_option
from caxton.errors import ClientError

if TYPE_CHECKING:
    from caxton.config import CaxtonConfig


def _offline(ctx: click.Context, url: str, enable: bool | None, reason: str | None) -> Any:
    from caxton.datadir import holder_pid
    from caxton.ops import safe_mode

    config, _ = load_offline_config(ctx, None, url=url, what="switch safe mode")
    pid = holder_pid(config.data_dir)
    if pid is not None:
        raise server_unreachable(url, config.data_dir, pid)
    if config.storage.backend == "postgres":
        return _in_postgres(config, url, enable, reason)
    if enable is None:
        status = safe_mode.read_flag(config.data_dir)
    else:
        status = safe_mode.enabled_now(reason) if enable else safe_mode.OFF
        safe_mode.write_flag(config.data_dir, status)
    click.echo(
        f"the server at {url} is not reachable; the flag in {config.data_dir} applies at its "
        "next start",
        err=True,
    )
    return {**status.to_json(), "source": "files"}


def _in_postgres(
    config: CaxtonConfig, url: str, enable: bool | None, reason: str | None
) -> dict[str, Any]:
    """Read or switch the flag every instance shares, in PostgreSQL; running instances hear
    of the change at once (the same notice a server sends)."""
    import trio

    from caxton.cluster import DEFAULT_CHANNEL, notify
    from caxton.ops import safe_mode
    from caxton.store.postgres import open_postgres_store, redact

    settings = config.storage.postgres

    async def switch() -> safe_mode.SafeModeStatus:
        async with open_postgres_store(
            settings.url,
            migrations=safe_mode.SAFE_MODE_POSTGRES_MIGRATIONS,
            pool_size=1,
            connect_timeout_s=settings.connect_timeout,
        ) as store:
            flag = safe_mode.PostgresSafeModeFlag(
                store,
                notify=lambda conn: notify(
                    conn, "safe_mode", {}, sender="cli", channel=DEFAULT_CHANNEL
                ),
            )
            if enable is None:
                return await flag.read()
            status = safe_mode.enabled_now(reason) if enable else safe_mode.OFF
            await flag.write(status)
            return status

    status = trio.run(switch)
    click.echo(
        f"the server at {url} is not reachable; the flag in {redact(settings.url)} holds for "
        "every instance on that database",
        err=True,
    )
    return {**status.to_json(), "source": "database"}


@click.command("safe-mode")
@click.option("--enable/--disable", "enable", default=None, help="Turn safe mode on or off.")
@click.option("--reason", default=None, help="Why (shown in the status and in refusals).")
@output_option
@click.pass_context
def safe_mode(ctx: click.Context, enable: bool | None, reason: str | None, output: str) -> None:
    """Show safe mode, or turn it on (--enable) or off (--disable).

    In safe mode every call that would change state is refused with 503 SAFE_MODE, while
    reads and messages to agents keep working and agents_dir changes are held. It survives
    restarts until disabled.
    """

    client = api_client(ctx)
    try:
        if enable is None:
            data = client.json("GET", "/api/v1/admin/safe-mode")
        else:
            body: dict[str, Any] = {"enabled": enable}
            if reason:
                body["reason"] = reason
            data = client.json("POST", "/api/v1/admin/safe-mode", json=body)
        data["source"] = "server"
    except ClientError as exc:
        if "cannot connect" not in exc.message:
            raise
        data = _offline(ctx, client.base_url, enable, reason)
    if output == "json":
        emit_json(data)
        return
    state = "enabled" if data["enabled"] else "disabled"
    pairs: list[tuple[str, object]] = [("safe mode", state)]
    if data["enabled"]:
        pairs += [("since", data.get("since") or "-"), ("reason", data.get("reason") or "-")]
    click.echo(key_values(pairs))
