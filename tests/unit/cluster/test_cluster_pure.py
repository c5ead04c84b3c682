"""The cluster's pure parts: the notice wire format, coalescing, and the CLI's table."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from caxton.cli.cluster import render_status
from caxton.cluster import InstanceInfo, new_instance_id
from caxton.cluster.notify import (
    MAX_NOTICE_BYTES,
    RESYNC,
    Notice,
    NoticeTooLarge,
    PendingNotices,
    decode_notice,
    encode_notice,
)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_a_notice_round_trips_with_its_sender() -> None:
    text = encode_notice("agent", {"name": "echo", "revision": 3}, sender="a-1")
    assert json.loads(text) == {
        "kind": "agent",
        "sender": "a-1",
        "payload": {"name": "echo", "revision": 3},
    }
    notice = decode_notice(text)
    assert notice == Notice(kind="agent", sender="a-1", payload={"name": "echo", "revision": 3})


def test_a_notice_over_the_pg_notify_limit_is_refused_with_the_fix() -> None:
    encode_notice("agent", {"name": "x" * (MAX_NOTICE_BYTES - 100)}, sender="a")
    with pytest.raises(NoticeTooLarge, match="send what changed") as caught:
        encode_notice("agent", {"body": "é" * 4000}, sender="a")  # 8000 bytes in UTF-8
    assert caught.value.size > MAX_NOTICE_BYTES


@pytest.mark.parametrize("kind", ["", "Agent", "has space", "x" * 65, RESYNC])
def test_bad_kinds_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match=r"kind|resync"):
        encode_notice(kind, {}, sender="a")


def test_a_payload_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        encode_notice("agent", {"when": NOW}, sender="a")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"kind": "agent", "sender": "a"}',
        '{"kind": "resync", "sender": "a", "payload": {}}',
        '{"kind": 3, "sender": "a", "payload": {}}',
    ],
)
def test_what_is_not_a_notice_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"JSON|kind|sender"):
        decode_notice(text)


def notice(kind: str, sender: str = "b", **payload: object) -> Notice:
    return Notice(kind=kind, sender=sender, payload=payload)


def test_repeats_of_a_waiting_notice_are_coalesced_keeping_its_place() -> None:
    pending = PendingNotices()
    pending.add(notice("agent", name="a"))
    pending.add(notice("agent", name="b"))
    pending.add(notice("agent", sender="c", name="a"))  # another sender, same change
    assert len(pending) == 2
    assert pending.coalesced_total == 1
    first = pending.take()
    assert first is not None
    assert first.payload == {"name": "a"}
    assert first.sender == "c"  # the latest of the twins
    second = pending.take()
    assert second is not None
    assert second.payload == {"name": "b"}
    assert pending.take() is None


def test_a_twin_arriving_while_its_notice_runs_waits_for_it() -> None:
    pending = PendingNotices()
    pending.add(notice("agent", name="a"))
    running = pending.take()
    assert running is not None
    pending.add(notice("agent", name="a"))
    pending.add(notice("safe_mode", enabled=True))
    other = pending.take()
    assert other is not None
    assert other.kind == "safe_mode"  # the twin is skipped while its key is busy
    assert pending.take() is None
    pending.done(running)
    again = pending.take()
    assert again is not None
    assert again.payload == {"name": "a"}


def test_a_resync_replaces_what_waits_and_overflow_becomes_one() -> None:
    pending = PendingNotices(max_pending=3)
    for name in "abc":
        pending.add(notice("agent", name=name))
    pending.add(notice("agent", name="d"))
    assert pending.overflows_total == 1
    assert len(pending) == 1
    only = pending.take()
    assert only is not None
    assert only.kind == RESYNC
    assert only.payload == {"reason": "overflow"}


def test_instance_json_says_self_and_utc_times() -> None:
    info = InstanceInfo(
        id="h-1-ab12",
        address="http://10.0.0.5:8080",
        version="0.1.0",
        agents=3,
        started_at=NOW,
        last_heartbeat=NOW + dt.timedelta(seconds=4),
        is_self=True,
    )
    assert info.to_json() == {
        "id": "h-1-ab12",
        "address": "http://10.0.0.5:8080",
        "version": "0.1.0",
        "agents": 3,
        "started_at": "2026-01-02T03:04:05+00:00",
        "last_heartbeat": "2026-01-02T03:04:09+00:00",
        "self": True,
    }


def test_instance_ids_differ_between_calls() -> None:
    assert new_instance_id() != new_instance_id()


def test_the_status_table_marks_the_answering_instance() -> None:
    data = {
        "instance": "b-2",
        "backend": "postgres",
        "instances": [
            {
                "id": "a-1",
                "address": "http://10.0.0.4:8080",
                "version": "0.1.0",
                "agents": 2,
                "started_at": "2026-01-02T03:00:00+00:00",
                "last_heartbeat": "2026-01-02T03:04:03.500000+00:00",
                "self": False,
            },
            {
                "id": "b-2",
                "address": "http://10.0.0.5:8080",
                "version": "0.1.0",
                "agents": 2,
                "started_at": "2026-01-02T03:01:00+00:00",
                "last_heartbeat": "2026-01-02T03:04:05+00:00",
                "self": True,
            },
        ],
    }
    lines = render_status(data, now=NOW).splitlines()
    assert lines[0] == "backend: postgres  instances: 2  answered by: b-2"
    assert lines[1].split() == ["ID", "ADDRESS", "VERSION", "AGENTS", "STARTED", "HEARTBEAT"]
    assert lines[2].split()[:2] == ["a-1", "http://10.0.0.4:8080"]
    assert lines[2].endswith("1.5s ago")
    assert lines[3].split()[:2] == ["*", "b-2"]
    assert lines[3].endswith("0.0s ago")
