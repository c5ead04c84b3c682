"""Push between instances: PostgreSQL ``LISTEN``/``NOTIFY`` on one channel (issue #15).

When one instance changes shared state (deploys an agent, turns safe mode on), the others
should not wait for a poll to notice. The writer sends a *notice* inside its own write
transaction (:meth:`Notifier.notify`, so it is delivered only if the change commits) or on its
own (:meth:`Notifier.publish`); every other instance's :class:`Notifier` receives it and calls
the handlers subscribed to its kind.

* **wire format** — the ``pg_notify`` payload is JSON ``{"kind", "sender", "payload"}``;
  PostgreSQL caps it below 8000 bytes, so a notice names what changed (an agent's name), never
  carries it (:data:`MAX_NOTICE_BYTES`; :class:`NoticeTooLarge` otherwise). An instance ignores
  its own notices (``sender`` is its id).
* **receiving** — a dedicated psycopg connection in autocommit mode runs ``LISTEN``. The trio
  task waits until its socket has something to read (a ``MSG_PEEK`` receive on a duplicate of
  the socket: nothing is consumed), then reads what came with ``conn.notifies(timeout=0)`` in
  a worker thread; an idle instance wakes only for the ``ping_interval_s`` check (issue #21:
  it polled twice a second), and cancelling takes effect at once. When PostgreSQL goes away
  the Notifier logs it once, reconnects with a growing backoff, logs once when it listens
  again, and then hands every handler a ``resync`` notice: notices sent while it was away are
  lost, so subscribers reload.
* **handlers** — ``async (kind, payload) -> None``, run by a few workers in a nursery the
  Notifier owns, so a slow handler never stalls reading. Notices wait in
  :class:`PendingNotices`: a repeat of a notice still waiting (same kind and payload) is
  coalesced into it, one arriving while its twin runs waits for it to finish, and more than
  ``max_pending`` waiting notices are replaced by one ``resync``.

With the embedded backend there is one instance and nothing to push: :class:`NullNotifier`
has the same methods and does nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol, TypeAlias

import attrs
import psycopg
import trio
from psycopg import sql

from caxton.store.errors import PostgresUnreachable
from caxton.store.postgres import redact

if TYPE_CHECKING:
    from caxton.store.backend import Backend

LOGGER = logging.getLogger("caxton.cluster.notify")

DEFAULT_CHANNEL: Final = "caxton"
#: The kind every handler receives after a reconnect (or an overflow): reload everything.
RESYNC: Final = "resync"
#: ``pg_notify`` refuses payloads of 8000 bytes or more; a margin for the channel's encoding.
MAX_NOTICE_BYTES: Final = 7900

_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")

#: ``async handler(kind, payload)``; ``kind`` is ``resync`` after notices may have been missed.
Handler: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[None]]


class NoticeTooLarge(ValueError):
    """A notice's JSON is over :data:`MAX_NOTICE_BYTES`: send names, not bodies."""

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.size = size
        super().__init__(
            f"the {kind!r} notice is {size} bytes of JSON, over the {MAX_NOTICE_BYTES} bytes "
            "pg_notify takes: send what changed (a name, an id), and let receivers read it "
            "from the database"
        )


@attrs.frozen(kw_only=True)
class Notice:
    """One notice: what changed (``kind``, ``payload``) and who said so (``sender``)."""

    kind: str
    sender: str
    payload: Mapping[str, Any]
    #: notices with equal keys are coalesced (the sender does not matter); computed once, so
    #: a handler changing its payload cannot strand the key
    key: tuple[str, str] = attrs.field(init=False, eq=False, repr=False)

    @key.default
    def _key(self) -> tuple[str, str]:
        return self.kind, json.dumps(self.payload, sort_keys=True, separators=(",", ":"))


def check_kind(kind: str) -> None:
    """Raise ValueError unless ``kind`` is a short lower-case name other than ``resync``."""
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(
            f"a notice kind is a lower-case name of at most 64 characters (a-z, 0-9, _ . -), "
            f"got {kind!r}"
        )


def encode_notice(kind: str, payload: Mapping[str, Any], *, sender: str) -> str:
    """The ``pg_notify`` payload of a notice.

    Raises:
        ValueError: ``kind`` is not a valid name, is ``resync`` (only the receiving side makes
            those), or ``payload`` is not JSON.
        NoticeTooLarge: the JSON is over :data:`MAX_NOTICE_BYTES`.
    """
    check_kind(kind)
    if kind == RESYNC:
        raise ValueError("resync notices are made by the receiving Notifier, not sent")
    try:
        text = json.dumps(
            {"kind": kind, "sender": sender, "payload": dict(payload)},
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the {kind!r} notice's payload is not JSON: {exc}") from exc
    size = len(text.encode("utf-8"))
    if size > MAX_NOTICE_BYTES:
        raise NoticeTooLarge(kind, size)
    return text


def decode_notice(text: str) -> Notice:
    """The notice in a ``pg_notify`` payload.

    Raises:
        ValueError: ``text`` is not a notice (another program on the channel, or a bug).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {text[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object: {text[:80]!r}")
    kind, sender, payload = data.get("kind"), data.get("sender"), data.get("payload")
    if not isinstance(kind, str) or not _KIND.match(kind) or kind == RESYNC:
        raise ValueError(f"no valid kind: {text[:80]!r}")
    if not isinstance(sender, str) or not isinstance(payload, dict):
        raise ValueError(f"no sender or payload object: {text[:80]!r}")
    return Notice(kind=kind, sender=sender, payload=payload)


def send_notice(conn: Any, channel: str, text: str) -> None:
    """``SELECT pg_notify(channel, text)`` on ``conn`` (delivered when its transaction commits)."""
    conn.execute("SELECT pg_notify(%s, %s)", (channel, text))


def notify(
    conn: Any,
    kind: str,
    payload: Mapping[str, Any],
    *,
    sender: str,
    channel: str = DEFAULT_CHANNEL,
) -> None:
    """Send a notice inside the caller's transaction on ``conn`` (a psycopg connection): the
    other instances receive it when that transaction commits, never if it rolls back.

    Raises:
        ValueError, NoticeTooLarge: as :func:`encode_notice`.
    """
    send_notice(conn, channel, encode_notice(kind, payload, sender=sender))


class PendingNotices:
    """Notices waiting for their handlers, coalesced by key (sans-IO: no trio here).

    Args:
        max_pending: the most notices waiting; one more replaces them all by a ``resync``.
    """

    def __init__(self, *, max_pending: int = 1000) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._queued: dict[tuple[str, str], Notice] = {}
        self._busy: set[tuple[str, str]] = set()
        self.coalesced_total = 0
        self.overflows_total = 0

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, notice: Notice) -> None:
        """Queue ``notice``: merged into a waiting twin, or after the others.

        A ``resync`` replaces every waiting notice (a reload covers them).
        """
        key = notice.key
        if notice.kind == RESYNC:
            self.coalesced_total += len(self._queued)
            self._queued.clear()
            self._queued[key] = notice
            return
        if key in self._queued:
            self.coalesced_total += 1
            self._queued[key] = notice  # keeps its place in the queue
            return
        if len(self._queued) >= self.max_pending:
            self.overflows_total += 1
            self.add(Notice(kind=RESYNC, sender=notice.sender, payload={"reason": "overflow"}))
            return
        self._queued[key] = notice

    def take(self) -> Notice | None:
        """The oldest waiting notice whose twin is not being handled (marked busy), or None."""
        for key, notice in self._queued.items():
            if key not in self._busy:
                del self._queued[key]
                self._busy.add(key)
                return notice
        return None

    def done(self, notice: Notice) -> None:
        """``notice``'s handlers finished: a twin that waited may be taken now."""
        self._busy.discard(notice.key)


class NoticeBus(Protocol):
    """What a feature needs to push its changes to the other instances and hear theirs."""

    def subscribe(self, kind: str, handler: Handler) -> None:
        """Call ``handler(kind, payload)`` for every notice of ``kind`` from another instance,
        and with ``("resync", {...})`` when notices may have been missed."""
        ...

    def notify(self, conn: Any, kind: str, payload: Mapping[str, Any]) -> None:
        """Send a notice inside the caller's write transaction on ``conn``."""
        ...

    async def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Send a notice in a transaction of its own."""
        ...


@attrs.frozen(kw_only=True)
class NotifierStatistics:
    """A snapshot of the Notifier's counters."""

    channel: str
    listening: bool
    received_total: int
    own_total: int
    malformed_total: int
    unsubscribed_total: int
    delivered_total: int
    coalesced_total: int
    overflows_total: int
    handler_errors_total: int
    handler_timeouts_total: int
    reconnects_total: int
    published_total: int
    pending: int
    #: reads of the LISTEN connection (each a worker-thread call): one per burst of traffic,
    #: plus one per ``ping_interval_s`` while idle
    reads_total: int


class Notifier:
    """``LISTEN`` on ``channel`` and dispatch other instances' notices to subscribers.

    Args:
        url: the PostgreSQL URL (the store's); one more connection is opened, for ``LISTEN``.
        channel: the notification channel; every instance of a cluster uses the same.
        instance_id: this instance's id (notices it sent are ignored).
        store: the store that :meth:`publish` sends through.
        poll_s: unused (reads no longer poll: the socket is waited on); kept for callers.
        connect_timeout_s: the bound on each connection attempt.
        max_backoff_s: the longest wait between reconnection attempts.
        workers: how many handlers run at once.
        max_pending: the most notices waiting for a worker (then one ``resync`` replaces them).
        handler_timeout_s: a handler running longer is cancelled (and logged).
        ping_interval_s: with no notice for this long, the connection is checked with a query
            (a dead peer is otherwise only noticed by TCP keepalives).
    """

    def __init__(
        self,
        url: str,
        channel: str = DEFAULT_CHANNEL,
        *,
        instance_id: str,
        store: Backend,
        poll_s: float = 0.5,
        connect_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
        workers: int = 4,
        max_pending: int = 1000,
        handler_timeout_s: float = 30.0,
        ping_interval_s: float = 10.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not channel or len(channel) > 63:
            raise ValueError(f"channel must be 1 to 63 characters, got {channel!r}")
        self.url = url
        self.where = redact(url)
        self.channel = channel
        self.instance_id = instance_id
        self._store = store
        self.poll_s = poll_s
        self.connect_timeout_s = connect_timeout_s
        self.max_backoff_s = max_backoff_s
        self.workers = workers
        self.handler_timeout_s = handler_timeout_s
        self.ping_interval_s = ping_interval_s
        self._handlers: dict[str, list[Handler]] = {}
        self._pending = PendingNotices(max_pending=max_pending)
        self._changed = trio.Event()
        # one thread at a time uses the LISTEN connection
        self._limiter = trio.CapacityLimiter(1)
        self._conn: psycopg.Connection[Any] | None = None
        # a duplicate of the LISTEN connection's socket, waited on for readability
        self._socket: trio.socket.SocketType | None = None
        self._last_traffic = time.monotonic()
        self._listening = False
        self._ran = False
        self._received_total = 0
        self._own_total = 0
        self._malformed_total = 0
        self._unsubscribed_total = 0
        self._delivered_total = 0
        self._handler_errors_total = 0
        self._handler_timeouts_total = 0
        self._reconnects_total = 0
        self._published_total = 0
        self._reads_total = 0

    # ----------------------------------------------------------------------------- sending

    def subscribe(self, kind: str, handler: Handler) -> None:
        """Call ``handler(kind, payload)`` for each notice of ``kind`` from another instance.

        Every handler is also called as ``handler("resync", {"reason": ...})`` after the
        Notifier reconnected (notices may have been missed): reload what the notices keep
        fresh. Subscribe before :meth:`run` starts, or at least before loading that state.

        Raises:
            ValueError: ``kind`` is not a valid kind name.
        """
        check_kind(kind)
        handlers = self._handlers.setdefault(kind, [])
        if handler not in handlers:
            handlers.append(handler)

    def notify(self, conn: Any, kind: str, payload: Mapping[str, Any]) -> None:
        """Send a notice inside the caller's write transaction on ``conn`` (synchronous: call
        it in the ``fn(conn)`` given to the store's ``execute_write_fn``); it reaches the other
        instances when the transaction commits.

        Raises:
            ValueError, NoticeTooLarge: as :func:`encode_notice`.
        """
        notify(conn, kind, payload, sender=self.instance_id, channel=self.channel)
        self._published_total += 1

    async def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Send a notice in a write transaction of its own.

        Raises:
            ValueError, NoticeTooLarge: as :func:`encode_notice` (before anything is sent).
            StorageUnavailable: PostgreSQL does not answer (the notice is not sent).

        Cancellation:
            As the store's ``execute_write_fn``: a send that started commits first.
        """
        text = encode_notice(kind, payload, sender=self.instance_id)
        channel = self.channel
        await self._store.execute_write_fn(lambda conn: send_notice(conn, channel, text))
        self._published_total += 1

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[Notifier] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Connect and ``LISTEN``, report started (with this Notifier as the handle), then
        dispatch notices until cancelled, reconnecting whenever the connection is lost.

        Raises:
            PostgresUnreachable: the first connection failed (later losses are retried).
            RuntimeError: ``run`` was called twice.

        Cancellation:
            Takes effect at once while listening or waiting to reconnect, after the read
            in flight (a thread reading what already came, or the ping) while reading, and
            within ``connect_timeout_s`` while a connection attempt runs.
            Running handlers are cancelled.

        Resource handling:
            The LISTEN connection is closed on exit; waiting notices are dropped.
        """
        if self._ran:
            raise RuntimeError("Notifier.run() can only be called once; create a new one")
        self._ran = True
        try:
            try:
                self._conn = await trio.to_thread.run_sync(self._connect, limiter=self._limiter)
            except psycopg.Error as exc:
                raise PostgresUnreachable(
                    self.where,
                    f"cannot open the connection that listens for other instances' notices "
                    f"({_first_line(exc)})",
                    "Check that PostgreSQL is running and accepts one more connection per "
                    "instance (max_connections).",
                ) from exc
            self._listening = True
            async with trio.open_nursery() as nursery:
                for _ in range(self.workers):
                    nursery.start_soon(self._worker)
                task_status.started(self)
                await self._listen()
        finally:
            self._listening = False
            self._close_socket()
            conn, self._conn = self._conn, None
            if conn is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(2, int(self.connect_timeout_s + 0.999)),
            application_name="caxton-notify",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        self._last_traffic = time.monotonic()
        return conn

    def _read(self, conn: psycopg.Connection[Any]) -> list[str]:
        """In a worker thread: the notices that came (never waits for more); with none for
        ``ping_interval_s``, the connection is checked with ``SELECT 1`` first."""
        self._reads_total += 1
        if time.monotonic() - self._last_traffic >= self.ping_interval_s:
            conn.execute("SELECT 1")  # a notice arriving meanwhile waits in psycopg's backlog
        texts = [n.payload for n in conn.notifies(timeout=0) if n.channel == self.channel]
        self._last_traffic = time.monotonic()
        return texts

    async def _listen(self) -> NoReturn:
        while True:
            conn = self._conn
            assert conn is not None
            try:
                texts = await trio.to_thread.run_sync(self._read, conn, limiter=self._limiter)
            except psycopg.Error as exc:
                await self._reconnect(exc)
                continue
            for text in texts:
                self._receive(text)
            await self._wait_for_traffic(conn)

    async def _wait_for_traffic(self, conn: psycopg.Connection[Any]) -> None:
        """Return once the LISTEN connection has something to read, or the ping is due."""
        if self._socket is None:
            self._socket = trio.socket.from_stdlib_socket(
                socket.socket(fileno=os.dup(conn.fileno()))
            )
        due = self._last_traffic + self.ping_interval_s - time.monotonic()
        with trio.move_on_after(max(0.0, due)):
            try:
                if await self._socket.recv(1, socket.MSG_PEEK):
                    return
            except OSError:
                pass
            # closed by the server (or broken): the ping that follows says so
            self._last_traffic = float("-inf")

    def _close_socket(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    async def _reconnect(self, lost: psycopg.Error) -> None:
        self._listening = False
        since = time.monotonic()
        LOGGER.warning(
            "the connection listening for notices on %s was lost (%s); reconnecting, other "
            "instances' changes arrive once it is back",
            self.where,
            _first_line(lost),
        )
        self._close_socket()
        old, self._conn = self._conn, None
        if old is not None:
            await trio.to_thread.run_sync(old.close, limiter=self._limiter)
        delay = 0.1
        attempts = 0
        while True:
            attempts += 1
            try:
                self._conn = await trio.to_thread.run_sync(self._connect, limiter=self._limiter)
                break
            except psycopg.Error as exc:
                LOGGER.debug("notice connection attempt %d failed: %s", attempts, exc)
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.max_backoff_s)
        self._listening = True
        self._reconnects_total += 1
        LOGGER.info(
            "listening for notices on %s again after %.1fs (%d attempts); subscribers resync",
            self.where,
            time.monotonic() - since,
            attempts,
        )
        self._queue(Notice(kind=RESYNC, sender=self.instance_id, payload={"reason": "reconnected"}))

    def _receive(self, text: str) -> None:
        self._received_total += 1
        try:
            notice = decode_notice(text)
        except ValueError as exc:
            self._malformed_total += 1
            LOGGER.warning(
                "ignored a message on channel %s that is no notice: %s", self.channel, exc
            )
            return
        if notice.sender == self.instance_id:
            self._own_total += 1
            return
        if not self._handlers.get(notice.kind):
            self._unsubscribed_total += 1
            return
        self._queue(notice)

    def _queue(self, notice: Notice) -> None:
        self._pending.add(notice)
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _worker(self) -> NoReturn:
        while True:
            notice = self._pending.take()
            if notice is None:
                await self._changed.wait()
                continue
            try:
                await self._deliver(notice)
            finally:
                self._pending.done(notice)
                self._poke()

    async def _deliver(self, notice: Notice) -> None:
        if notice.kind == RESYNC:
            handlers: list[Handler] = []
            for registered in self._handlers.values():
                handlers.extend(h for h in registered if h not in handlers)
        else:
            handlers = list(self._handlers.get(notice.kind, ()))
        for handler in handlers:
            with trio.move_on_after(self.handler_timeout_s) as scope:
                try:
                    # each handler its own copy: one cannot change what the next sees
                    await handler(notice.kind, copy.deepcopy(dict(notice.payload)))
                except Exception:
                    self._handler_errors_total += 1
                    LOGGER.exception(
                        "a handler of %r notices failed (from %s)", notice.kind, notice.sender
                    )
                    continue
            if scope.cancelled_caught:
                self._handler_timeouts_total += 1
                LOGGER.warning(
                    "a handler of %r notices ran over %gs and was cancelled",
                    notice.kind,
                    self.handler_timeout_s,
                )
                continue
            self._delivered_total += 1

    def statistics(self) -> NotifierStatistics:
        """Return a snapshot of the Notifier's counters."""
        return NotifierStatistics(
            channel=self.channel,
            listening=self._listening,
            received_total=self._received_total,
            own_total=self._own_total,
            malformed_total=self._malformed_total,
            unsubscribed_total=self._unsubscribed_total,
            delivered_total=self._delivered_total,
            coalesced_total=self._pending.coalesced_total,
            overflows_total=self._pending.overflows_total,
            handler_errors_total=self._handler_errors_total,
            handler_timeouts_total=self._handler_timeouts_total,
            reconnects_total=self._reconnects_total,
            published_total=self._published_total,
            pending=len(self._pending),
            reads_total=self._reads_total,
        )


class NullNotifier:
    """The embedded backend's :class:`NoticeBus`: one instance, so nothing to push or hear."""

    def __init__(self, instance_id: str = "") -> None:
        self.instance_id = instance_id

    def subscribe(self, kind: str, handler: Handler) -> None:
        check_kind(kind)

    def notify(self, conn: Any, kind: str, payload: Mapping[str, Any]) -> None:
        encode_notice(kind, payload, sender=self.instance_id)  # the same checks, no effect

    async def publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        encode_notice(kind, payload, sender=self.instance_id)

    async def run(
        self, *, task_status: trio.TaskStatus[NullNotifier] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Report started and wait to be cancelled (the same lifecycle as :class:`Notifier`)."""
        task_status.started(self)
        await trio.sleep_forever()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _conforms() -> None:  # pragma: no cover - checked by mypy, never run
    bus: NoticeBus = NullNotifier()
    del bus


__all__ = [
    "DEFAULT_CHANNEL",
    "MAX_NOTICE_BYTES",
    "RESYNC",
    "Handler",
    "Notice",
    "NoticeBus",
    "NoticeTooLarge",
    "Notifier",
    "NotifierStatistics",
    "NullNotifier",
    "PendingNotices",
    "decode_notice",
    "encode_notice",
    "notify",
]
