"""The A2A task table, as store migrations for DuckDB and PostgreSQL (issue #19).

``a2a_tasks`` holds one row per A2A task, so that every instance sharing a store answers
GetTask, ListTasks, CancelTask and SubscribeToTask for a task another instance runs, and a
restarted one-node server still answers for the tasks it finished:

* who and what: ``id``, ``context_id`` (the conversation), ``agent``, ``caller`` (the A2A
  client's sender stamp; another caller's task is "not found"), ``instance`` (the cluster
  instance whose process runs the call, and so holds its cancel scope);
* where it is: ``state``, ``status_message``, ``history`` and ``artifacts`` (JSON text of the
  A2A objects, each at most ``messaging.max_message_size`` of content), ``size_bytes``;
* when: ``created_at``, ``updated_at`` (epoch seconds, the writer's clock; finished rows go
  after ``a2a.task_ttl``), ``cancel_requested_at`` (set by CancelTask on an instance that does
  not run the call: the owner stops it).
"""

from __future__ import annotations

from typing import Final

from caxton.store.migrations import Migration

#: The feature name of the A2A task migrations.
FEATURE: Final = "a2a_tasks"

_COLUMNS: Final = """
    id {text} PRIMARY KEY,
    context_id {text} NOT NULL,
    agent {text} NOT NULL,
    caller {text} NOT NULL,
    instance {text} NOT NULL,
    state {text} NOT NULL,
    status_message {text},
    history {text} NOT NULL,
    artifacts {text} NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at {double} NOT NULL,
    updated_at {double} NOT NULL,
    cancel_requested_at {double}
"""

_DESCRIPTION: Final = "a2a_tasks: A2A tasks, readable from every instance of a cluster"

A2A_TASK_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        feature=FEATURE,
        version=1,
        description=_DESCRIPTION,
        # no secondary index: DuckDB checks an index on every update of its columns, and the
        # one-node table is small enough (a2a.max_tasks rows) to scan
        statements=(
            "CREATE TABLE a2a_tasks (" + _COLUMNS.format(double="DOUBLE", text="VARCHAR") + ")",
        ),
    ),
)

A2A_TASK_POSTGRES_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        feature=FEATURE,
        version=1,
        description=_DESCRIPTION,
        statements=(
            "CREATE TABLE a2a_tasks ("
            + _COLUMNS.format(double="DOUBLE PRECISION", text="TEXT")
            + ")",
            "CREATE INDEX a2a_tasks_listing ON a2a_tasks (agent, caller, updated_at)",
            "CREATE INDEX a2a_tasks_state ON a2a_tasks (state, updated_at)",
        ),
    ),
)

__all__ = ["A2A_TASK_MIGRATIONS", "A2A_TASK_POSTGRES_MIGRATIONS", "FEATURE"]
