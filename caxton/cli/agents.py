"""``caxton agents …``, ``caxton logs`` and ``caxton chat``."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from caxton.cli.client import ServerError, api_client
from caxton.cli.output import emit, emit_json, key_values, output_option, table
from caxton.errors import ClientError


@click.group()
def agents() -> None:
    """Deploy, inspect and manage agents."""


def _reload_cell(view: dict[str, Any]) -> str:
    last = view.get("last_reload") or {}
    if last.get("ok", True):
        return "ok"
    # one table line: the first line of the error (`agents show NAME` prints all of it)
    error = " ".join(str(last.get("error") or "failed").split("\n", 1)[0].split())
    return f"failed: {error[:60]}"


def _canary_cell(view: dict[str, Any]) -> str:
    canary = view.get("canary")
    return f"{canary['version']} ({canary['traffic_percentage']:g}%)" if canary else "-"


@agents.command("list")
@click.option("--type", "kind", type=click.Choice(["config", "wasm"]), help="Only this type.")
@click.option("--status", default=None, help="Only agents in this state (running, failed, …).")
@output_option
@click.pass_context
def list_agents(ctx: click.Context, kind: str | None, status: str | None, output: str) -> None:
    """List agents: name, type, active version, canary, state, capabilities, last reload."""
    params = {k: v for k, v in (("type", kind), ("status", status)) if v}
    data = api_client(ctx).json("GET", "/api/v1/agents", params=params)
    if output == "json":
        emit_json(data)
        return
    rows = [
        [
            v["name"],
            v["type"],
            v["version"],
            _canary_cell(v),
            v["status"],
            ",".join(v["capabilities"]),
            _reload_cell(v),
        ]
        for v in data["agents"]
    ]
    click.echo(
        table(["name", "type", "version", "canary", "status", "capabilities", "last reload"], rows)
    )


@agents.command()
@click.argument("name")
@click.option("--verbose", "-v", is_flag=True, help="Also versions, pending errors and logs.")
@output_option
@click.pass_context
def show(ctx: click.Context, name: str, verbose: bool, output: str) -> None:
    """Show one agent."""
    client = api_client(ctx)
    view = client.json("GET", f"/api/v1/agents/{name}")
    if verbose:
        if view.get("version") is not None or view["status"] != "failed":
            view["versions"] = client.json("GET", f"/api/v1/agents/{name}/versions")["versions"]
        view["logs"] = client.json("GET", f"/api/v1/agents/{name}/logs", params={"tail": 20})[
            "lines"
        ]
    if output == "json":
        emit_json(view)
        return
    pairs: list[tuple[str, object]] = [
        ("name", view["name"]),
        ("type", view["type"]),
        ("version", view["version"] or "-"),
        ("status", view["status"]),
        ("canary", _canary_cell(view)),
        ("capabilities", ", ".join(view["capabilities"]) or "-"),
        ("abi", view.get("abi") or "-"),
        ("source", view["source"]),
        ("last reload", _reload_cell(view)),
    ]
    click.echo(key_values(pairs))
    for problem in view.get("pending_errors", []):
        click.echo(f"  error: {_problem_line(problem)}")
    if verbose:
        click.echo("\nversions:")
        click.echo(_versions_table(view.get("versions", [])))
        click.echo("\nrecent logs:")
        for line in view["logs"]:
            click.echo(f"  {line['level']:<5} {line['message']}")


def _problem_line(problem: dict[str, Any]) -> str:
    where = f"line {problem['line']}" if problem.get("line") else ""
    if where and problem.get("column"):
        where += f", column {problem['column']}"
    text = f"{problem['message']}" + (f" ({where})" if where else "")
    return f"{text}; fix: {problem['suggestion']}" if problem.get("suggestion") else text


def _versions_table(versions: list[dict[str, Any]]) -> str:
    rows = [
        [
            v["version"],
            v["revision"],
            v["status"],
            "yes" if v["active"] else "",
            f"{v['traffic_percentage']:g}%",
        ]
        for v in versions
    ]
    return table(["version", "revision", "status", "active", "traffic"], rows)


def _validate_file(path: Path) -> dict[str, Any]:
    from caxton.agents.files import read_agent_file

    read = read_agent_file(path)
    if read is None:
        return {
            "file": str(path),
            "valid": False,
            "errors": [
                {
                    "field": "",
                    "message": f"{path} does not exist",
                    "line": None,
                    "column": None,
                    "suggestion": "check the path",
                }
            ],
            "warnings": [],
        }
    return {"file": str(path), **read.report.as_dict()}


def _print_report(report: dict[str, Any]) -> None:
    if report["valid"]:
        click.echo(f"{report['file']}: valid")
    else:
        click.echo(f"{report['file']}: invalid", err=True)
    for problem in report["errors"]:
        click.echo(f"  error: {_problem_line(problem)}", err=True)
    for problem in report["warnings"]:
        click.echo(f"  warning: {_problem_line(problem)}")


@agents.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@output_option
def validate(file: Path, output: str) -> None:
    """Check an agent file (and its WASM module) without a server; exit 1 when invalid."""
    report = _validate_file(file)
    emit_json(report) if output == "json" else _print_report(report)
    if not report["valid"]:
        sys.exit(1)


@agents.command("validate-all")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Agents directory (default: server.agents_dir of --config or CAXTON_CONFIG_PATH, "
    "else ./agents).",
)
@output_option
@click.pass_context
def validate_all(ctx: click.Context, directory: Path | None, output: str) -> None:
    """Check every agent file of the agents directory; exit 1 when any is invalid."""
    if directory is None:
        root = ctx.find_root().obj or {}
        config_path = root.get("config_path") or os.environ.get("CAXTON_CONFIG_PATH")
        if config_path:
            from caxton.config import load_config

            directory = load_config(Path(config_path)).config.agents_dir
        else:
            directory = Path("agents")
    if not directory.is_dir():
        raise click.ClickException(f"{directory} is not a directory")
    reports = [_validate_file(p) for p in sorted(directory.glob("*.toml"))]
    if output == "json":
        emit_json({"directory": str(directory), "files": reports})
    else:
        for report in reports:
            _print_report(report)
        bad = sum(1 for r in reports if not r["valid"])
        click.echo(f"{len(reports)} files, {bad} invalid")
    if any(not r["valid"] for r in reports):
        sys.exit(1)


def _deploy_body(file: Path) -> dict[str, Any]:
    from caxton.agents.files import read_agent_file

    read = read_agent_file(file)
    if read is None:
        raise click.ClickException(f"{file} does not exist")
    content = file.read_text(encoding="utf-8", errors="replace")
    if read.module is not None:
        return {"manifest": content, "wasm_module": base64.b64encode(read.module).decode()}
    if not read.report.valid:
        _print_report({"file": str(file), **read.report.as_dict()})
        sys.exit(1)
    return {"content": content}


@agents.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Deploy a new version of an existing agent.")
@output_option
@click.pass_context
def deploy(ctx: click.Context, file: Path, replace: bool, output: str) -> None:
    """Deploy an agent file (WASM manifests take their module along) through the API."""
    body = _deploy_body(file)
    client = api_client(ctx)
    if replace:
        from caxton.agents.files import read_agent_file

        read = read_agent_file(file)
        name = read.report.spec.name if read and read.report.spec else file.stem
        view = client.json("PUT", f"/api/v1/agents/{name}", json=body)
    else:
        view = client.json("POST", "/api/v1/agents", json=body)
    emit(output, view, lambda v: f"deployed {v['name']} {v['version']} ({v['status']})")


@agents.command()
@click.argument("name")
@output_option
@click.pass_context
def remove(ctx: click.Context, name: str, output: str) -> None:
    """Remove an API-deployed agent."""
    result = api_client(ctx).json("DELETE", f"/api/v1/agents/{name}")
    emit(output, result, f"removed {name}")


@agents.command()
@click.argument("name", required=False)
@click.option("--failing-only", is_flag=True, help="Restart every agent whose status is failed.")
@output_option
@click.pass_context
def restart(ctx: click.Context, name: str | None, failing_only: bool, output: str) -> None:
    """Restart an agent blue-green (or every failing one)."""
    client = api_client(ctx)
    if failing_only == (name is not None):
        raise click.UsageError("give an agent NAME or --failing-only (not both)")
    sources: dict[str, str] = {}
    if name is not None:
        names = [name]
    else:
        listing = client.json("GET", "/api/v1/agents", params={"status": "failed"})["agents"]
        names = [v["name"] for v in listing]
        sources = {v["name"]: v.get("source") or "its file" for v in listing}
    results: list[dict[str, Any]] = []
    for target in names:
        try:
            view = client.json("POST", f"/api/v1/agents/{target}/restart")
            results.append({"name": target, "status": view["status"], "ok": True})
        except ServerError as exc:
            if target in sources and exc.server_code == "AGENT_NOT_FOUND":
                # listed as failed because its file never validated: nothing to restart
                reason = f"never loaded; fix {sources[target]} (caxton agents show {target})"
                results.append({"name": target, "ok": True, "skipped": reason})
            else:
                results.append({"name": target, "ok": False, "error": exc.message})
        except ClientError as exc:
            results.append({"name": target, "ok": False, "error": exc.message})
    if output == "json":
        emit_json({"restarted": results})
    else:
        if not results:
            click.echo("no failing agents")
        for r in results:
            if not r["ok"]:
                click.echo(f"{r['name']}: error: {r['error']}", err=True)
            elif "skipped" in r:
                click.echo(f"{r['name']}: skipped, {r['skipped']}")
            else:
                click.echo(f"{r['name']}: {r['status']}")
    if any(not r["ok"] for r in results):
        sys.exit(1)


@agents.command("performance-report")
@output_option
@click.pass_context
def performance_report(ctx: click.Context, output: str) -> None:
    """Messages, errors, response times and cost (fuel or tokens) of every agent since the
    server started."""
    data = api_client(ctx).json("GET", "/api/v1/agents/performance")
    if output == "json":
        emit_json(data)
        return
    rows = [
        [
            a["name"],
            a["type"],
            a["status"],
            a["messages"],
            a["errors"],
            f"{a['p50_ms']:.1f}",
            f"{a['p99_ms']:.1f}",
            # what answering cost: fuel for WASM agents, tokens for config (LLM) agents
            f"{a['fuel']} fuel" if a["type"] == "wasm" else f"{a['tokens']} tokens",
            ", ".join(f"{code} x{n}" for code, n in a["errors_by_code"].items()),
        ]
        for a in data["agents"]
    ]
    headers = ["name", "type", "status", "messages", "errors", "p50 ms", "p99 ms", "cost"]
    click.echo(table([*headers, "error codes"], rows))


@agents.command()
@click.argument("name")
@output_option
@click.pass_context
def versions(ctx: click.Context, name: str, output: str) -> None:
    """List an agent's kept versions."""
    data = api_client(ctx).json("GET", f"/api/v1/agents/{name}/versions")
    emit(output, data, lambda d: _versions_table(d["versions"]))


@agents.command()
@click.argument("name")
@click.option("--version", "version", required=True, help="A kept version of the agent.")
@click.option("--percentage", type=float, required=True, help="Share of new conversations.")
@output_option
@click.pass_context
def canary(ctx: click.Context, name: str, version: str, percentage: float, output: str) -> None:
    """Send a share of new conversations to a kept version."""
    view = api_client(ctx).json(
        "POST",
        f"/api/v1/agents/{name}/canary",
        json={"version": version, "traffic_percentage": percentage},
    )
    emit(output, view, lambda v: f"{name}: canary {_canary_cell(v)}")


@agents.command()
@click.argument("name")
@output_option
@click.pass_context
def promote(ctx: click.Context, name: str, output: str) -> None:
    """Make the canary the stable version."""
    view = api_client(ctx).json("POST", f"/api/v1/agents/{name}/promote")
    emit(output, view, lambda v: f"{name}: now {v['version']}")


@agents.command()
@click.argument("name")
@click.option("--to", "to_version", default=None, help="Version to go back to.")
@output_option
@click.pass_context
def rollback(ctx: click.Context, name: str, to_version: str | None, output: str) -> None:
    """End the canary, or go back to the previous (or --to) version."""
    body = {"version": to_version} if to_version else {}
    view = api_client(ctx).json("POST", f"/api/v1/agents/{name}/rollback", json=body)
    emit(output, view, lambda v: f"{name}: now {v['version']}")


@click.command()
@click.argument("agent")
@click.option("--tail", default=100, show_default=True, help="Lines to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--level", type=click.Choice(["debug", "info", "warn", "error"]), default=None)
@output_option
@click.pass_context
def logs(
    ctx: click.Context, agent: str, tail: int, follow: bool, level: str | None, output: str
) -> None:
    """Print an agent's log lines."""
    client = api_client(ctx)
    params: dict[str, Any] = {"tail": tail}
    if level:
        params["level"] = level

    def show_line(line: dict[str, Any]) -> None:
        if output == "json":
            click.echo(json.dumps(line))
        else:
            import time

            stamp = time.strftime("%H:%M:%S", time.localtime(line["timestamp"]))
            click.echo(f"{stamp} {line['level']:<5} {line['message']}")

    if not follow:
        for line in client.json("GET", f"/api/v1/agents/{agent}/logs", params=params)["lines"]:
            show_line(line)
        return
    params["follow"] = "true"
    for line in client.stream_lines(f"/api/v1/agents/{agent}/logs", params=params):
        show_line(json.loads(line))
