"""The HTTP component: hypercorn's trio worker serving the app inside our nursery."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from caxton.errors import StartupError
from caxton.http.app import asgi_app
from caxton.http.response_writes import write_responses_whole

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework
    from quart_trio import QuartTrio

    from caxton.services import Services

LOGGER = logging.getLogger("caxton.http")


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening yet.

    Every process of one user that binds the port this way shares it; the kernel spreads
    new connections among those that listen (``server.workers``, :mod:`caxton.workers`). A
    socket that never listens receives none, so it can hold a port for the others.

    Args:
        host: the address, as ``server.host`` writes it (IPv6 without brackets).
        port: the port; 0 picks a free one (read it back with ``getsockname()``).

    Raises:
        StartupError: the address cannot be bound (in use without SO_REUSEPORT, not local).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot bind {bind_address(host, port)}: {exc.strerror}; stop what uses the "
            "port or set server.port (or --port) to a free one",
            details={"bind": bind_address(host, port)},
        ) from None
    return sock


class HttpServer:
    """Serves the API until ``state.lifecycle.stopping`` is set, then drains.

    Args:
        state: the shared server state; ``state.lifecycle.stopping`` triggers the graceful stop.
        app: the Quart app from :func:`caxton.http.app.create_app`.
    """

    def __init__(self, state: Services, app: QuartTrio) -> None:
        self.state = state
        self.app = app

    def hypercorn_config(self) -> HypercornConfig:
        server = self.state.config.server
        tls = self.state.config.security.tls
        config = HypercornConfig()
        config.bind = [bind_address(server.host, server.port)]
        config.graceful_timeout = server.shutdown_timeout
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.keep_alive_timeout = 5
        config.include_server_header = False
        # hypercorn's own default is 16 MiB: a WebSocket message over the request size limit
        # is refused by hypercorn with close code 1009 before the app sees it (issue #13)
        config.websocket_max_message_size = int(server.max_request_size)
        if tls.enabled and tls.cert_file and tls.key_file:
            config.certfile = str(self.state.config.resolve_path(tls.cert_file))
            config.keyfile = str(self.state.config.resolve_path(tls.key_file))
        return config

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, report the bound URLs, serve; return once a graceful stop has finished.

        Cancellation:
            ``state.lifecycle.stopping`` is the graceful path: new connections are refused,
            in-flight requests get ``server.shutdown_timeout`` to finish, streaming handlers end
            their streams themselves. Cancelling this task instead stops everything at once.
        """
        config = self.hypercorn_config()
        server = self.state.config.server
        write_responses_whole()
        if server.workers > 1:
            # worker processes share the port (caxton.workers): hypercorn takes the socket
            # bound with SO_REUSEPORT by its descriptor, and owns it from here on
            config.bind = [f"fd://{bind_reuse_port(server.host, server.port).detach()}"]
        await hypercorn_serve(
            cast("ASGIFramework", asgi_app(self.app, self.state)),
            config,
            shutdown_trigger=self.state.lifecycle.stopping.wait,
            task_status=task_status,
        )
        LOGGER.info("HTTP server stopped")
