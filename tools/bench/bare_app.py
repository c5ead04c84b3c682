"""The floor of the HTTP benchmarks: a bare QuartTrio app on hypercorn, in its own process.

Two routes and nothing else (no middleware, request ids, logging, metrics or security):
``GET /bare`` answers a tiny JSON object and ``POST /echo`` parses the JSON body and answers
it back. hypercorn runs with the settings Caxton gives it in ``caxton/http/server.py``
(``HttpServer.hypercorn_config``): keep-alive timeout 5 s, no Server header, no access log,
errors to the ``hypercorn.error`` logger at warning, the default graceful timeout and
WebSocket message limit of Caxton's default config. It prints ``ready on URL`` once bound and
stops on SIGTERM::

    .venv/bin/python tools/bench/bare_app.py [--port 0]
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import request
from quart_trio import QuartTrio

#: Caxton's defaults: server.shutdown_timeout and server.max_request_size.
SHUTDOWN_TIMEOUT_S = 30.0
MAX_REQUEST_SIZE = 10_000_000


def create_app() -> QuartTrio:
    app = QuartTrio("bare")
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.get("/bare")
    async def bare() -> dict[str, Any]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo() -> Any:
        return await request.get_json()

    return app


def hypercorn_config(port: int) -> HypercornConfig:
    """The settings of ``caxton.http.server.HttpServer.hypercorn_config`` (no TLS)."""
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = SHUTDOWN_TIMEOUT_S
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 5
    config.include_server_header = False
    config.websocket_max_message_size = MAX_REQUEST_SIZE
    return config


async def run(port: int) -> None:
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        stop = trio.Event()

        async def on_signal() -> None:
            async for _ in signals:
                stop.set()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            binds = await nursery.start(
                lambda task_status: serve(
                    create_app(),
                    hypercorn_config(port),
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
            )
            print(f"ready on {binds[0]}", flush=True)
            await stop.wait()
            # serve() returns after its graceful stop; then end the signal task
        nursery.cancel_scope.cancel()


class BareServer:
    """``bare_app.py`` as a subprocess on 127.0.0.1 port 0; stopped with SIGTERM on exit."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> BareServer:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("ready on "):
            self.process.kill()
            raise SystemExit(f"bare app failed to start: {line!r}")
        self.url = line.removeprefix("ready on ")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args()
    trio.run(run, args.port)


if __name__ == "__main__":
    main()
