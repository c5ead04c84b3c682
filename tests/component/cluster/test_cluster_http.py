"""``GET /api/v1/cluster`` and ``caxton cluster status`` against a real server on loopback.

The server is the embedded one of ``tests/conftest.py``; its services are handed a
:class:`Heartbeat` as the composition root does, and served by a second HTTP listener.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import jsonschema
import trio

from caxton import __version__
from caxton.cluster import Heartbeat
from caxton.http.app import create_app
from caxton.http.openapi import build_openapi
from caxton.http.server import HttpServer
from caxton.http.state import ROUTES_KEY

if TYPE_CHECKING:
    from caxton.server import ServerInfo

OPENAPI_PATH = "/api/v1/cluster"


def check_against_the_document(app_routes: Any, body: dict[str, Any]) -> None:
    document = build_openapi(app_routes)
    schema = document["paths"][OPENAPI_PATH]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    jsonschema.Draft202012Validator(
        {"components": document["components"], "allOf": [schema]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ).validate(body)


async def test_the_route_and_the_cli_show_this_instance(
    server: ServerInfo, nursery: trio.Nursery
) -> None:
    with trio.fail_after(60):
        services = server.services
        # serve() wires the cluster: this instance alone with the embedded store
        async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
            served = (await client.get(OPENAPI_PATH)).json()
        assert [(i["address"], i["self"]) for i in served["instances"]] == [
            (server.api_urls[0], True)
        ]
        # without a cluster view: a 503 that says why, in the error envelope
        unwired = attrs.evolve(services, cluster=None)
        unwired_urls = await nursery.start(HttpServer(unwired, create_app(unwired)).run)
        async with httpx.AsyncClient(base_url=unwired_urls[0]) as client:
            refused = await client.get(OPENAPI_PATH)
        assert refused.status_code == 503
        assert "cluster" in refused.json()["error"]["message"]

        beat = Heartbeat(
            services.store,
            instance_id="solo-1",
            address=server.api_urls[0],
            version=__version__,
            agents_fn=lambda: 5,
            interval_s=1.0,
        )
        await nursery.start(beat.run)
        wired = attrs.evolve(services, cluster=beat)
        app = create_app(wired)
        urls = await nursery.start(HttpServer(wired, app).run)
        async with httpx.AsyncClient(base_url=urls[0]) as client:
            answer = await client.get(OPENAPI_PATH)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        check_against_the_document(app.config[ROUTES_KEY], body)
        assert body["instance"] == "solo-1"
        assert body["backend"] == "embedded"
        (only,) = body["instances"]
        assert only["id"] == "solo-1"
        assert only["self"] is True
        assert only["agents"] == 5
        assert only["address"] == server.api_urls[0]
        assert only["version"] == __version__

        async def cli(*args: str) -> str:
            done = await trio.run_process(
                [sys.executable, "-m", "caxton", "--url", urls[0], "cluster", "status", *args],
                capture_stdout=True,
                capture_stderr=True,
            )
            return done.stdout.decode()

        as_json = json.loads(await cli("--output", "json"))
        assert as_json["instance"] == "solo-1"
        assert [i["id"] for i in as_json["instances"]] == ["solo-1"]
        lines = (await cli()).splitlines()
        assert lines[0] == "backend: embedded  instances: 1  answered by: solo-1"
        assert lines[2].split()[:3] == ["*", "solo-1", server.api_urls[0]]
