"""``caxton token issue``: sign a JWT bearer token with the server's HS256 secret.

The secret is ``security.authentication.jwt_secret_file`` of the configuration (``--config`` or
``CAXTON_CONFIG_PATH``) or ``--secret-file``; whoever can read it can issue tokens for any role,
so keep it readable by the server's user (and its administrators) only.
"""

from __future__ import annotations

import time

import click

from caxton.cli.keys import (
    ROLE_CHOICE,
    config_option,
    configured_file,
    given_file,
    load_server_config,
)
from caxton.cli.output import emit_json, output_option


@click.group()
def token() -> None:
    """Issue JWT bearer tokens."""


@token.command()
@click.option("--subject", "--sub", "subject", required=True, help="Who the token is for (sub).")
@click.option("--role", required=True, type=ROLE_CHOICE, help="What the token may do.")
@click.option(
    "--expiry",
    default=None,
    help="Lifetime such as 1h or 30m (default: security.authentication.token_expiry).",
)
@click.option(
    "--secret-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="The HS256 secret (default: security.authentication.jwt_secret_file of --config).",
)
@config_option
@output_option
@click.pass_context
def issue(
    ctx: click.Context,
    subject: str,
    role: str,
    expiry: str | None,
    secret_file: str | None,
    config_path: str | None,
    output: str,
) -> None:
    """Print a signed token (send it as `Authorization: Bearer <token>`)."""
    from caxton.security.roles import parse_role
    from caxton.security.tokens import issue_token, load_secret
    from caxton.units import parse_duration

    expiry_s: float | None = None
    if expiry is not None:
        try:
            expiry_s = parse_duration(expiry)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expiry") from None
    if secret_file:
        secret_path = given_file(secret_file)
    else:
        config = load_server_config(ctx, config_path)
        secret_path = configured_file(
            config,
            config.security.authentication.jwt_secret_file,
            key="security.authentication.jwt_secret_file",
            option="--secret-file",
        )
        if expiry_s is None:
            expiry_s = float(config.security.authentication.token_expiry)
    if expiry_s is None:
        expiry_s = 86_400.0
    if expiry_s <= 0:
        raise click.BadParameter("must be longer than 0s", param_hint="--expiry")
    now = time.time()
    try:
        signed = issue_token(
            load_secret(secret_path),
            subject=subject,
            role=parse_role(role),
            now=now,
            expiry_s=expiry_s,
        )
    except ValueError as exc:  # a lifetime over the maximum a server accepts
        raise click.BadParameter(str(exc), param_hint="--expiry") from None
    if output == "json":
        emit_json(
            {
                "token": signed,
                "subject": subject,
                "role": role.lower(),
                "expires_at": int(now) + int(expiry_s),
            }
        )
        return
    click.echo(signed)
