"""Instances and heartbeats: who runs on this database, as ``GET /api/v1/cluster`` shows it.

With the PostgreSQL backend every instance keeps a row of ``cluster_instances`` fresh: the
:class:`Heartbeat` component upserts it at start and then every ``interval_s`` (with the
database clock), and deletes it on a clean shutdown. An instance is live while its last
heartbeat is at most three intervals old, so one that crashed drops out of the list after three
missed beats (and its row is purged an hour later by whoever still runs). Every instance of a
cluster is expected to beat at the same interval (one setting).

With the embedded backend (not ``store.shared``) there is no table: the cluster is this one
process, and the list holds it alone, in the same shape.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

import attrs
import trio

from caxton.cluster.schema import DELETE_INSTANCE, LIVE_INSTANCES, PURGE_DEAD, UPSERT_INSTANCE
from caxton.errors import ServiceUnavailable, StartupError

if TYPE_CHECKING:
    from collections.abc import Callable

    from caxton.store.backend import Backend

LOGGER = logging.getLogger("caxton.cluster")

BackendName = Literal["embedded", "postgres"]

#: An instance is live while its last heartbeat is at most this many intervals old.
MISSED_BEATS = 3
#: Rows whose last heartbeat is older than this are deleted by any live instance.
PURGE_AFTER_S = 3600.0


def new_instance_id() -> str:
    """A readable id unique to this process: ``<host>-<pid>-<4 hex>``."""
    host = socket.gethostname().split(".")[0] or "caxton"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


@attrs.frozen(kw_only=True)
class InstanceInfo:
    """One running instance, as the cluster lists it.

    Attributes:
        id: the instance id (unique per process).
        address: where the instance serves its API (``http://10.0.0.5:8080``).
        version: the Caxton version it runs.
        agents: how many agents it ran at its last heartbeat.
        started_at: its first heartbeat (UTC).
        last_heartbeat: its latest heartbeat (UTC).
        is_self: whether it is the instance answering (``"self"`` in JSON).
    """

    id: str
    address: str
    version: str
    agents: int
    started_at: dt.datetime
    last_heartbeat: dt.datetime
    is_self: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "version": self.version,
            "agents": self.agents,
            "started_at": self.started_at.isoformat(),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "self": self.is_self,
        }


class ClusterView(Protocol):
    """What ``GET /api/v1/cluster`` needs: this instance and the live ones."""

    @property
    def instance_id(self) -> str:
        """This instance's id."""
        ...

    @property
    def backend(self) -> BackendName:
        """Where durable state lives: ``embedded`` (DuckDB) or ``postgres``."""
        ...

    async def live_instances(self) -> list[InstanceInfo]:
        """The instances whose heartbeat is recent, this one included."""
        ...


@attrs.frozen(kw_only=True)
class HeartbeatStatistics:
    """A snapshot of the heartbeat's counters."""

    instance_id: str
    backend: BackendName
    interval_s: float
    beats_total: int
    beat_errors_total: int
    failing_since: str | None


class Heartbeat:
    """Keeps this instance's row of ``cluster_instances`` fresh (a :class:`ClusterView`).

    Args:
        store: the store of record; with a store that is not ``shared`` nothing is written.
        instance_id: this instance's id (:func:`new_instance_id`).
        address: where this instance serves its API, for operators and peers.
        version: the Caxton version this instance runs.
        agents_fn: how many agents this instance runs now (called at each beat).
        interval_s: seconds between beats; an instance is dropped after three missed beats.
        clean_shutdown: delete the row when ``run`` ends (``False`` leaves it, as a crash
            would; for tests).
        close_timeout_s: the bound on deleting the row at shutdown.
    """

    def __init__(
        self,
        store: Backend,
        *,
        instance_id: str,
        address: str,
        version: str,
        agents_fn: Callable[[], int],
        interval_s: float = 2.0,
        clean_shutdown: bool = True,
        close_timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._store = store
        self._instance_id = instance_id
        self.address = address
        self.version = version
        self.agents_fn = agents_fn
        self.interval_s = interval_s
        self.clean_shutdown = clean_shutdown
        self.close_timeout_s = close_timeout_s
        self._started_at: dt.datetime | None = None
        self._beats_total = 0
        self._beat_errors_total = 0
        self._failing_since: dt.datetime | None = None
        self._ran = False

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def backend(self) -> BackendName:
        return "postgres" if self._store.shared else "embedded"

    @property
    def window_s(self) -> float:
        """How old a last heartbeat may be for its instance to count as live."""
        return MISSED_BEATS * self.interval_s

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[Heartbeat] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Beat once, report started (with this heartbeat as the handle), then beat every
        ``interval_s`` until cancelled.

        A beat that finds the database unavailable is logged (once, until one succeeds again)
        and retried at the next interval; the server keeps running.

        Raises:
            RuntimeError: ``run`` was called twice.
            StartupError: the first beat failed for another reason than the database being
                unavailable (the table is missing: the store lacks the cluster migrations).
            Exception: a later beat failed for such a reason (a bug).

        Cancellation:
            Cancelling ``run`` stops the beats. A beat in flight finishes first (it runs in
            the store's worker thread, bounded by its statement timeout).

        Resource handling:
            On exit the row is deleted (shielded, bounded by ``close_timeout_s``) unless
            ``clean_shutdown`` is false; a failure to delete is logged, and the row then
            drops out of the list after three intervals like a crashed instance's.
        """
        if self._ran:
            raise RuntimeError("Heartbeat.run() can only be called once; create a new one")
        self._ran = True
        self._started_at = dt.datetime.now(dt.UTC)
        if not self._store.shared:
            task_status.started(self)
            await trio.sleep_forever()
        try:
            try:
                await self._beat(purge=True)
            except Exception as exc:
                raise StartupError(
                    f"instance {self._instance_id} cannot record itself in cluster_instances "
                    f"({type(exc).__name__}: {exc}). Give the store the cluster migrations "
                    "(caxton.cluster.CLUSTER_POSTGRES_MIGRATIONS) so it creates the table",
                    details={"instance": self._instance_id},
                ) from exc
            task_status.started(self)
            next_beat = trio.current_time()
            while True:
                next_beat += self.interval_s
                now = trio.current_time()
                if next_beat < now:  # a slow beat: do not burst to catch up
                    next_beat = now
                await trio.sleep_until(next_beat)
                await self._beat(purge=self._beats_total % 30 == 0)
        finally:
            if self.clean_shutdown and self._beats_total:
                await self._delete_row()

    async def _beat(self, *, purge: bool) -> None:
        agents = int(self.agents_fn())
        values = (self._instance_id, self.address, self.version, agents)

        def write(conn: Any) -> None:
            conn.execute(UPSERT_INSTANCE, values)
            if purge:
                conn.execute(PURGE_DEAD, (PURGE_AFTER_S,))

        try:
            # an upsert of this instance's row and a purge of long-dead rows: each may run
            # twice, so one round trip each, without a transaction or a check around them
            await self._store.idempotent_write(write)
        except ServiceUnavailable as exc:
            self._beat_errors_total += 1
            if self._failing_since is None:
                self._failing_since = dt.datetime.now(dt.UTC)
                LOGGER.warning(
                    "instance %s: heartbeat failed, retrying every %gs: %s",
                    self._instance_id,
                    self.interval_s,
                    exc.message,
                )
            return
        self._beats_total += 1
        if self._failing_since is not None:
            LOGGER.info(
                "instance %s: heartbeat recorded again after %.1fs",
                self._instance_id,
                (dt.datetime.now(dt.UTC) - self._failing_since).total_seconds(),
            )
            self._failing_since = None

    async def _delete_row(self) -> None:
        instance_id = self._instance_id

        def delete(conn: Any) -> None:
            conn.execute(DELETE_INSTANCE, (instance_id,))

        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.close_timeout_s
            try:
                await self._store.idempotent_write(delete)
            except Exception as exc:  # a cleanup failure must not mask why run() ends
                LOGGER.warning(
                    "instance %s: could not remove its cluster row at shutdown (%s); it drops "
                    "out of the list after %gs",
                    instance_id,
                    exc,
                    self.window_s,
                )
                return
        if scope.cancelled_caught:
            LOGGER.warning(
                "instance %s: removing its cluster row took longer than %gs; it drops out of "
                "the list after %gs",
                instance_id,
                self.close_timeout_s,
                self.window_s,
            )

    # ----------------------------------------------------------------------------- reads

    async def live_instances(self) -> list[InstanceInfo]:
        """The live instances, oldest first; this one is marked ``is_self``.

        Raises:
            ServiceUnavailable: the database does not answer (PostgreSQL only).

        Cancellation:
            As the store's ``execute_fn``: a read in flight finishes first.
        """
        if not self._store.shared:
            return [self._local()]
        window_s = self.window_s

        def read(conn: Any) -> list[tuple[Any, ...]]:
            return list(conn.execute(LIVE_INSTANCES, (window_s,)).fetchall())

        rows = await self._store.execute_fn(read)
        return [
            InstanceInfo(
                id=str(row[0]),
                address=str(row[1]),
                version=str(row[2]),
                agents=int(row[3]),
                started_at=_utc(row[4]),
                last_heartbeat=_utc(row[5]),
                is_self=row[0] == self._instance_id,
            )
            for row in rows
        ]

    def _local(self) -> InstanceInfo:
        now = dt.datetime.now(dt.UTC)
        return InstanceInfo(
            id=self._instance_id,
            address=self.address,
            version=self.version,
            agents=int(self.agents_fn()),
            started_at=self._started_at or now,
            last_heartbeat=now,
            is_self=True,
        )

    def statistics(self) -> HeartbeatStatistics:
        """Return a snapshot of the heartbeat's counters."""
        failing = self._failing_since
        return HeartbeatStatistics(
            instance_id=self._instance_id,
            backend=self.backend,
            interval_s=self.interval_s,
            beats_total=self._beats_total,
            beat_errors_total=self._beat_errors_total,
            failing_since=failing.isoformat() if failing is not None else None,
        )


def _utc(value: Any) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a timestamp, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


__all__ = [
    "MISSED_BEATS",
    "BackendName",
    "ClusterView",
    "Heartbeat",
    "HeartbeatStatistics",
    "InstanceInfo",
    "new_instance_id",
]
