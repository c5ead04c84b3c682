"""The caxton.yaml loader: seed files, misspellings with line and suggestion, precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from caxton.config import Override, load_config
from caxton.config.checks import ineffective_settings
from caxton.config.loader import known_key_paths, level_from_rust_log
from caxton.errors import ConfigError

SEED_CONFIGS = sorted((Path(__file__).parent / "seed_configs").glob("*.yaml"))
OPERATORS_GUIDE = Path(__file__).parents[3] / "shared" / "seed" / "operators-guide.md"


@pytest.mark.parametrize("path", SEED_CONFIGS, ids=lambda p: p.stem)
def test_every_seed_block_loads(path: Path) -> None:
    loaded = load_config(path, environ={})
    assert loaded.source == path


def test_seed_blocks_are_copied_verbatim() -> None:
    """Each caxton.yaml block of the operator guide is one of our fixtures (when available)."""
    if not OPERATORS_GUIDE.exists():
        pytest.skip("the operator guide is not beside this checkout")
    blocks = re.findall(r"```yaml\n(.*?)```", OPERATORS_GUIDE.read_text(), flags=re.S)
    sections = {"server", "memory", "logging", "observability", "security"}
    config_blocks = []
    for block in blocks:
        try:
            documents = list(yaml.safe_load_all(block))
        except yaml.YAMLError:
            continue  # the guide tags one TOML agent example as yaml
        for document in documents:
            if isinstance(document, dict) and set(document) <= sections:
                config_blocks.append(document)
            # the Kubernetes ConfigMap embeds a caxton.yaml as a string
            if isinstance(document, dict) and document.get("kind") == "ConfigMap":
                config_blocks.append(yaml.safe_load(document["data"]["caxton.yaml"]))
    # the Qdrant migration writes its caxton.yaml through a shell here-document
    for heredoc in re.findall(
        r"cat > caxton.yaml << 'EOF'\n(.*?)\nEOF", OPERATORS_GUIDE.read_text(), flags=re.S
    ):
        config_blocks.append(yaml.safe_load(heredoc))
    fixtures = [yaml.safe_load(p.read_text()) for p in SEED_CONFIGS]
    assert len(config_blocks) == 5
    for data in config_blocks:
        assert data in fixtures


def test_sqlite_keys_are_mapped_or_warned(tmp_path: Path) -> None:
    loaded = load_config(SEED_CONFIGS[0].parent / "minimal-production.yaml", environ={})
    assert loaded.config.memory.database_path == "memory.db"
    tuned = load_config(SEED_CONFIGS[0].parent / "performance-tuned.yaml", environ={})
    assert tuned.config.memory.duckdb.memory_limit == 100_000 * 1024
    warned = "\n".join(tuned.warnings)
    assert "memory.sqlite_config.synchronous at line 7" in warned
    assert "memory.sqlite_config.temp_store at line 8" in warned
    assert "journal_mode" not in warned  # WAL is what DuckDB does anyway


def test_sqlite_path_and_database_path_together_is_an_error() -> None:
    text = "memory:\n  sqlite_path: a.db\n  database_path: b.duckdb\n"
    with pytest.raises(ConfigError, match="both sqlite_path and database_path"):
        load_config(Path("c.yaml"), text=text, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "memory:\n  backend: embedded\n  embeding_model: x\n",
            "unknown key memory.embeding_model at line 3; did you mean embedding_model?",
        ),
        (
            "sever:\n  port: 1\n",
            "unknown key sever at line 1; did you mean server?",
        ),
        (
            "memory:\n  embedding_config:\n    runtime: gpu\n",
            "memory.embedding_config.runtime at line 3: expected one of auto, openvino, "
            "onnxruntime, got a string 'gpu'",
        ),
        (
            "server:\n  port: 8080\n  shutdown_timout: 10s\n",
            "unknown key server.shutdown_timout at line 3; did you mean shutdown_timeout?",
        ),
        (
            "observability:\n  metrics_enabled: true\n  metric_port: 9090\n",
            "unknown key observability.metric_port at line 3; did you mean metrics_port?",
        ),
        (
            "security:\n  tls:\n    enabled: false\n    cert_fille: a.crt\n",
            "unknown key security.tls.cert_fille at line 4; did you mean cert_file?",
        ),
        (
            "logging:\n  data_dir: /tmp\n",
            "unknown key logging.data_dir at line 2; data_dir belongs under server",
        ),
        (
            "memory:\n  cleanup:\n    vacum_interval: 1h\n",
            "unknown key memory.cleanup.vacum_interval at line 3; did you mean vacuum_interval?",
        ),
    ],
)
def test_misspelled_keys_name_path_line_and_suggestion(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("caxton.yaml"), text=text, environ={})
    assert expected in caught.value.message
    assert caught.value.message.startswith("caxton.yaml: 1 configuration error")


def test_all_problems_of_a_file_are_reported_at_once() -> None:
    text = (
        "server:\n"
        "  port: eighty\n"
        "  shutdown_timeout: soon\n"
        "memory:\n"
        "  backend: postgres\n"
        "  embeding_model: x\n"
        "logging:\n"
        "  format: jsn\n"
        "observability: yes\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(Path("c.yaml"), text=text, environ={})
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 6, problems
    assert "server.port at line 2: expected an integer, got a string 'eighty'" in problems
    assert "server.shutdown_timeout at line 3: expected a duration" in problems
    assert "memory.backend at line 5: expected one of embedded, qdrant" in problems
    assert "unknown key memory.embeding_model at line 6" in problems
    assert "logging.format at line 8: expected one of json, text, got a string 'jsn'" in problems
    assert "observability at line 9: must be a section" in problems


def test_booleans_are_not_numbers_and_strings_are_not_booleans() -> None:
    with pytest.raises(ConfigError, match="metrics_enabled at line 2: expected true or false"):
        load_config(Path("c.yaml"), text="observability:\n  metrics_enabled: 'no'\n", environ={})
    with pytest.raises(ConfigError, match=r"server\.port at line 2: expected an integer"):
        load_config(Path("c.yaml"), text="server:\n  port: true\n", environ={})


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError, match=r"YAML syntax error at line 3, column 10"):
        load_config(Path("c.yaml"), text="server:\n  port: 1\n  host: a: b\n", environ={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_durations_and_sizes() -> None:
    text = "server:\n  shutdown_timeout: 1m30s\n  max_request_size: 2MiB\n"
    config = load_config(Path("c.yaml"), text=text, environ={}).config
    assert config.server.shutdown_timeout == 90.0
    assert config.server.max_request_size == 2 * 1024 * 1024


def test_precedence_cli_over_env_over_file_over_defaults() -> None:
    text = "server:\n  port: 7000\n  host: 127.0.0.2\nlogging:\n  level: warn\n"
    file_only = load_config(Path("c.yaml"), text=text, environ={}).config
    assert (file_only.server.port, file_only.server.host) == (7000, "127.0.0.2")
    assert file_only.server.shutdown_timeout == 30.0  # default

    env = {"CAXTON_PORT": "7100", "CAXTON_LOG_LEVEL": "debug"}
    with_env = load_config(Path("c.yaml"), text=text, environ=env).config
    assert with_env.server.port == 7100
    assert with_env.logging.level == "debug"
    assert with_env.server.host == "127.0.0.2"

    flags = [Override(("server", "port"), 7200, "--port")]
    with_cli = load_config(Path("c.yaml"), text=text, environ=env, overrides=flags).config
    assert with_cli.server.port == 7200
    assert with_cli.logging.level == "debug"


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"server.port \(from env CAXTON_PORT\): expected"):
        load_config(None, environ={"CAXTON_PORT": "http"})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "caxton.yaml"
    path.write_text("server:\n  port: 7301\n")
    loaded = load_config(None, environ={"CAXTON_CONFIG_PATH": str(path)})
    assert loaded.source == path
    assert loaded.config.server.port == 7301


def test_rust_log_is_a_fallback_for_the_level() -> None:
    assert load_config(None, environ={"RUST_LOG": "warn"}).config.logging.level == "warn"
    both = {"RUST_LOG": "warn", "CAXTON_LOG_LEVEL": "error"}
    assert load_config(None, environ=both).config.logging.level == "error"
    assert level_from_rust_log("hyper=warn,caxton=debug") == "debug"
    assert level_from_rust_log("hyper=warn") is None


def test_interpolation_with_default_and_missing_variable() -> None:
    text = "llm:\n  api_key: ${KEY}\n  base_url: ${BASE:-http://127.0.0.1:11434/v1}\n"
    config = load_config(Path("c.yaml"), text=text, environ={"KEY": "sk-1"}).config
    assert config.llm.api_key == "sk-1"
    assert config.llm.base_url == "http://127.0.0.1:11434/v1"
    with pytest.raises(ConfigError, match=r"llm.api_key at line 2: environment variable KEY"):
        load_config(Path("c.yaml"), text=text, environ={})


def test_relative_paths_resolve_against_data_dir(tmp_path: Path) -> None:
    text = f"server:\n  data_dir: {tmp_path}\n  agents_dir: agents\nmemory:\n  sqlite_path: m.db\n"
    config = load_config(Path("c.yaml"), text=text, environ={}).config
    assert config.agents_dir == tmp_path / "agents"
    assert config.database_path == tmp_path / "m.db"
    assert config.resolve_path("/abs/file") == Path("/abs/file")


def test_tls_enabled_needs_cert_and_key() -> None:
    with pytest.raises(ConfigError, match=r"security\.tls: enabled needs both"):
        load_config(Path("c.yaml"), text="security:\n  tls:\n    enabled: true\n", environ={})


def test_storage_backend_and_url_come_from_file_or_environment() -> None:
    text = "storage:\n  backend: postgres\n  postgres:\n    url: ${PG_URL}\n"
    env = {"PG_URL": "postgresql://caxton:s3cret@127.0.0.1:5432/caxton"}
    config = load_config(Path("c.yaml"), text=text, environ=env).config
    assert config.storage.backend == "postgres"
    assert config.storage.postgres.url == env["PG_URL"]
    from_env = load_config(
        None,
        environ={
            "CAXTON_STORAGE_BACKEND": "postgres",
            "CAXTON_DATABASE_URL": "postgresql://h/db",
            "CAXTON_WORKERS": "2",
        },
    ).config
    assert from_env.storage.postgres.url == "postgresql://h/db"
    assert from_env.server.workers == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("storage:\n  backend: postgres\n", r"storage\.postgres\.url: required"),
        (
            "storage:\n  backend: postgres\n  postgres:\n    url: mysql://h/db\n",
            r"must start with postgresql://",
        ),
        ("server:\n  workers: 2\n", r"cannot share the embedded store .* set storage\.backend"),
        ("server:\n  workers: 0\n", r"server\.workers: 0 is not between 1 and 64"),
        ("storage:\n  postgres:\n    pool_size: 0\n", r"pool_size: must be at least 1"),
        ("storage:\n  backend: sqlite\n", r"storage\.backend"),
    ],
)
def test_bad_storage_settings_say_what_to_do(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(Path("c.yaml"), text=text, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("threads: 0", r"embedding_config\.threads: must be at least 1, got 0 \(leave it out"),
        ("gathered_threads: -1", r"embedding_config\.gathered_threads: must be at least 1, got -1"),
        ("batch_size: 0", r"embedding_config\.batch_size: must be at least 1, got 0$"),
    ],
)
def test_bad_embedding_settings_are_refused_at_load(text: str, expected: str) -> None:
    """Caught with the rest of the file's problems, not when the model loads."""
    with pytest.raises(ConfigError, match=expected):
        load_config(Path("c.yaml"), text=f"memory:\n  embedding_config:\n    {text}\n", environ={})


def test_key_paths_are_documented() -> None:
    """README's configuration reference mentions every key."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [p for p in known_key_paths() if f"`{p}`" not in readme]
    assert not missing, f"README does not document: {missing}"


def test_readme_reference_tables_are_current() -> None:
    """README's two reference tables are exactly what the code documents."""
    from caxton.agents.docs import reference_markdown as agents_reference
    from caxton.config.docs import reference_markdown as config_reference

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert config_reference() in readme, "regenerate with: python -m caxton.config.docs"
    assert agents_reference() in readme, "regenerate with: python -m caxton.agents.docs"


def test_a_client_reads_only_the_server_address(tmp_path: Path) -> None:
    from caxton.config import load_server_address

    path = tmp_path / "caxton.yaml"
    path.write_text(
        "server:\n  host: ${HOST:-10.0.0.2}\n  port: ${PORT}\n"
        "security:\n  tls:\n    enabled: true\n"
        "logging:\n  file: ${ONLY_ON_THE_SERVER}/x.log\n  level: not-a-level\n"
    )
    address = load_server_address(path, environ={"PORT": "9443"})
    assert (address.host, address.port, address.tls) == ("10.0.0.2", 9443, True)
    assert load_server_address(path, environ={"PORT": "1", "CAXTON_PORT": "2"}).port == 2
    with pytest.raises(ConfigError, match=r"server\.port.*PORT is not set"):
        load_server_address(path, environ={})
    path.write_text("server:\n  port: eighty\n")
    with pytest.raises(ConfigError, match=r"server\.port at line 2: must be an integer"):
        load_server_address(path, environ={})


def test_settings_without_effect_are_named() -> None:
    from caxton.config.checks import ineffective_settings

    defaults = load_config(None, environ={}).config
    assert ineffective_settings(defaults) == []
    text = "security:\n  rate_limiting:\n    enabled: false\n    burst_size: 5\n"
    config = load_config(Path("c.yaml"), text=text, environ={}).config
    (warning,) = ineffective_settings(config)
    assert warning.startswith("security.rate_limiting.burst_size has no effect: rate limiting")
    text = "memory:\n  embedding_config:\n    runtime: onnxruntime\n    gathered_threads: 1\n"
    config = load_config(Path("c.yaml"), text=text, environ={}).config
    (warning,) = ineffective_settings(config)
    assert warning.startswith("memory.embedding_config.gathered_threads has no effect")


def test_settings_this_version_does_not_implement_are_named() -> None:
    from caxton.config.checks import ineffective_settings

    text = (
        "observability:\n  otlp_endpoint: http://collector:4318\n"
        "memory:\n  backend: qdrant\n  embedding_config:\n    model_device: cuda\n"
    )
    config = load_config(Path("c.yaml"), text=text, environ={}).config
    named = sorted(w.split(" has no effect")[0] for w in ineffective_settings(config))
    assert named == [
        "memory.embedding_config.model_device: cuda",
        "observability.otlp_endpoint",
    ]
    traced = load_config(
        Path("c.yaml"),
        text=text.replace("observability:", "observability:\n  tracing_enabled: true"),
        environ={},
    ).config
    assert all("observability" not in w for w in ineffective_settings(traced))


def test_the_cluster_example_runs_on_postgres_with_the_url_from_the_environment() -> None:
    path = Path(__file__).parents[2] / "conf" / "cluster.yaml"
    env = {
        "CAXTON_DATABASE_URL": "postgresql://caxton:pw@db:5432/caxton",
        "CAXTON_PORT": "8082",
        "CAXTON_DATA_DIR": "/srv/caxton-2",
    }
    config = load_config(path, environ=env).config
    assert config.storage.backend == "postgres"
    assert config.storage.postgres.url == env["CAXTON_DATABASE_URL"]
    assert (config.server.port, config.data_dir) == (8082, Path("/srv/caxton-2"))
    with pytest.raises(ConfigError, match="CAXTON_DATABASE_URL is not set"):
        load_config(path, environ={})


def test_storage_settings_without_effect_are_named() -> None:
    on_postgres = load_config(
        Path("c.yaml"),
        text="storage:\n  backend: postgres\n  postgres:\n    url: postgresql://h/db\n"
        "memory:\n  database_path: other.duckdb\n",
        environ={},
    ).config
    assert any(
        w.startswith("memory.database_path has no effect: storage.backend is postgres")
        for w in ineffective_settings(on_postgres)
    )
    embedded = load_config(
        Path("c.yaml"), text="storage:\n  postgres:\n    pool_size: 4\n", environ={}
    ).config
    assert any(
        w.startswith("storage.postgres has no effect: storage.backend is embedded")
        for w in ineffective_settings(embedded)
    )
