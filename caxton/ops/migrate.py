"""``caxton storage migrate``: copy a stopped embedded server's data into PostgreSQL (issue #15).

What moves, each through the SQL objects of its feature (no statement of theirs is repeated
here):

* **memory** — entities with their observations, relations, and every embedding *as stored*:
  the DuckDB ``FLOAT[384]`` column goes into the pgvector column unchanged, never re-embedded,
  so searches rank and score as before (:mod:`caxton.memory.queries` reads,
  :mod:`caxton.memory.postgres_sql` writes, under the memory write lock);
* **conversations** — each with its messages in their order and with their ids, status, first
  and last activity (:mod:`caxton.messaging.conversation_sql_duckdb` reads,
  :mod:`caxton.messaging.conversation_sql_postgres` writes);
* **deployed agents** — what ``data_dir/deployed`` serves: the active version of each agent and
  its canary with its share (:class:`FileDeployments` -> :class:`PostgresDeployments`);
* **the safe-mode flag**, when it is on, so the cluster starts in safe mode too;
* **LLM usage** — every call's tokens and cost (issue #18), so reports and daily budgets carry
  on (a row the target already holds, same time, agent, caller and model, is not written
  twice; a DuckDB file from before usage accounting simply has none).

Instances already running on the target are told of each agent and of safe mode as a server
would tell them (LISTEN/NOTIFY); the memory and conversations they read from the database.

How it stays safe to run, and to run again:

* the source server must be stopped: its data_dir lock is held for the whole copy, so none
  starts meanwhile, and the DuckDB file is opened read-only: the source is never changed;
* the target is migrated first (every feature's PostgreSQL tables, :func:`postgres_migrations`);
* every batch (``batch_size`` entities, relations or conversations) is its own transaction,
  and every write replaces what the target holds under the same key: an interrupted run leaves
  whole batches behind, and running again completes it without duplicates. Conversations and
  agents the target already holds identical are skipped;
* at the end the rows of each table are counted on both sides: :attr:`MigrationReport.verified`
  is false, naming each difference, when they do not match (a target that held other data
  before shows up there too).

The memory is read whole before it is written (entities, relations and a 1.5 KB vector per
entity: ~300 MB at the default ``memory.max_entities`` of 100k).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import duckdb
import numpy as np
import trio
from numpy.typing import NDArray

from caxton.agents.deployments import CanaryState, FileDeployments, PostgresDeployments
from caxton.cluster import DEFAULT_CHANNEL, notify
from caxton.components import running
from caxton.datadir import hold_offline, holder_pid
from caxton.memory import postgres_sql, queries
from caxton.memory.sql import load_index
from caxton.memory.types import Entity, Relation
from caxton.messaging.conversation_sql import Batch
from caxton.messaging.conversation_sql_duckdb import DUCKDB_CONVERSATION_SQL
from caxton.messaging.conversation_sql_postgres import POSTGRES_CONVERSATION_SQL
from caxton.ops.errors import MigrationRefused
from caxton.ops.safe_mode import PostgresSafeModeFlag, read_flag
from caxton.ops.schema import postgres_migrations
from caxton.store.errors import StoreOpenError
from caxton.store.postgres import PostgresStore, redact
from caxton.store.read_only import connect_read_only

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from caxton.agents.deployments import StoredAgent
    from caxton.memory.sql import MemorySQL
    from caxton.messaging.conversation_sql import ConversationSummary

T = TypeVar("T")

#: Entities, relations or conversations per transaction.
BATCH_SIZE: Final = 500
#: A batch of conversations stops growing past this many messages (a long conversation still
#: goes in whole, alone).
MESSAGES_PER_BATCH: Final = 5000

#: What is counted on both sides at the end, and the table each count reads.
TABLES: Final = {
    "entities": "memory_entities",
    "observations": "memory_observations",
    "relations": "memory_relations",
    "embeddings": "memory_embeddings",
    "conversations": "conversations",
    "messages": "conversation_messages",
}
#: Every kind the report counts, in the order it is copied.
KINDS: Final = (*TABLES, "agents", "usage")

_USAGE_COLUMNS: Final = (
    "called_at, day, agent, caller, model, provider, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, cost"
)
_INSERT_USAGE: Final = (
    f"INSERT INTO llm_usage ({_USAGE_COLUMNS}) SELECT * FROM unnest("
    "%s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], "
    f"%s::bigint[], %s::bigint[], %s::bigint[], %s::float8[]) AS t({_USAGE_COLUMNS}) "
    "WHERE NOT EXISTS (SELECT 1 FROM llm_usage u WHERE u.called_at = t.called_at "
    "AND u.agent = t.agent AND u.caller = t.caller AND u.model = t.model)"
)

# a conversation's messages are read whole (LIMIT takes a number)
_ALL_MESSAGES = 2**62


@attrs.frozen(kw_only=True)
class MigrationSource:
    """The embedded server's files: its data_dir and the DuckDB file of ``memory.database_path``."""

    data_dir: Path
    database_path: Path


@attrs.frozen(kw_only=True)
class Step:
    """Progress: ``done`` of ``total`` items of ``kind`` (entities, relations, conversations,
    agents) are in the target."""

    kind: str
    done: int
    total: int


Progress = Callable[[Step], None]


@attrs.frozen(kw_only=True)
class KindCount:
    """One kind of row: how many the source and the target hold, and what this run did.

    Attributes:
        source: rows in the source (for agents: agents with an active version).
        target: rows in the target after the copy (for agents: the source's agents the target
            serves identically).
        copied: rows written by this run.
        skipped: rows left alone because the target already held them identical.
    """

    kind: str
    source: int
    target: int
    copied: int = 0
    skipped: int = 0

    @property
    def matches(self) -> bool:
        return self.source == self.target

    def to_json(self) -> dict[str, int]:
        return {
            "source": self.source,
            "target": self.target,
            "copied": self.copied,
            "skipped": self.skipped,
        }


@attrs.frozen(kw_only=True)
class CountedCopy:
    """What a copy counted on both sides, and the problems it met (the base of each
    migration's report)."""

    target: str  # how the report names the target, without a password
    counts: tuple[KindCount, ...]
    problems: tuple[str, ...]
    seconds: float

    @property
    def verified(self) -> bool:
        """Every count matches and nothing was left out."""
        return not self.mismatches

    @property
    def mismatches(self) -> list[str]:
        """One line per difference between source and target, then each problem met."""
        lines = [
            f"{c.kind}: {c.source} in the source, {c.target} in {self.target}"
            for c in self.counts
            if not c.matches
        ]
        return [*lines, *self.problems]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "counts": {c.kind: c.to_json() for c in self.counts},
            "seconds": round(self.seconds, 3),
            "verified": self.verified,
            "mismatches": self.mismatches,
        }


@attrs.frozen(kw_only=True)
class MigrationReport(CountedCopy):
    """What a migration copied and whether the target now holds what the source does."""

    data_dir: Path
    database: Path
    safe_mode: bool  # the flag was on, and is now on in the target

    def to_json(self) -> dict[str, Any]:
        counted = super().to_json()
        return {
            "data_dir": str(self.data_dir),
            "database": str(self.database),
            "target": counted.pop("target"),
            "counts": counted.pop("counts"),
            "safe_mode": self.safe_mode,
            **counted,
        }


# -- the source -----------------------------------------------------------------------------------


class _Source:
    """The read-only DuckDB connection, used by one worker thread at a time."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._limiter = trio.CapacityLimiter(1)

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        try:
            return await trio.to_thread.run_sync(fn, self.conn, limiter=self._limiter)
        except duckdb.CatalogException as exc:
            raise StoreOpenError(self.path, f"a Caxton table is missing ({exc})") from exc


def _connect_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    return connect_read_only(
        path,
        missing="is this the data_dir of a server that has run? pass --data-dir, or --config "
        "with its memory.database_path",
    )


@contextlib.asynccontextmanager
async def _open_source(path: Path) -> AsyncIterator[_Source]:
    conn = await trio.to_thread.run_sync(_connect_read_only, path)
    try:
        yield _Source(conn, path)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(conn.close)


@contextlib.asynccontextmanager
async def _hold_data_dir(data_dir: Path) -> AsyncIterator[None]:
    """Refuse while a server runs on ``data_dir``; hold its lock for the block."""
    if not await trio.to_thread.run_sync(data_dir.is_dir):
        raise MigrationRefused(
            f"data_dir {data_dir} does not exist; pass the embedded server's data_dir with "
            "--data-dir, or its configuration with --config",
            details={"data_dir": str(data_dir)},
        )
    pid = await trio.to_thread.run_sync(holder_pid, data_dir)
    if pid is not None:
        who = f"pid {pid}" if pid else "pid unknown"
        raise MigrationRefused(
            f"a Caxton server ({who}) is running on data_dir {data_dir}; stop it first "
            "(systemctl stop caxton, or SIGTERM): the migration copies a stopped server's files",
            details={"data_dir": str(data_dir), "pid": pid},
        )
    with contextlib.ExitStack() as stack:
        await trio.to_thread.run_sync(stack.enter_context, hold_offline(data_dir))
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stack.close)


def _count_tables(conn: Any) -> dict[str, int]:
    counts = {}
    for kind, table in TABLES.items():
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        counts[kind] = int(row[0]) if row else 0
    return counts


# -- memory ---------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MemorySnapshot:
    """The whole memory of the source, as stored.

    Attributes:
        matrix: the unit embedding of each entity in ``rows``, one per row.
        rows: entity name -> its row in ``matrix``.
    """

    entities: tuple[Entity, ...]
    relations: tuple[Relation, ...]
    rows: dict[str, int]
    matrix: NDArray[np.float32]

    @property
    def observations(self) -> int:
        return sum(len(e.observations) for e in self.entities)

    def embedded(self) -> tuple[list[Entity], list[str]]:
        """The entities that have an embedding, and a problem naming the others, if any (they
        are left out of a copy)."""
        missing = [e.name for e in self.entities if e.name not in self.rows]
        problems = []
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            problems.append(
                f"{len(missing)} entities have no embedding in the source and were left out "
                f"({shown}); caxton storage verify names them"
            )
        return [e for e in self.entities if e.name in self.rows], problems


def read_snapshot(sql: MemorySQL, conn: Any) -> MemorySnapshot:
    """Every entity, relation and embedding, in one read of ``conn`` (``sql``'s dialect)."""
    entities, relations = sql.snapshot(conn)
    entries, matrix = load_index(sql, conn)
    return MemorySnapshot(
        entities=tuple(entities),
        relations=tuple(relations),
        rows={entry.name: i for i, entry in enumerate(entries)},
        matrix=matrix,
    )


def _write_entities(entities: Sequence[Entity], vectors: NDArray[np.float32], conn: Any) -> None:
    postgres_sql.lock_writes(conn)
    postgres_sql.write_entities(conn, entities, vectors)


def _write_relations(relations: Sequence[Relation], conn: Any) -> None:
    postgres_sql.lock_writes(conn)
    postgres_sql.write_relations(conn, relations)


async def _copy_memory(
    source: _Source,
    store: PostgresStore,
    *,
    batch_size: int,
    progress: Progress,
    counts: dict[str, int],
    problems: list[str],
) -> None:
    snapshot = await source.read(functools.partial(read_snapshot, queries))
    present, left_out = snapshot.embedded()
    problems.extend(left_out)
    progress(Step(kind="entities", done=0, total=len(present)))
    for start in range(0, len(present), batch_size):
        batch = present[start : start + batch_size]
        vectors = snapshot.matrix[[snapshot.rows[e.name] for e in batch]]
        await store.execute_write_fn(functools.partial(_write_entities, batch, vectors))
        counts["entities"] += len(batch)
        counts["embeddings"] += len(batch)
        counts["observations"] += sum(len(e.observations) for e in batch)
        progress(Step(kind="entities", done=start + len(batch), total=len(present)))
    relations = snapshot.relations
    progress(Step(kind="relations", done=0, total=len(relations)))
    for start in range(0, len(relations), batch_size):
        chunk = relations[start : start + batch_size]
        await store.execute_write_fn(functools.partial(_write_relations, chunk))
        counts["relations"] += len(chunk)
        progress(Step(kind="relations", done=start + len(chunk), total=len(relations)))


# -- conversations --------------------------------------------------------------------------------


def _same_conversation(a: ConversationSummary | None, b: ConversationSummary) -> bool:
    """Equal but for the order of participants (each database sorts by its own collation)."""
    return a is not None and attrs.evolve(a, participants=tuple(sorted(a.participants))) == (
        attrs.evolve(b, participants=tuple(sorted(b.participants)))
    )


def _target_state(ids: Sequence[str], conn: Any) -> dict[str, ConversationSummary | None]:
    """The target's summary of each conversation, ``None`` where its messages are not all
    there (the summary's count is the row's, kept apart from the messages)."""
    rows = conn.execute(
        "SELECT conversation_id, count(*) FROM conversation_messages "
        "WHERE conversation_id = ANY(%s) GROUP BY conversation_id",
        [list(ids)],
    ).fetchall()
    held = {str(cid): int(n) for cid, n in rows}
    found = {}
    for cid in ids:
        summary = POSTGRES_CONVERSATION_SQL.summary(conn, cid)
        complete = summary is not None and held.get(cid, 0) == summary.message_count
        found[cid] = summary if complete else None
    return found


def _clear_conversations(ids: Sequence[str], conn: Any) -> None:
    conn.execute("DELETE FROM conversation_messages WHERE conversation_id = ANY(%s)", [list(ids)])
    conn.execute("DELETE FROM conversations WHERE conversation_id = ANY(%s)", [list(ids)])


def _set_conversations(summaries: Sequence[ConversationSummary], conn: Any) -> None:
    """Each conversation's row as the source has it (status, first and last activity, count:
    the batch writer derives them from the messages and starts every conversation active)."""
    conn.execute(
        "INSERT INTO conversations "
        "(conversation_id, status, created_at, last_activity, message_count) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::float8[], %s::bigint[]) "
        "ON CONFLICT (conversation_id) DO UPDATE SET status = excluded.status, "
        "created_at = excluded.created_at, last_activity = excluded.last_activity, "
        "message_count = excluded.message_count",
        [
            [s.conversation_id for s in summaries],
            [s.status for s in summaries],
            [s.created_at for s in summaries],
            [s.last_activity for s in summaries],
            [s.message_count for s in summaries],
        ],
    )


def _groups(summaries: Sequence[ConversationSummary]) -> list[list[ConversationSummary]]:
    """Conversations in groups of at most :data:`MESSAGES_PER_BATCH` messages (one at least)."""
    groups: list[list[ConversationSummary]] = []
    size = 0
    for summary in summaries:
        if not groups or size + summary.message_count > MESSAGES_PER_BATCH:
            groups.append([])
            size = 0
        groups[-1].append(summary)
        size += summary.message_count
    return groups


async def _copy_group(
    source: _Source, store: PostgresStore, group: Sequence[ConversationSummary]
) -> int:
    """Replace these conversations in the target with the source's; the messages written."""
    ids = [s.conversation_id for s in group]

    def read(conn: duckdb.DuckDBPyConnection) -> Batch:
        batch = Batch()
        for cid in ids:
            for message in DUCKDB_CONVERSATION_SQL.messages(conn, cid, _ALL_MESSAGES, latest=False):
                batch.add(message)
        return batch

    batch = await source.read(read)
    # three transactions: an interruption between them leaves a conversation missing or
    # different, which the next run finds and writes again
    await store.execute_write_fn(functools.partial(_clear_conversations, ids))
    if batch.messages:
        await POSTGRES_CONVERSATION_SQL.write_batch(store, batch, fresh=ids, stored=())
    await store.execute_write_fn(functools.partial(_set_conversations, group))
    return len(batch.messages)


async def _copy_conversations(
    source: _Source,
    store: PostgresStore,
    *,
    total: int,
    batch_size: int,
    progress: Progress,
    counts: dict[str, int],
    skipped: dict[str, int],
) -> None:
    progress(Step(kind="conversations", done=0, total=total))
    done = 0
    while done < total:
        offset = done

        def page(
            conn: duckdb.DuckDBPyConnection, offset: int = offset
        ) -> list[ConversationSummary]:
            summaries, _ = DUCKDB_CONVERSATION_SQL.page(
                conn, status=None, participant=None, limit=batch_size, offset=offset
            )
            return summaries

        summaries = await source.read(page)
        if not summaries:
            break
        ids = [s.conversation_id for s in summaries]
        there = await store.execute_fn(functools.partial(_target_state, ids))
        todo = [s for s in summaries if not _same_conversation(there[s.conversation_id], s)]
        skipped["conversations"] += len(summaries) - len(todo)
        for group in _groups(todo):
            counts["messages"] += await _copy_group(source, store, group)
            counts["conversations"] += len(group)
        done += len(summaries)
        progress(Step(kind="conversations", done=done, total=total))


# -- usage ----------------------------------------------------------------------------------------


def _read_usage(conn: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    """Every usage row of the source, oldest first (none in a file from before issue #18)."""
    try:
        return conn.execute(f"SELECT {_USAGE_COLUMNS} FROM llm_usage ORDER BY called_at").fetchall()
    except duckdb.CatalogException:
        return []


def _write_usage(rows: Sequence[tuple[Any, ...]], conn: Any) -> int:
    columns = [list(column) for column in zip(*rows, strict=True)]
    return int(conn.execute(_INSERT_USAGE, columns).rowcount)


def _count_usage(conn: Any) -> int:
    row = conn.execute("SELECT count(*) FROM llm_usage").fetchone()
    return int(row[0]) if row else 0


async def _copy_usage(
    source: _Source,
    store: PostgresStore,
    *,
    batch_size: int,
    progress: Progress,
    counts: dict[str, int],
    skipped: dict[str, int],
) -> int:
    """Copy the usage rows; how many the source holds."""
    rows = await source.read(_read_usage)
    progress(Step(kind="usage", done=0, total=len(rows)))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        written = await store.execute_write_fn(functools.partial(_write_usage, chunk))
        counts["usage"] += written
        skipped["usage"] += len(chunk) - written
        progress(Step(kind="usage", done=start + len(chunk), total=len(rows)))
    return len(rows)


# -- agents and safe mode -------------------------------------------------------------------------


def _same_agent(a: StoredAgent | None, b: StoredAgent) -> bool:
    """Equal but for the source label (a folder here, ``postgres:deployed/<name>`` there)."""
    return a is not None and attrs.evolve(a, source=b.source) == b


async def _copy_agents(
    stored: Sequence[StoredAgent],
    target: PostgresDeployments,
    *,
    progress: Progress,
    counts: dict[str, int],
    skipped: dict[str, int],
) -> None:
    progress(Step(kind="agents", done=0, total=len(stored)))
    for done, agent in enumerate(stored, 1):
        if _same_agent(await target.load(agent.name), agent):
            skipped["agents"] += 1
        else:
            await target.save(agent.name, agent.content_hash, agent.content, agent.module)
            canary = None
            if agent.canary is not None:
                await target.save(
                    agent.name, agent.canary.content_hash, agent.canary.content, agent.canary.module
                )
                canary = CanaryState(
                    content_hash=agent.canary.content_hash,
                    traffic_percentage=agent.canary.traffic_percentage,
                )
            await target.set_active(agent.name, agent.content_hash, canary=canary)
            counts["agents"] += 1
        progress(Step(kind="agents", done=done, total=len(stored)))


async def _served_alike(stored: Sequence[StoredAgent], target: PostgresDeployments) -> int:
    alike = 0
    for agent in stored:
        alike += _same_agent(await target.load(agent.name), agent)
    return alike


# -- the whole ------------------------------------------------------------------------------------


def _notify_agent(conn: Any, name: str) -> None:
    notify(conn, "agent", {"name": name}, sender="cli", channel=DEFAULT_CHANNEL)


def _notify_safe_mode(conn: Any) -> None:
    notify(conn, "safe_mode", {}, sender="cli", channel=DEFAULT_CHANNEL)


def _ignore(step: Step) -> None:
    del step


async def migrate(
    source: MigrationSource,
    url: str,
    *,
    batch_size: int = BATCH_SIZE,
    connect_timeout_s: float = 5.0,
    statement_timeout_s: float = 30.0,
    progress: Progress = _ignore,
) -> MigrationReport:
    """Copy the embedded server's memory, conversations, deployed agents, LLM usage and
    safe-mode flag into the PostgreSQL database at ``url``, then count both sides.

    Args:
        source: the stopped server's data_dir and DuckDB file.
        url: the target, ``postgresql://user:password@host:5432/dbname``.
        batch_size: entities, relations or conversations per transaction.
        connect_timeout_s: the bound on connecting to the target.
        statement_timeout_s: PostgreSQL cancels a statement that runs longer.
        progress: called on the event loop after each batch, and with ``done=0`` as each kind
            starts.

    Returns:
        What was copied and the counts of both sides (:attr:`MigrationReport.verified`).

    Raises:
        MigrationRefused: data_dir is missing, or a server runs on it.
        DataDirLockedError: a server started between the check and taking the lock.
        StoreOpenError: the DuckDB file is missing or unreadable, or lacks Caxton's tables.
        PostgresStartError: the target cannot be used (unreachable, refused the password, no
            such database, no pgvector, a failed migration); the message names the fix.
        StorageUnavailable: the target stopped answering during the copy (run again).

    Cancellation:
        Batches already committed stay in the target; the one in flight commits or rolls back
        whole. Running again completes the copy.

    Resource handling:
        The data_dir lock, the read-only DuckDB connection and the target's connections are
        released before returning, also on error or cancellation.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started = time.monotonic()
    target_name = redact(url)
    counts = dict.fromkeys(KINDS, 0)
    skipped = dict.fromkeys(KINDS, 0)
    problems: list[str] = []
    store = PostgresStore(
        url,
        migrations=postgres_migrations(),
        pool_size=2,
        connect_timeout_s=connect_timeout_s,
        statement_timeout_s=statement_timeout_s,
    )
    async with (
        _hold_data_dir(source.data_dir),
        _open_source(source.database_path) as reader,
        running(store.run),
    ):
        before = await reader.read(_count_tables)
        await _copy_memory(
            reader,
            store,
            batch_size=batch_size,
            progress=progress,
            counts=counts,
            problems=problems,
        )
        await _copy_conversations(
            reader,
            store,
            total=before["conversations"],
            batch_size=batch_size,
            progress=progress,
            counts=counts,
            skipped=skipped,
        )
        stored = await FileDeployments(source.data_dir / "deployed").load_all()
        # instances already running on the target hear of each change, as from a server
        deployments = PostgresDeployments(store, notify=_notify_agent)
        await _copy_agents(stored, deployments, progress=progress, counts=counts, skipped=skipped)
        usage = await _copy_usage(
            reader,
            store,
            batch_size=batch_size,
            progress=progress,
            counts=counts,
            skipped=skipped,
        )
        flag = await trio.to_thread.run_sync(read_flag, source.data_dir)
        if flag.enabled:
            await PostgresSafeModeFlag(store, notify=_notify_safe_mode).write(flag)
        after = await store.execute_fn(_count_tables)
        alike = await _served_alike(stored, deployments)
        usage_after = await store.execute_fn(_count_usage)
    sides = (
        {**before, "agents": len(stored), "usage": usage},
        {**after, "agents": alike, "usage": usage_after},
    )
    return MigrationReport(
        data_dir=source.data_dir,
        database=source.database_path,
        target=target_name,
        counts=tuple(
            KindCount(
                kind=kind,
                source=sides[0][kind],
                target=sides[1][kind],
                copied=counts[kind],
                skipped=skipped[kind],
            )
            for kind in KINDS
        ),
        safe_mode=flag.enabled,
        problems=tuple(problems),
        seconds=time.monotonic() - started,
    )
