"""The cluster: instances sharing one PostgreSQL, their heartbeats, and push between them.

:class:`Heartbeat` keeps this instance's row fresh and lists the live ones (the
:class:`ClusterView` behind ``GET /api/v1/cluster``); :class:`Notifier` carries notices of
changes from one instance to the others (``LISTEN``/``NOTIFY``). With the embedded backend the
cluster is one instance: the Heartbeat writes nothing and :class:`NullNotifier` pushes nothing.
"""

from caxton.cluster.instances import (
    BackendName,
    ClusterView,
    Heartbeat,
    HeartbeatStatistics,
    InstanceInfo,
    new_instance_id,
)
from caxton.cluster.notify import (
    DEFAULT_CHANNEL,
    RESYNC,
    Handler,
    Notice,
    NoticeBus,
    NoticeTooLarge,
    Notifier,
    NotifierStatistics,
    NullNotifier,
    notify,
)
from caxton.cluster.schema import CLUSTER_POSTGRES_MIGRATIONS

__all__ = [
    "CLUSTER_POSTGRES_MIGRATIONS",
    "DEFAULT_CHANNEL",
    "RESYNC",
    "BackendName",
    "ClusterView",
    "Handler",
    "Heartbeat",
    "HeartbeatStatistics",
    "InstanceInfo",
    "Notice",
    "NoticeBus",
    "NoticeTooLarge",
    "Notifier",
    "NotifierStatistics",
    "NullNotifier",
    "new_instance_id",
    "notify",
]
