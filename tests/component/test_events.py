from __future__ import annotations

import pytest
import trio

from caxton.events import Event, EventHub


async def test_subscribers_get_events_published_after_they_joined() -> None:
    hub = EventHub()
    hub.publish(Event(type="agent_deployed", agent="before"))
    async with hub.subscribe() as first, hub.subscribe() as second:
        hub.publish(Event(type="agent_deleted", agent="a"))
        assert (await first.receive()).agent == "a"
        assert (await second.receive()).agent == "a"
    assert hub.statistics()["subscribers"] == 0


async def test_slow_subscriber_is_dropped_without_blocking_the_publisher() -> None:
    hub = EventHub(buffer=3)
    async with hub.subscribe() as slow, hub.subscribe() as fast:
        with trio.fail_after(1):
            for i in range(3):
                hub.publish(Event(type="message_routed", data={"i": i}))
                assert (await fast.receive()).data == {"i": i}
            hub.publish(Event(type="message_routed", data={"i": 3}))  # slow is now full
        received = [event.data["i"] async for event in slow]
        assert received == [0, 1, 2]  # then its stream ended
        assert (await fast.receive()).data == {"i": 3}
    assert hub.statistics()["dropped"] == 1


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError, match="type"):
        Event(type="agent_exploded")
