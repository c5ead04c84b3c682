"""Admin routes: safe mode, online backup, storage verification (DESIGN §7).

``refuse_in_safe_mode`` is the ``before_request`` hook that answers 503 ``SAFE_MODE`` to every
route declared ``mutating=True`` while safe mode is on, except the two routes an operator
needs during an incident: switching safe mode itself, and taking a backup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, current_app, request

from caxton.errors import CaxtonError, ValidationFailed
from caxton.http.params import optional_json_object
from caxton.http.routes import QueryParam, RouteTable
from caxton.http.state import current_services, declared_routes
from caxton.http.streaming import background_body
from caxton.ops.backup import archive_name
from caxton.ops.errors import BackupNotApplicable, SafeModeActive
from caxton.ops.safe_mode import refuses
from caxton.security.roles import Role
from caxton.store.postgres import PostgresStore
from caxton.store.qdrant import QdrantStore

if TYPE_CHECKING:
    from caxton.ops.backup import BackupService

LOGGER = logging.getLogger("caxton.http.admin")

routes = RouteTable("admin")
_MUTATING_KEY = "CAXTON_MUTATING_ENDPOINTS"
_CHUNK = 256 * 1024


@routes.route(
    "/api/v1/admin/safe-mode",
    role=Role.READONLY,
    summary="Whether safe mode is on (writes refused with 503 SAFE_MODE), since when and why.",
)
async def get_safe_mode() -> dict[str, Any]:
    return current_services().safe_mode.status.to_json()


@routes.route(
    "/api/v1/admin/safe-mode",
    methods=("POST",),
    role=Role.ADMIN,
    summary="Turn safe mode on or off; it is persisted in data_dir and survives restarts.",
    request_body='{"enabled": true, "reason": "incident 42"}',
    responses=(200, 400, 422),
)
async def set_safe_mode() -> dict[str, Any]:
    body = await optional_json_object('{"enabled": true, "reason": "incident 42"}')
    enabled = body.get("enabled")
    reason = body.get("reason")
    if not isinstance(enabled, bool):
        raise ValidationFailed(
            'enabled must be true or false, e.g. {"enabled": true}', details={"field": "enabled"}
        )
    if reason is not None and not isinstance(reason, str):
        raise ValidationFailed("reason must be a string", details={"field": "reason"})
    status = await current_services().safe_mode.set(enabled, reason=reason)
    return status.to_json()


def _backups() -> BackupService:
    state = current_services()
    if state.backups is None:
        raise BackupNotApplicable(
            "caxton backup copies the embedded DuckDB store; with storage.backend: postgres "
            "back up the PostgreSQL database with its own tools (pg_dump, or continuous "
            "archiving) and each instance's caxton.yaml and agents_dir files",
            details={"backend": state.config.storage.backend},
        )
    return state.backups


@routes.route(
    "/api/v1/admin/backup",
    methods=("POST",),
    role=Role.ADMIN,
    summary="Take a consistent online backup (tar.gz with manifest and SHA-256 sums): written "
    'under data_dir/backups/, or to {"path"}: a new *.tar.gz file (a bare name goes under '
    "data_dir/backups/; an absolute path needs an existing folder reached without symbolic "
    'links; an existing file is never replaced: 409); with {"download": true} streamed back.',
    request_body='{"path": "/backups/caxton.tar.gz"} or {"download": true}',
    responses=(200, 400, 409, 422, 500),
)
async def backup() -> Any:
    body = await optional_json_object('{"path": "/backups/caxton.tar.gz"} or {"download": true}')
    unknown = sorted(set(body) - {"path", "download"})
    if unknown:
        raise ValidationFailed(
            f"unknown field {', '.join(unknown)}; allowed: download, path",
            details={"field": unknown[0]},
        )
    path, download = body.get("path"), body.get("download", False)
    if path is not None and (not isinstance(path, str) or not path or "\x00" in path):
        raise ValidationFailed(
            "path must be a file path on the server: absolute, or a bare file name written "
            "under data_dir/backups/",
            details={"field": "path"},
        )
    if not isinstance(download, bool) or (download and path is not None):
        raise ValidationFailed(
            "download must be true or false, and cannot be combined with path",
            details={"field": "download"},
        )
    service = _backups()
    if not download:
        report = await service.create(Path(path) if path else None)
        LOGGER.info("backup written to %s (%d bytes)", report.path, report.size_bytes)
        return report.to_json()
    outgoing = service.sources.data_dir / "backups" / ".outgoing"
    report = await service.create(outgoing / archive_name(dt.datetime.now(dt.UTC)))

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        try:
            handle = await trio.open_file(report.path, "rb")
            async with handle:
                while chunk := await handle.read(_CHUNK):
                    await send.send(chunk)
        except trio.BrokenResourceError:
            LOGGER.info("backup download: the client went away before the end")
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(OSError):
                await trio.Path(report.path).unlink()

    response = Response(background_body(produce), mimetype="application/gzip")
    response.headers["Content-Disposition"] = f'attachment; filename="{report.path.name}"'
    response.headers["Content-Length"] = str(report.size_bytes)
    response.headers["X-Caxton-Backup-Sha256"] = report.sha256
    response.timeout = None
    return response


@routes.route(
    "/api/v1/admin/storage/verify",
    role=Role.OPERATOR,
    summary="Check the database (every table readable, orphans, embeddings vs entities), the "
    "model files and the HNSW index, and with memory.backend qdrant its collections (vector "
    "size, a point per entity and relation); ok is false when an error was found.",
    query=(
        QueryParam(
            name="comprehensive",
            description="true: read every row and compare the HNSW index with every vector",
        ),
    ),
)
async def storage_verify() -> dict[str, Any]:
    from caxton.ops.verify import (
        Finding,
        inspect_connection,
        inspect_postgres,
        verify_qdrant,
        with_findings,
    )

    state = current_services()
    store = state.store
    comprehensive = request.args.get("comprehensive", "false").lower() in ("1", "true", "yes")
    config = state.config
    if isinstance(store, PostgresStore):
        migrations, where = store.migrations, store.where
        report = await store.execute_fn(
            lambda conn: inspect_postgres(
                conn, comprehensive=comprehensive, migrations=migrations, database=where
            )
        )
    else:
        duckdb_store = store
        report = await duckdb_store.execute_fn(
            lambda conn: inspect_connection(
                conn,
                config,
                comprehensive=comprehensive,
                migrations=duckdb_store.migrations,
                source="server",
            )
        )
    memory = state.memory
    if isinstance(memory.store, QdrantStore):
        # memory.backend: qdrant (issue #16): its collections hold what memory reports
        try:
            stats = await memory.stats()
        except CaxtonError as exc:
            counts = Finding(check="qdrant", severity="error", message=exc.message)
            report = with_findings(report, [counts])
        else:
            found = await verify_qdrant(
                memory.store,
                entity_count=stats.entity_count,
                relation_count=stats.relation_count,
            )
            report = with_findings(report, found)
    return report.to_json()


#: Routes that stay open in safe mode although they are mutating.
SAFE_MODE_EXEMPT = frozenset(f"{routes.tag}.{h.__name__}" for h in (set_safe_mode, backup))


async def refuse_in_safe_mode() -> None:
    """``before_request``: 503 SAFE_MODE for mutating routes while safe mode is on."""
    state = current_services()
    if not state.safe_mode.enabled or request.endpoint is None:
        return
    mutating: frozenset[str] | None = current_app.config.get(_MUTATING_KEY)
    if mutating is None:
        mutating = frozenset(s.endpoint for s in declared_routes() if s.mutating)
        current_app.config[_MUTATING_KEY] = mutating
    if refuses(
        enabled=True,
        mutating=request.endpoint in mutating,
        endpoint=request.endpoint,
        exempt=SAFE_MODE_EXEMPT,
    ):
        status = state.safe_mode.status
        since = f" since {status.since}" if status.since else ""
        why = f" ({status.reason})" if status.reason else ""
        raise SafeModeActive(
            f"the server is in safe mode{since}{why}: {request.method} {request.path} would "
            "change its state and is refused. Reads and messages to agents still work; "
            "`caxton safe-mode --disable` lifts it",
            details={"safe_mode": True, "since": status.since, "reason": status.reason},
        )
