"""``WS /ws/events``: the live stream of agent and routing events."""

from __future__ import annotations

import trio
from quart import websocket

from caxton.http.guard import charge_frame
from caxton.http.routes import RouteTable
from caxton.http.state import current_services
from caxton.security.errors import RateLimited
from caxton.security.roles import Role

routes = RouteTable("events")

#: Close codes: 1001 when the server stops, 1013 when the subscriber fell too far behind,
#: 1008 when it sends frames faster than its rate limit.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013


@routes.websocket(
    "/ws/events",
    role=Role.READONLY,
    summary="Stream of events: {type, agent, data, timestamp} JSON text frames.",
)
async def events_stream() -> None:
    state = current_services()
    await websocket.accept()
    async with state.events.subscribe() as events, trio.open_nursery() as nursery:

        async def close_on_stop() -> None:
            await state.lifecycle.stopping.wait()
            await websocket.close(CLOSE_GOING_AWAY, "server shutting down")
            nursery.cancel_scope.cancel()

        async def ignore_client_frames() -> None:
            # frames are ignored, but each takes a rate-limit token like any request
            while True:
                await websocket.receive()
                try:
                    charge_frame()
                except RateLimited as exc:
                    await websocket.close(CLOSE_POLICY_VIOLATION, exc.message[:120])
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(close_on_stop)
        nursery.start_soon(ignore_client_frames)
        async for event in events:
            await websocket.send_json(event.as_json())
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "too slow: events were dropped; reconnect")
        nursery.cancel_scope.cancel()
