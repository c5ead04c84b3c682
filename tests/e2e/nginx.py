"""The real nginx on loopback in front of real instances, with packaging/nginx/caxton.conf."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
from typing import TYPE_CHECKING

import httpx
import trio
from processes import REPO, ops_tool

if TYPE_CHECKING:
    from pathlib import Path

CONF = REPO / "packaging" / "nginx" / "caxton.conf"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def nginx_config(prefix: Path, port: int, upstreams: list[str]) -> Path:
    """The packaged file with only its upstream servers and listen address replaced, included
    from a main file that keeps every path (pid, logs, temp files) under ``prefix``."""
    prefix.mkdir(exist_ok=True)
    text = CONF.read_text()
    servers = re.findall(r"^( *server )caxton-\d:8080( max_fails=3 fail_timeout=30s;)$", text, re.M)
    assert len(servers) == 2, "the upstream block changed shape"
    indent, options = servers[0]
    block = "".join(f"{indent}{address}{options}\n" for address in upstreams)
    text, replaced = re.subn(r"(?:^ *server caxton-\d:8080 [^\n]*\n)+", block, text, flags=re.M)
    assert replaced == 1
    text, replaced = re.subn(r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{port};", text, flags=re.M)
    assert replaced == 1
    (prefix / "caxton.conf").write_text(text)
    temp = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = prefix / "nginx.conf"
    main.write_text(
        # as root the workers would switch to nobody, who cannot enter the test's temp folder
        ("user root;\n" if os.geteuid() == 0 else "") + "daemon off;\nworker_processes 1;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {prefix / 'access.log'};\n{temp}"
        f"    include {prefix / 'caxton.conf'};\n"
        "}\n"
    )
    return main


async def start_nginx(
    nursery: trio.Nursery, prefix: Path, upstreams: list[str]
) -> tuple[trio.Process, str]:
    """Check and start nginx with the packaged file in front of ``upstreams`` (host:port);
    the process and its base URL, once it answers ``/ready`` with 200."""
    nginx = ops_tool("nginx")
    port = free_port()
    main = nginx_config(prefix, port, upstreams)
    checked = await trio.run_process(
        [nginx, "-t", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(main)],
        capture_stderr=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr.decode()
    proxy: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(main)],
            stdin=subprocess.DEVNULL,
            check=False,
        )
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        with trio.fail_after(10):
            while True:
                try:
                    if (await client.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
    return proxy, base
