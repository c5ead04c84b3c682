"""``caxton memory …``: inspect, search, tune, export, import and migrate the memory.

Every command talks to the running server, except ``export``, which reads the DuckDB file
read-only when the server cannot be reached and the configuration is known (``caxton --config
F`` or ``CAXTON_CONFIG_PATH``), as DESIGN §8 asks, and ``migrate``, which copies a stopped
server's memory into Qdrant from its files (:mod:`caxton.ops.memory_migrate`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs
import click
import httpx

from caxton.cli.client import ApiClient, api_client
from caxton.cli.files import replacing
from caxton.cli.offline import config_path, load_offline_config
from caxton.cli.output import byte_size, emit, emit_json, key_values, output_option, table
from caxton.cli.storage import finish_migration, migration_options, migration_source, run_migration
from caxton.errors import ClientError

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Exports larger than this print progress lines on stderr.
PROGRESS_BYTES = 4 * 1024 * 1024
#: The share of ``memory.max_entities`` from which ``capacity-check`` warns and exits 1.
CAPACITY_WARNING = 0.9
MERGE_STRATEGIES = ("update_existing", "skip_existing", "error_on_conflict")
#: How ``stats --detailed`` titles the figures of each memory backend.
BACKEND_TITLES = {"duckdb": "DuckDB", "postgres": "PostgreSQL", "qdrant": "Qdrant"}


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


@click.group()
def memory() -> None:
    """Inspect, search, tune, export and import the embedded memory."""


# --------------------------------------------------------------------------------- reports


def _entities_line(data: dict[str, Any]) -> str:
    count, limit = data["entity_count"], data.get("max_entities")
    if not limit:
        return f"{count} (no limit)"
    return f"{count} of {limit} ({count / limit * 100:.1f}%)"


@memory.command()
@click.option("--detailed", is_flag=True, help="DuckDB and embedding figures, by type and scope.")
@output_option
@click.pass_context
def stats(ctx: click.Context, detailed: bool, output: str) -> None:
    """Print memory statistics: entities, relations, size, search latency, cache hit rate."""
    data = api_client(ctx).json("GET", "/api/v1/memory/stats")
    if output == "json":
        emit_json(data)
        return
    search = data.get("search") or {}
    latency = (
        f"p50 {_ms(data['search_p50_ms'])}, p99 {_ms(data['search_p99_ms'])} "
        f"(last {search.get('search_window', 0)} searches)"
    )
    backend = data.get("backend", "duckdb")
    if not detailed:
        click.echo(
            key_values(
                [
                    ("Backend", backend),
                    ("Entities", _entities_line(data)),
                    ("Relations", data["relation_count"]),
                    ("Observations", data["observation_count"]),
                    ("Database size", byte_size(data["db_size_bytes"])),
                    ("Search latency", latency),
                    ("Cache hit rate", _percent(data.get("cache_hit_rate"))),
                ]
            )
        )
        return
    database = data.get("database") or {}
    accelerator = "off"
    if search.get("accelerator_enabled"):
        state = "ready" if search.get("accelerator_ready") else "not ready (exact search)"
        accelerator = f"{state}, {search.get('index_rows', 0)} vectors"
    duck: list[tuple[str, object]] = [
        ("Backend", backend),
        ("Entities", _entities_line(data)),
        ("Relations", data["relation_count"]),
        ("Observations", data["observation_count"]),
        ("Database size", byte_size(data["db_size_bytes"])),
        ("Fragmentation", _percent(database.get("fragmentation"))),
        (
            "Buffer memory",
            f"{database.get('memory_usage', '-')} of {database.get('memory_limit', '-')}",
        ),
        ("Search latency", latency),
        ("Searches", search.get("searches_total", 0)),
        ("Search accelerator", accelerator),
        ("Query cache hit rate", _percent(data.get("cache_hit_rate"))),
    ]
    click.echo(f"{BACKEND_TITLES.get(backend, backend)} Performance:")
    click.echo(_indent(key_values(duck)))
    embedder = data.get("embedder")
    if embedder:
        lookups = embedder["cache_hits"] + embedder["cache_misses"]
        embedding: list[tuple[str, object]] = [
            ("Model", f"{embedder['model']} ({embedder['model_path']})"),
            ("Runtime", embedder.get("runtime") or "-"),
            ("Model load time", f"{embedder['load_ms']:.0f}ms"),
            ("Average encoding time", _ms(embedder["average_encode_ms"])),
            ("Cache hit rate", f"{_percent(embedder['hit_rate'])} ({lookups} lookups)"),
            ("Cached embeddings", f"{embedder['cache_entries']} of {embedder['cache_size']}"),
            ("Texts embedded", embedder["texts_embedded"]),
            ("Memory usage", f"{byte_size(data['process_memory_bytes'])} (server process)"),
        ]
        click.echo("\nEmbedding Performance:")
        click.echo(_indent(key_values(embedding)))
    for title, key in (("By type", "entities_by_type"), ("By scope", "entities_by_scope")):
        counts = data.get(key) or {}
        if counts:
            click.echo(f"\n{title}:")
            click.echo(_indent(key_values(sorted(counts.items()))))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


@memory.command("capacity-check")
@output_option
@click.pass_context
def capacity_check(ctx: click.Context, output: str) -> None:
    """Compare the entity count with memory.max_entities, and report the index's RAM.

    The RAM is what the in-process search index (float vectors, names, HNSW graph) needs now
    and at memory.max_entities, from the formula in caxton.memory.hnsw (0 when searches run in
    the store). Exit 0 below 90% of the limit; exit 1 from 90% on (a warning: delete entities
    or raise memory.max_entities before writes start failing with MEMORY_LIMIT_EXCEEDED).
    """
    data = api_client(ctx).json("GET", "/api/v1/memory/capacity")
    if output == "json":
        emit_json(data)
    else:
        limit = data.get("max_entities")
        click.echo(
            key_values(
                [
                    ("Entities", data["entity_count"]),
                    ("Max entities", limit if limit else "no limit"),
                    ("Used", _percent(data["used_ratio"]) if limit else "-"),
                    ("Database size", byte_size(data["db_size_bytes"])),
                    ("Index RAM now", byte_size(data.get("index_ram_bytes", 0))),
                    (
                        "Index RAM at max",
                        byte_size(data["index_ram_at_max_bytes"])
                        if data.get("index_ram_at_max_bytes") is not None
                        else "-",
                    ),
                ]
            )
        )
        warn = bool(data["warning"])
        click.echo(("WARNING: " if warn else "OK: ") + data["message"], err=warn)
    if data["warning"]:
        sys.exit(1)


# --------------------------------------------------------------------------------- search


@memory.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--min-similarity",
    type=click.FloatRange(-1.0, 1.0),
    default=0.0,
    show_default=True,
    help="Drop results less similar than this.",
)
@click.option("--scope", type=click.Choice(["agent", "workspace", "global"]), default=None)
@click.option("--agent", default=None, help="Search as this agent (sees its own entities).")
@click.option("--types", default=None, help="Comma-separated entity types to keep.")
@output_option
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    limit: int,
    min_similarity: float,
    scope: str | None,
    agent: str | None,
    types: str | None,
    output: str,
) -> None:
    """Find the entities closest in meaning to QUERY, best first."""
    params: dict[str, Any] = {"q": query, "limit": limit, "min_similarity": min_similarity}
    for key, value in (("scope", scope), ("agent", agent), ("entity_types", types)):
        if value:
            params[key] = value
    data = api_client(ctx).json("GET", "/api/v1/memory/search", params=params)
    if output == "json":
        emit_json(data)
        return
    if not data["results"]:
        click.echo("no matching entities")
        return
    rows = [
        [
            hit["name"],
            hit["entity_type"],
            f"{hit['similarity']:.3f}",
            hit["scope"],
            _clip(hit["observations"][0]) if hit["observations"] else "",
        ]
        for hit in data["results"]
    ]
    click.echo(table(["name", "type", "similarity", "scope", "observation"], rows))


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------------- entities


def _entity_text(entity: dict[str, Any]) -> str:
    fields = key_values(
        [
            ("name", entity["name"]),
            ("type", entity["entity_type"]),
            ("scope", entity["scope"]),
            ("agent", entity["agent"] or "-"),
            ("updated", entity["updated_at"]),
        ]
    )
    return "\n".join([fields, *(f"  - {observation}" for observation in entity["observations"])])


@memory.command()
@click.argument("name")
@click.option("--type", "entity_type", required=True, help="The entity type (person, pet, …).")
@click.option(
    "--observation", "observations", multiple=True, help="An observation (repeat for more)."
)
@click.option("--scope", type=click.Choice(["agent", "workspace", "global"]), default="global")
@click.option("--agent", default=None, help="The owning agent (required with --scope agent).")
@output_option
@click.pass_context
def add(
    ctx: click.Context,
    name: str,
    entity_type: str,
    observations: tuple[str, ...],
    scope: str,
    agent: str | None,
    output: str,
) -> None:
    """Create entity NAME, or add observations to it if it exists with the same type."""
    body: dict[str, Any] = {
        "name": name,
        "entity_type": entity_type,
        "observations": list(observations),
        "scope": scope,
    }
    if agent:
        body["agent"] = agent
    entity = api_client(ctx).json("POST", "/api/v1/memory/entities", json=body)
    emit(output, entity, _entity_text)


@memory.command()
@click.argument("name")
@output_option
@click.pass_context
def show(ctx: click.Context, name: str, output: str) -> None:
    """Show entity NAME with its observations."""
    entity = api_client(ctx).json("GET", f"/api/v1/memory/entities/{name}")
    emit(output, entity, _entity_text)


@memory.command()
@click.argument("name")
@output_option
@click.pass_context
def delete(ctx: click.Context, name: str, output: str) -> None:
    """Delete entity NAME with its observations and relations."""
    result = api_client(ctx).json("DELETE", f"/api/v1/memory/entities/{name}")
    emit(output, result, lambda r: f"deleted {name} ({r['relations_removed']} relations)")


# --------------------------------------------------------------------------------- maintenance


@memory.command()
@click.option("--vacuum", is_flag=True, help="Reclaim free space in the database file.")
@click.option("--reindex", is_flag=True, help="Rebuild the search accelerator from DuckDB.")
@click.option("--analyze", is_flag=True, help="Refresh DuckDB's query statistics.")
@output_option
@click.pass_context
def optimize(ctx: click.Context, vacuum: bool, reindex: bool, analyze: bool, output: str) -> None:
    """Checkpoint the database, then run the steps asked for (no flag: every step)."""
    body = {
        k: True for k, v in (("vacuum", vacuum), ("reindex", reindex), ("analyze", analyze)) if v
    }
    report = api_client(ctx, timeout_s=600).json("POST", "/api/v1/memory/optimize", json=body)
    if output == "json":
        emit_json(report)
        return
    steps = ["checkpoint"] + [
        step
        for step, key in (("vacuum", "vacuumed"), ("analyze", "analyzed"), ("reindex", "reindexed"))
        if report[key]
    ]
    click.echo(
        f"optimized: {', '.join(steps)} in {report['seconds']:.2f}s; database "
        f"{byte_size(report['size_before_bytes'])} -> {byte_size(report['size_after_bytes'])}"
    )


@memory.command("cache-clear")
@click.option("--rebuild", is_flag=True, help="Also reload the search accelerator from DuckDB.")
@output_option
@click.pass_context
def cache_clear(ctx: click.Context, rebuild: bool, output: str) -> None:
    """Forget cached query embeddings (and with --rebuild, rebuild the search accelerator)."""
    result = api_client(ctx, timeout_s=600).json(
        "POST", "/api/v1/memory/cache/clear", json={"rebuild": rebuild}
    )
    if output == "json":
        emit_json(result)
        return
    line = f"cleared {result['cleared_entries']} cached embeddings"
    if result["rebuilt"]:
        line += f"; search accelerator rebuilt with {result['index_rows']} vectors"
    click.echo(line)


# --------------------------------------------------------------------------------- transfer


class _Progress:
    """Progress lines on stderr once a transfer passes :data:`PROGRESS_BYTES`."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.done = 0
        self.next_report = PROGRESS_BYTES

    def add(self, size: int) -> None:
        self.done += size
        if self.done >= self.next_report:
            click.echo(f"{self.verb} {byte_size(self.done)}…", err=True)
            self.next_report += PROGRESS_BYTES


def _count_records(path: Path, kind: str) -> tuple[int, int]:
    """Check a written export against its own metadata; return (entities, relations)."""
    with path.open(encoding="utf-8") as handle:
        if kind == "json":
            document = json.load(handle)
            entities, relations = len(document["entities"]), len(document["relations"])
            meta = document["metadata"]
        else:
            meta = json.loads(handle.readline())
            entities = relations = 0
            for line in handle:
                record_kind = json.loads(line)["kind"]
                entities += record_kind == "entity"
                relations += record_kind == "relation"
    if (entities, relations) != (meta["entity_count"], meta["relation_count"]):
        raise ClientError(
            f"the export is incomplete: {entities} entities and {relations} relations arrived, "
            f"the metadata announces {meta['entity_count']} and {meta['relation_count']}"
        )
    return entities, relations


def _stream_online(client: ApiClient, kind: str, sink: IO[bytes], progress: _Progress) -> None:
    with client.stream("GET", "/api/v1/memory/export", params={"format": kind}) as response:
        for chunk in response.iter_bytes():
            sink.write(chunk)
            progress.add(len(chunk))


def _offline_pieces(ctx: click.Context, kind: str, url: str) -> Iterator[str]:
    from caxton.memory.offline import read_snapshot
    from caxton.store import StoreLockedError

    config, _ = load_offline_config(ctx, None, url=url, what="export")
    database = config.database_path
    click.echo(
        f"the server at {url} is not reachable; exporting from {database} (read-only)", err=True
    )
    try:
        snapshot = read_snapshot(database)
    except StoreLockedError:
        raise ClientError(
            f"a running server holds {database}, but it does not answer at {url}; export "
            "through it with --url (or CAXTON_URL) set to its address"
        ) from None
    return snapshot.jsonl_lines() if kind == "jsonl" else snapshot.json_chunks()


@memory.command()
@click.option(
    "--format",
    "kind",
    type=click.Choice(["json", "jsonl"]),
    default="json",
    show_default=True,
    help="json: one document {entities, relations, metadata}; jsonl: one record per line.",
)
@click.option(
    "--output",
    "destination",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write (here --output is the destination, as in the operator's guide).",
)
@click.option(
    "--report",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="How to print the summary (export's --output names the file, so this replaces -o).",
)
@click.pass_context
def export(ctx: click.Context, kind: str, destination: Path, report: str) -> None:
    """Write the whole memory to a file, from the server or (when it is stopped) the database.

    The data goes to a temporary file beside the destination, which is checked against the
    export's own counts and then renamed, so the destination is never left half-written; it
    is readable by its owner only, as it holds the whole memory. Without a reachable server,
    the DuckDB file is read directly when the configuration is known (caxton --config F, or
    CAXTON_CONFIG_PATH).
    """
    client = api_client(ctx)
    directory = destination.parent
    directory.mkdir(parents=True, exist_ok=True)
    progress = _Progress("exported")
    started = time.monotonic()
    source = client.base_url
    with replacing(destination) as partial:
        handle = partial.file
        try:
            _stream_online(client, kind, handle, progress)
        except httpx.ConnectError:
            handle.seek(0)
            handle.truncate()
            source = "database file"
            for piece in _offline_pieces(ctx, kind, client.base_url):
                data = piece.encode("utf-8")
                handle.write(data)
                progress.add(len(data))
        except httpx.HTTPError as exc:
            raise ClientError(f"the export from {client.base_url} failed: {exc}") from None
        partial.finish()
        entities, relations = _count_records(partial.path, kind)
    written = destination.stat().st_size
    summary: dict[str, object] = {
        "file": str(destination),
        "format": kind,
        "source": source,
        "entities": entities,
        "relations": relations,
        "bytes": written,
        "seconds": round(time.monotonic() - started, 3),
    }
    if report == "json":
        emit_json(summary)
    else:
        click.echo(
            f"exported {entities} entities and {relations} relations to {destination} "
            f"({byte_size(written)}, {kind})"
        )


def _looks_like_jsonl(path: Path) -> bool:
    with path.open("rb") as handle:
        first = handle.readline(1024 * 1024).strip()
    try:
        head = json.loads(first)
    except ValueError:
        return False
    return isinstance(head, dict) and "kind" in head


def _upload(path: Path, progress: _Progress) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            progress.add(len(chunk))
            yield chunk


@memory.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--merge-strategy",
    type=click.Choice(MERGE_STRATEGIES),
    default="update_existing",
    show_default=True,
    help="What to do with entities and relations that already exist.",
)
@output_option
@click.pass_context
def import_file(ctx: click.Context, file: Path, merge_strategy: str, output: str) -> None:
    """Import an export file (JSON or JSONL, told apart by content). All or nothing.

    The server checks the whole file (version, counts, every record) before writing, so a
    truncated or edited file changes nothing.
    """
    jsonl = _looks_like_jsonl(file)
    content_type = "application/x-ndjson" if jsonl else "application/json"
    size = file.stat().st_size
    if size >= PROGRESS_BYTES and output == "table":
        click.echo(f"uploading {file} ({byte_size(size)})…", err=True)
    client = api_client(ctx, timeout_s=600)
    result = client.json(
        "POST",
        "/api/v1/memory/import",
        params={"merge_strategy": merge_strategy},
        content=_upload(file, _Progress("uploaded")),
        headers={"Content-Type": content_type, "Content-Length": str(size)},
    )
    if output == "json":
        emit_json(result)
        return
    click.echo(
        f"imported {file} ({'jsonl' if jsonl else 'json'}, {result['merge_strategy']}): "
        f"entities {result['entities_created']} created, {result['entities_updated']} updated, "
        f"{result['entities_skipped']} skipped; relations {result['relations_created']} "
        f"created, {result['relations_updated']} updated, {result['relations_skipped']} "
        f"skipped; {result['entity_count']} entities now"
    )


# --------------------------------------------------------------------------------- migrate


@memory.command()
@click.option(
    "--to",
    "backend",
    type=click.Choice(["qdrant"]),
    required=True,
    help="The memory backend to copy into.",
)
@click.option(
    "--url",
    default=None,
    help="The Qdrant server (default: memory.qdrant_config.url, env QDRANT_URL).",
)
@click.option(
    "--path",
    "folder",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="A folder for qdrant-client's local mode instead of a server (single-node trials).",
)
@click.option(
    "--collection",
    default=None,
    help="The collection (default: memory.qdrant_config.collection, caxton-memory).",
)
@migration_options(server="server", batch_size=256, batch_help="Entities or relations per write.")
def migrate(
    ctx: click.Context,
    backend: str,
    url: str | None,
    folder: Path | None,
    collection: str | None,
    data_dir: Path | None,
    config_file: str | None,
    batch_size: int,
    output: str,
) -> None:
    """Copy a stopped server's memory into Qdrant, then compare the counts (exit 1 when they
    differ), and print the configuration that switches to it.

    The memory is read from wherever storage.backend keeps it; embeddings are copied as
    stored, never recomputed. Safe to run again: what the collection already holds identical
    is skipped, an interrupted run is completed.
    """
    from caxton.config import load_config
    from caxton.ops.memory_migrate import migrate_to_qdrant

    del backend  # qdrant is the only choice
    if url and folder:
        raise ClientError("name either --url (a Qdrant server) or --path (local mode), not both")
    config = load_config(config_path(ctx, config_file)).config
    if config.memory.backend == "qdrant":
        raise ClientError(
            "memory.backend is qdrant already: this server's memory is in Qdrant "
            f"(collection {config.memory.qdrant_config.collection}); to copy it to another "
            "collection, use caxton memory export and caxton memory import"
        )
    source, postgres = migration_source(ctx, config_file, data_dir)
    settings = config.memory.qdrant_config
    if url:
        settings = attrs.evolve(settings, url=url, path=None)
    elif folder:
        settings = attrs.evolve(settings, path=str(folder.expanduser().absolute()))
    elif settings.path:
        # the configuration's folder is relative to data_dir, as the server reads it
        place = Path(settings.path).expanduser()
        settings = attrs.evolve(settings, path=str(source.data_dir / place))
    if collection:
        settings = attrs.evolve(settings, collection=collection)
    report = run_migration(
        lambda progress: migrate_to_qdrant(
            source,
            settings,
            postgres=postgres if config.storage.backend == "postgres" else None,
            batch_size=batch_size,
            progress=progress,
        ),
        output,
    )
    finish_migration(
        report,
        output,
        done=f"migrated the memory of {report.source} to {report.target} in "
        f"{report.seconds:.1f}s; every count matches. To serve it from there, set in "
        f"caxton.yaml and restart:\n\n{report.config_block}",
    )
