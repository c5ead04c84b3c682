"""Monitoring assets against real tools: promtool, a real Prometheus scraping a real Caxton, and
the Grafana dashboard's queries against the metrics a running server exposes."""

from __future__ import annotations

import functools
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
import yaml
from processes import ops_tool
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "conf" / "caxton_rules.yml"
PROMETHEUS_YML = REPO / "conf" / "prometheus.yml"
DASHBOARD = REPO / "conf" / "grafana" / "dashboards" / "caxton.json"
SEED_ALERTS = {
    "CaxtonDown",
    "MemorySystemSlow",
    "ApproachingMemoryLimit",
    "ConfigAgentReloadFailure",
}
SEED_GROUPS = ["System Overview", "Agent Performance", "Memory System", "Operational Health"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_caxton(nursery: trio.Nursery, tmp_path: Path) -> ServerInfo:
    """A server in this process with the echo WASM agent, on loopback ports 0."""
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO / "agents" / name, agents / name)
    loaded = loopback_config(tmp_path / "data", server__agents_dir=str(agents))
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    assert info.metrics_url is not None
    return info


# -- alert rules ------------------------------------------------------------------------------


def test_rules_and_scrape_config_pass_promtool() -> None:
    promtool = ops_tool("promtool")
    rules = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "4 rules found" in rules.stdout + rules.stderr
    config = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    document = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in document["groups"] for rule in group["rules"]}
    assert alerts == SEED_ALERTS


RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 30s
tests:
  - interval: 30s
    input_series:
      - series: 'up{{job="caxton", instance="caxton:9090"}}'
        values: '1 1 0 0 0 0 0'
      - series: 'caxton_memory_search_latency_p99'
        values: '0.05 0.2 0.2 0.2 0.2 0.2 0.2'
      - series: 'caxton_memory_entities_total'
        values: '95000+0x20'
      - series: 'caxton_agent_reload_failed_total'
        values: '0 0 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 30s
        alertname: CaxtonDown
        exp_alerts: []
      - eval_time: 3m
        alertname: CaxtonDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: caxton, instance: "caxton:9090"}}
            exp_annotations:
              summary: "Caxton server is down"
              description: "Caxton has been down for more than 1 minute"
      - eval_time: 1m
        alertname: MemorySystemSlow
        exp_alerts: []
      - eval_time: 3m
        alertname: MemorySystemSlow
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: "Memory system performance degraded"
              description: "P99 search latency is 0.2s"
      - eval_time: 6m
        alertname: ApproachingMemoryLimit
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: "Approaching embedded memory limit"
              description: "0.95% of recommended entity limit reached"
      - eval_time: 2m
        alertname: ConfigAgentReloadFailure
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: "Config agent reload failures"
              description: "1 agent reloads failed in the last 5 minutes"
"""


def test_alert_rules_fire_on_the_conditions_they_describe(tmp_path: Path) -> None:
    promtool = ops_tool("promtool")
    tests = tmp_path / "caxton_rules_test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(RULES))))
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Grafana dashboard ------------------------------------------------------------------------

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, label
    names, grouping labels, keywords, durations or strings."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$__\w+", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function
        if match.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def exposed_names(exposition: str) -> set[str]:
    """Every name a PromQL query may use for the families in a /metrics page."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            names.add(family)
            base = family.removesuffix("_total")
            if kind == "histogram":
                names.update({f"{family}_bucket", f"{family}_count", f"{family}_sum"})
            elif kind == "counter":
                names.update({base, f"{base}_total"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_metric_name_extraction_sees_through_promql() -> None:
    expr = (
        'sum by (route, status) (rate(caxton_http_request_duration_seconds_count{status=~"5.."}'
        "[$__rate_interval])) / ignoring(x) deriv(caxton_memory_sqlite_size_bytes[1h]) * 86400"
    )
    assert metric_names(expr) == {
        "caxton_http_request_duration_seconds_count",
        "caxton_memory_sqlite_size_bytes",
    }
    assert metric_names("histogram_quantile(0.5, sum by (le) (rate(x_bucket[5m])))") == {"x_bucket"}


async def test_every_dashboard_query_reads_metrics_a_running_server_exposes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == SEED_GROUPS
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    assert len({p["id"] for p in dashboard_panels()}) == len(list(dashboard_panels()))
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert all(t["datasource"]["uid"] == "prometheus" for p in panels for t in p["targets"])
    used = set().union(*(metric_names(e) for e in exprs))
    # Every metric the operator's guide names is on the dashboard.
    assert {
        "caxton_server_uptime_seconds",
        "caxton_server_memory_usage_bytes",
        "caxton_server_restarts_total",
        "caxton_memory_entities_total",
        "caxton_memory_search_latency_p99",
        "caxton_memory_sqlite_size_bytes",
        "caxton_memory_cache_hit_rate",
        "caxton_agent_config_count",
        "caxton_agent_wasm_count",
        "caxton_agent_response_latency_p99",
        "caxton_agent_reload_success_total",
        "caxton_agent_reload_failed_total",
    } <= used

    server = await start_caxton(nursery, tmp_path)
    assert server.metrics_url is not None
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
            reply = await client.post("/api/v1/agents/echo/messages", json={"content": "hi"})
            assert reply.status_code == 200, reply.text
            found = await client.get("/api/v1/memory/search", params={"q": "anything"})
            assert found.status_code == 200, found.text
            exposition = (await client.get(server.metrics_url)).text
    exposed = exposed_names(exposition)
    missing = {
        f"{p['title']}: {name}"
        for p in panels
        for t in p["targets"]
        for name in metric_names(t["expr"])
        if name not in exposed
    }
    assert not missing, f"dashboard queries read metrics the server does not expose: {missing}"
    server.stop()


# -- a real Prometheus --------------------------------------------------------------------------


def prometheus_config(path: Path, metrics_url: str) -> Path:
    """conf/prometheus.yml aimed at one local server, scraping every second."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    target = metrics_url.removeprefix("http://").split("/", 1)[0]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "caxton"
    assert job["metrics_path"] == "/metrics" == "/" + metrics_url.split("/", 3)[3]
    job["static_configs"] = [{"targets": [target]}]
    job["scrape_interval"] = "1s"
    config.pop("alerting")  # no Alertmanager here
    path.write_text(yaml.safe_dump(config))
    return path


async def query(client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/query", params={"query": promql})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def wait_for_value(client: httpx.AsyncClient, promql: str, expected: float) -> None:
    last: list[dict[str, Any]] = []
    try:
        with trio.fail_after(20):
            while True:
                last = await query(client, promql)
                if len(last) == 1 and float(last[0]["value"][1]) == expected:
                    return
                await trio.sleep(0.2)
    except trio.TooSlowError:
        raise AssertionError(f"{promql}: expected {expected}, Prometheus says {last}") from None


async def test_prometheus_scrapes_a_running_caxton(nursery: trio.Nursery, tmp_path: Path) -> None:
    prometheus = ops_tool("prometheus")
    server = await start_caxton(nursery, tmp_path)
    assert server.metrics_url is not None
    port = free_port()
    config = prometheus_config(tmp_path / "prometheus.yml", server.metrics_url)
    log = (tmp_path / "prometheus.log").open("wb")
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=False,
        )
    )
    entities = [
        {"name": f"entity-{i}", "entity_type": "note", "observations": [f"note number {i}"]}
        for i in range(3)
    ]
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as prom,
            httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as api,
        ):
            with trio.fail_after(30):
                while True:
                    try:
                        if (await prom.get("/-/ready")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert process.returncode is None, (tmp_path / "prometheus.log").read_text()
                    await trio.sleep(0.1)
            await wait_for_value(prom, 'up{job="caxton"}', 1)
            await wait_for_value(prom, "caxton_memory_entities_total", 0)
            created = await api.post("/api/v1/memory/entities", json={"entities": entities})
            assert created.status_code == 201, created.text
            await wait_for_value(prom, 'caxton_memory_entities_total{job="caxton"}', 3)
            rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
            loaded = {rule["name"] for group in rules for rule in group["rules"]}
            assert loaded == SEED_ALERTS
            targets = (await prom.get("/api/v1/targets")).json()["data"]["activeTargets"]
            assert [t["health"] for t in targets] == ["up"]
            # Every dashboard query is valid PromQL for this Prometheus (Grafana's range
            # variable as Grafana would fill it in).
            for panel in dashboard_panels():
                for target in panel.get("targets", []):
                    expr = target["expr"].replace("$__rate_interval", "1m")
                    answer = await prom.get("/api/v1/query", params={"query": expr})
                    assert answer.status_code == 200, (panel["title"], expr, answer.text)
    finally:
        process.terminate()
        server.stop()
        log.close()


def test_grafana_datasource_is_the_dashboards_uid() -> None:
    provisioned = yaml.safe_load(
        (REPO / "conf" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert all(
        p["datasource"]["uid"] == source["uid"] for p in dashboard_panels() if "targets" in p
    )
