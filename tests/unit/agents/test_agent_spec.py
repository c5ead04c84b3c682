"""Agent files: parsing, every kind of problem, and the messages users read."""

from __future__ import annotations

import textwrap
import types
from pathlib import Path

import pytest
import tomli

from caxton.agents import (
    MAX_SPEC_BYTES,
    AgentSpec,
    AgentSpecError,
    SpecProblem,
    WasmAgentSpec,
    check_agent_file,
    check_spec_size,
    documented_key_paths,
    parse_agent_spec,
)
from caxton.agents.schema import CONFIG_AGENT_KEYS, WASM_AGENT_KEYS
from caxton.agents.spec import spec_as_dict
from caxton.errors import ValidationFailed
from caxton.wasm import WasmLimits
from caxton.wasm.source import version_hash

HERE = Path(__file__).parent
OPTIMIZED_AGENT = (HERE / "optimized_agent.toml").read_bytes()


def toml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def errors_of(text: str | bytes, *, source: str = "agent.toml") -> list[SpecProblem]:
    report = check_agent_file(text, source=source)
    assert report.spec is None, "expected the file to be invalid"
    return list(report.errors)


def only_error(text: str | bytes) -> SpecProblem:
    errors = errors_of(text)
    assert len(errors) == 1, [e.render() for e in errors]
    return errors[0]


# -- the seed's OptimizedAgent -------------------------------------------------------------------


def test_optimized_agent_from_the_seed_is_refused_for_its_misplaced_system_prompt():
    with pytest.raises(AgentSpecError) as caught:
        parse_agent_spec(OPTIMIZED_AGENT, source="agents/optimized.toml")

    (problem,) = caught.value.problems
    assert problem.key == "tool_config.http_client.system_prompt"
    assert (problem.line, problem.column) == (26, 1)
    assert (
        problem.message == "top-level key system_prompt ended up in table [tool_config.http_client]"
    )
    assert "[tool_config.http_client] header at line 22" in problem.suggestion
    assert "move system_prompt = … above the first table ([memory] at line 5)" in (
        problem.suggestion
    )
    assert "agents/optimized.toml: 1 problem in agent file" in str(caught.value)


def test_optimized_agent_loads_once_system_prompt_moves_above_the_first_table():
    text = OPTIMIZED_AGENT.decode()
    prompt_at = text.index("system_prompt = '''")
    prompt = text[prompt_at:]
    fixed = text[:prompt_at].replace("[memory]\n", prompt + "\n[memory]\n", 1)

    spec = parse_agent_spec(fixed, source="agents/optimized.toml")

    assert isinstance(spec, AgentSpec)
    assert spec.name == "OptimizedAgent"
    assert spec.version == "0.1.0"
    assert spec.tools == ("http_client",)
    assert spec.system_prompt.startswith("Be concise and direct.")
    assert spec.memory.enabled is True
    assert spec.memory.scope == "agent"
    assert spec.memory.search.similarity_threshold == 0.8
    assert spec.memory.search.max_results == 5
    assert spec.memory.search.cache_ttl_s == 3600
    assert spec.performance.max_concurrent_requests == 10
    assert spec.performance.request_timeout_s == 30
    assert spec.performance.llm_config.max_tokens == 1000
    assert spec.performance.llm_config.temperature == 0.1
    assert spec.tool_config["http_client"].timeout_s == 10
    assert spec.tool_config["http_client"].max_connections == 5
    assert spec.source == "agents/optimized.toml"
    assert spec.warnings == ()


# -- a complete, valid file ----------------------------------------------------------------------

FULL_CONFIG_AGENT = toml(
    """
    name = "data-analyzer"
    version = "1.2.0"
    description = "Analyzes CSV data"
    capabilities = ["data-analysis", "reporting"]
    tools = ["http_client", "memory_search", "wasm:csv-parser"]
    system_prompt = '''You are a data analyst.'''
    user_prompt_template = '''
    Request: {{request}}
    Memory: {{ memory_context }}
    History: {{conversation}}
    Language: {{parameters.language}} ({{parameters.limits.rows}} rows)
    '''
    documentation = "# Data analyzer"

    [llm]
    provider = "openai"
    model = "gpt-4o-mini"
    base_url = "https://api.openai.com/v1"
    api_key = "${OPENAI_API_KEY}"
    temperature = 0.2
    max_tokens = 800
    top_p = 0.9
    timeout = "20s"
    max_retries = 2

    [[llm.fallback]]
    provider = "local"
    model = "llama3"
    base_url = "http://localhost:11434/v1"

    [memory]
    enabled = true
    scope = "workspace"
    auto_store = true

    [memory.search]
    similarity_threshold = 0.6
    max_results = 8
    cache_ttl = "5m"

    [performance]
    max_concurrent_requests = 4
    request_timeout = "45s"
    max_tokens_per_day = 200000
    max_cost_per_day = 5.0

    [performance.llm_config]
    max_tokens = 500
    temperature = 0.3

    [tool_config.http_client]
    timeout = "10s"
    max_connections = 5
    allowed_hosts = ["api.example.com"]

    [conversation]
    max_turns = 6
    timeout = "10m"

    [parameters]
    language = "en"
    limits = { rows = 100 }

    [deployment]
    strategy = "canary"
    canary_percentage = 25

    [[mcp_servers]]
    name = "files"
    command = "mcp-files"
    args = ["--root", "/srv/data"]
    tools = ["read_file"]
    timeout = "10s"
    startup_timeout = "5s"
    max_restarts = 2
    env = { LOG_LEVEL = "warn" }

    [[mcp_servers]]
    name = "search"
    url = "https://mcp.example.com/mcp"
    headers = { Authorization = "Bearer ${SEARCH_TOKEN}" }
    max_response_size = "1MiB"
    """
)


def test_a_file_using_every_config_key_parses_into_typed_values():
    spec = parse_agent_spec(FULL_CONFIG_AGENT, source="data-analyzer.toml")

    assert isinstance(spec, AgentSpec)
    assert spec.capabilities == ("data-analysis", "reporting")
    assert spec.tools == ("http_client", "memory_search", "wasm:csv-parser")
    assert spec.llm.provider == "openai"
    assert spec.llm.timeout_s == 20
    assert spec.llm.max_retries == 2
    assert spec.llm.fallback[0].provider == "local"
    assert spec.llm.fallback[0].base_url == "http://localhost:11434/v1"
    assert spec.memory.auto_store is True
    assert spec.memory.search.cache_ttl_s == 300
    assert spec.performance.max_tokens_per_day == 200_000
    assert spec.performance.max_cost_per_day == 5.0
    assert spec.tool_config["http_client"].allowed_hosts == ("api.example.com",)
    assert spec.conversation.max_turns == 6
    assert spec.conversation.timeout_s == 600
    assert spec.parameters == {"language": "en", "limits": {"rows": 100}}
    assert spec.deployment.strategy == "canary"
    assert spec.deployment.canary_percentage == 25
    files, search = spec.mcp_servers
    assert (files.transport, files.command, files.args) == (
        "stdio",
        "mcp-files",
        ("--root", "/srv/data"),
    )
    assert (files.allowed_tools, files.timeout_s, files.startup_timeout_s) == (
        ("read_file",),
        10,
        5,
    )
    assert files.env == {"LOG_LEVEL": "warn"}
    assert (files.max_restarts, search.max_restarts) == (2, 5)
    assert (files.max_response_bytes, search.max_response_bytes) == (4 * 1024**2, 1024**2)
    assert (search.transport, search.allowed_tools, search.timeout_s) == (
        "streamable-http",
        None,
        30,
    )
    assert search.headers == {"Authorization": "Bearer ${SEARCH_TOKEN}"}
    assert len(spec.content_hash) == 32
    assert spec.warnings == ()


def _key_paths(table: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in table.items():
        name = "<tool>" if prefix == "tool_config." else key
        path = f"{prefix}{name}"
        paths.add(path)
        if isinstance(value, dict) and path != "parameters":
            paths |= _key_paths(value, f"{path}.")
        if isinstance(value, list) and value and isinstance(value[0], dict):
            if path == "mcp_servers":  # items of [[mcp_servers]] have keys of their own
                for item in value:
                    paths |= {p for p in _key_paths(item, "mcp_servers.") if p.count(".") < 2}
                continue
            paths |= {f"{prefix}{p}" for p in _key_paths(value[0], "llm.")} - {f"{prefix}llm"}
    return paths


def test_every_documented_config_key_is_used_by_the_complete_example():
    """Keeps the schema, the builders and the example in step: a new key needs a value here."""
    used = _key_paths(tomli.loads(FULL_CONFIG_AGENT))

    assert {doc.path for doc in CONFIG_AGENT_KEYS} <= used


def test_minimal_config_agent_gets_documented_defaults():
    spec = parse_agent_spec('name = "echo"\n', source="echo.toml")

    assert isinstance(spec, AgentSpec)
    assert spec.version == "0.1.0"
    assert spec.user_prompt_template == "{{request}}"
    assert spec.memory.enabled is False
    assert spec.memory.search.max_results == 5
    assert spec.performance.request_timeout_s == 60
    assert spec.conversation.max_turns == 10
    assert spec.deployment.strategy == "blue-green"
    assert spec.llm.provider is None


def test_spec_as_dict_is_plain_data_with_the_agent_type():
    spec = parse_agent_spec(FULL_CONFIG_AGENT, source="data-analyzer.toml")

    data = spec_as_dict(spec)

    assert data["type"] == "config"
    assert data["name"] == "data-analyzer"
    assert data["tools"] == ["http_client", "memory_search", "wasm:csv-parser"]
    assert data["llm"]["fallback"][0]["model"] == "llama3"
    assert "warnings" not in data


# -- misspelled and misplaced keys ---------------------------------------------------------------


def test_misspelled_table_is_named_with_its_place_and_the_key_that_was_meant():
    text = toml(
        """
        name = "searcher"
        version = "1.0.0"

        [memory]
        enabled = true

        [memory.serch]
        max_results = 3
        """
    )

    problem = only_error(text)

    assert problem.render() == "unknown key memory.serch at line 7, column 1; did you mean search?"
    assert problem.as_dict() == {
        "field": "memory.serch",
        "message": "unknown key memory.serch",
        "line": 7,
        "column": 1,
        "suggestion": "did you mean search?",
    }


def test_misspelled_nested_key_suggests_its_sibling():
    text = toml(
        """
        name = "searcher"
        [memory.search]
        simlarity_threshold = 0.9
        """
    )

    problem = only_error(text)

    assert problem.key == "memory.search.simlarity_threshold"
    assert (problem.line, problem.column) == (3, 1)
    assert problem.suggestion == "did you mean similarity_threshold?"


def test_top_level_key_that_belongs_in_a_table_says_where():
    problem = only_error('name = "a"\ntemperature = 0.5\n')

    assert problem.message == "unknown key temperature"
    assert problem.suggestion == (
        "did you mean llm.temperature or performance.llm_config.temperature? "
        "write it below that table's [header]"
    )


def test_unknown_key_without_close_match_lists_the_known_keys():
    problem = only_error('name = "a"\n[conversation]\nflavour = "spicy"\n')

    assert problem.suggestion == "known keys here: max_turns, timeout"


def test_wasm_only_table_in_a_config_agent_says_which_files_take_it():
    problem = only_error('name = "a"\n[limits]\nmax_fuel = 10\n')

    assert problem.key == "limits"
    assert "only valid in WASM agent manifests" in problem.suggestion


def test_top_level_key_after_parameters_header_is_caught():
    text = toml(
        """
        name = "translator"
        user_prompt_template = "{{parameters.language}}: {{request}}"

        [parameters]
        language = "fr"

        system_prompt = "You translate."
        """
    )

    problem = only_error(text)

    assert problem.key == "parameters.system_prompt"
    assert (problem.line, problem.column) == (7, 1)
    assert "move system_prompt = … above the first table ([parameters] at line 4)" in (
        problem.suggestion
    )


def test_parameters_may_use_any_name_written_inline():
    text = 'name = "a"\nparameters = { name = "x", tools = 3 }\n'

    spec = parse_agent_spec(text, source="a.toml")

    assert isinstance(spec, AgentSpec)
    assert spec.parameters == {"name": "x", "tools": 3}


# -- wrong types and ranges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "message", "suggestion"),
    [
        (
            '[llm]\ntemperature = "0.7"\n',
            "llm.temperature",
            "llm.temperature must be a number, got string",
            "remove the quotes: temperature = 0.7",
        ),
        (
            'tools = "http_client"\n',
            "tools",
            "tools must be an array of strings, got string",
            'write tools = ["http_client"]',
        ),
        (
            "version = 1.0\n",
            "version",
            "version must be a string, got float",
            'put the value in quotes: version = "1.0"',
        ),
        (
            '[memory]\nenabled = "yes"\n',
            "memory.enabled",
            "memory.enabled must be a boolean (true or false), got string",
            "remove the quotes: enabled = yes",
        ),
        (
            "memory = true\n",
            "memory",
            "memory must be a table, got boolean",
            "write the settings under a [memory] header",
        ),
        (
            "[conversation]\nmax_turns = 2.5\n",
            "conversation.max_turns",
            "conversation.max_turns must be a whole number, got 2.5",
            "",
        ),
        (
            'capabilities = ["ok", 2]\n',
            "capabilities[1]",
            "capabilities[1] must be a string, got integer",
            'put the value in quotes: "2"',
        ),
        (
            "[llm]\nfallback = 3\n",
            "llm.fallback",
            "llm.fallback must be an array of tables, got integer",
            "fallback: Other [llm] tables tried in order when the first is unreachable.",
        ),
    ],
)
def test_wrong_types_name_the_key_the_expected_and_the_actual_type(text, key, message, suggestion):
    full = 'name = "a"\n' + text

    problem = only_error(full)

    assert problem.message == message
    assert problem.suggestion == suggestion
    assert problem.key == key
    assert (problem.line, problem.column) == (full.count("\n"), 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[llm]\ntemperature = 3\n", "llm.temperature must be between 0 and 2, got 3"),
        ("[llm]\nmax_tokens = 0\n", "llm.max_tokens must be at least 1, got 0"),
        (
            "[deployment]\ncanary_percentage = 150\n",
            "deployment.canary_percentage must be between 0 and 100, got 150",
        ),
        (
            '[llm]\nprovider = "opneai"\n',
            "llm.provider must be one of openai, anthropic, local, none, got 'opneai'",
        ),
        (
            '[performance]\nrequest_timeout = "soon"\n',
            "performance.request_timeout is not valid: expected a duration such as",
        ),
    ],
)
def test_values_out_of_range_or_choice_are_refused(text, message):
    problem = only_error('name = "a"\n' + text)

    assert problem.message.startswith(message)


def test_choice_typo_gets_a_suggestion():
    problem = only_error('name = "a"\n[memory]\nscope = "global_"\n')

    assert problem.suggestion == "did you mean global?"


def test_every_problem_of_a_file_is_reported_at_once_in_file_order():
    text = toml(
        """
        name = "bad name"
        version = "1.0"
        tools = ["http-client"]

        [llm]
        temperature = "hot"

        [memory.serch]
        """
    )

    with pytest.raises(AgentSpecError) as caught:
        parse_agent_spec(text, source="agents/bad.toml")

    error = caught.value
    assert [p.line for p in error.problems] == [1, 2, 3, 6, 8]
    assert [p.key for p in error.problems] == [
        "name",
        "version",
        "tools",
        "llm.temperature",
        "memory.serch",
    ]
    lines = str(error).splitlines()
    assert lines[0] == "agents/bad.toml: 5 problems in agent file"
    assert lines[1].startswith("  - name 'bad name' is not a valid agent name at line 1, column 1;")
    assert len(lines) == 6


def test_agent_spec_error_is_a_validation_error_with_dicts_for_the_api():
    with pytest.raises(ValidationFailed) as caught:
        parse_agent_spec('name = "a"\n[memory.serch]\n', source="a.toml")

    error = caught.value
    assert isinstance(error, AgentSpecError)
    assert error.code == "AGENT_SPEC_INVALID"
    assert error.http_status == 422
    assert error.as_dicts() == [
        {
            "field": "memory.serch",
            "message": "unknown key memory.serch",
            "line": 2,
            "column": 1,
            "suggestion": "did you mean search?",
        }
    ]
    assert error.details == {"source": "a.toml", "errors": error.as_dicts()}


# -- names and versions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "OptimizedAgent", "data_analyzer-2", "x" * 64, "kebab-case-name"]
)
def test_valid_names(name):
    spec = parse_agent_spec(f'name = "{name}"\n', source="a.toml")

    assert spec.name == name


@pytest.mark.parametrize(
    ("name", "message", "suggestion"),
    [
        ("", "name must not be empty", 'write name = "my-agent"'),
        ("x" * 65, "name is 65 characters long; the limit is 64", f'name = "{"x" * 64}"'),
        ("my agent", "name 'my agent' is not a valid agent name", 'name = "my-agent"'),
        ("1st-agent", "name '1st-agent' is not a valid agent name", 'name = "agent-1st-agent"'),
        ("_hidden", "name '_hidden' is not a valid agent name", 'name = "hidden"'),
        (
            "performance",
            "name 'performance' is reserved: /api/v1/agents/performance is an API path of its own",
            'name = "performance-agent"',
        ),
    ],
)
def test_invalid_names_get_a_valid_suggestion(name, message, suggestion):
    problem = only_error(f'name = "{name}"\n')

    assert problem.message == message
    assert suggestion in problem.suggestion


def test_missing_name_is_reported_without_a_position():
    problem = only_error('description = "nameless"\n')

    assert problem.key == "name"
    assert problem.message == "missing required key name"
    assert (problem.line, problem.column) == (None, None)


@pytest.mark.parametrize("version", ["1.0.0", "0.1.0", "1.2.3-beta.1+build.5", "10.20.30"])
def test_valid_versions(version):
    assert parse_agent_spec(f'name = "a"\nversion = "{version}"\n', source="a").version == version


@pytest.mark.parametrize(
    ("version", "suggested"),
    [("1.0", "1.0.0"), ("v1.2.3", "1.2.3"), ("01.2.3", "1.2.3"), ("latest", "0.0.0")],
)
def test_invalid_versions_suggest_a_semantic_version(version, suggested):
    problem = only_error(f'name = "a"\nversion = "{version}"\n')

    assert problem.message == f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)"
    assert problem.suggestion == f'write version = "{suggested}"'
    assert problem.line == 2


# -- templates -----------------------------------------------------------------------------------


def test_unknown_template_variable_is_located_inside_the_multiline_template():
    text = toml(
        """
        name = "a"
        user_prompt_template = '''
        Answer this:
        {{requst}}
        '''
        """
    )

    problem = only_error(text)

    assert problem.message == "unknown template variable {{requst}} in user_prompt_template"
    assert problem.suggestion == "did you mean {{request}}?"
    assert (problem.line, problem.column) == (4, 1)


def test_template_parameter_must_exist_in_parameters():
    text = toml(
        """
        name = "a"
        user_prompt_template = "Reply in {{parameters.langauge}}: {{request}}"
        [parameters]
        language = "en"
        """
    )

    problem = only_error(text)

    assert problem.message == (
        "unknown parameter langauge in template variable {{parameters.langauge}}"
    )
    assert problem.suggestion == "did you mean {{parameters.language}}?"
    assert (problem.line, problem.column) == (2, 34)


def test_template_parameter_without_parameters_table_suggests_adding_it():
    problem = only_error('name = "a"\nuser_prompt_template = "{{parameters.tone}}"\n')

    assert problem.suggestion == "add tone = … under [parameters]"


def test_unrelated_template_variable_lists_the_available_ones():
    problem = only_error('name = "a"\nuser_prompt_template = "{{weather_report}}"\n')

    assert problem.suggestion == ("available: {{request}}, {{memory_context}}, {{conversation}}")


def test_unclosed_template_variable_is_an_error():
    problem = only_error('name = "a"\nuser_prompt_template = "{{request"\n')

    assert problem.message == "user_prompt_template has a {{ without a closing }}"


# -- tools ---------------------------------------------------------------------------------------


def test_unknown_tool_is_pointed_at_and_the_builtin_suggested():
    text = 'name = "a"\ntools = ["memory_search", "http-client"]\n'

    problem = only_error(text)

    assert problem.message == "unknown tool 'http-client'"
    assert problem.suggestion.startswith("did you mean http_client? built-in tools are ")
    assert "wasm:<agent-name>" in problem.suggestion
    assert (problem.line, problem.column) == (2, 27)


def test_wasm_tools_must_name_a_valid_agent():
    problem = only_error('name = "a"\ntools = ["wasm:9lives"]\n')

    assert problem.message == "tool 'wasm:9lives' does not name a valid WASM agent"


def test_tool_config_for_an_unknown_tool_is_an_error():
    problem = only_error('name = "a"\n[tool_config.web_search]\ntimeout = "5s"\n')

    assert problem.key == "tool_config.web_search"
    assert problem.message == "unknown tool 'web_search'"


def test_tool_config_for_an_unlisted_tool_is_a_warning():
    text = 'name = "a"\ntools = ["memory_search"]\n[tool_config.http_client]\ntimeout = "5s"\n'

    report = check_agent_file(text, source="a.toml")

    assert report.valid
    (warning,) = report.warnings
    assert warning.key == "tool_config.http_client"
    assert warning.line == 3


def test_wasm_tool_config_table_with_quoted_key_is_located():
    text = toml(
        """
        name = "a"
        tools = ["wasm:echo"]
        [tool_config."wasm:echo"]
        timout = "5s"
        """
    )

    problem = only_error(text)

    assert problem.key == 'tool_config."wasm:echo".timout'
    assert (problem.line, problem.suggestion) == (4, "did you mean timeout?")


# -- warnings ------------------------------------------------------------------------------------


def test_report_lists_warnings_of_a_valid_file_in_the_validate_route_shape():
    text = toml(
        """
        name = "a"
        tools = ["http_client", "http_client"]
        [llm]
        api_key = "sk-live-123"
        [deployment]
        canary_percentage = 10
        """
    )

    report = check_agent_file(text, source="a.toml")

    assert report.valid
    assert report.spec is not None
    assert report.spec.warnings == report.warnings
    data = report.as_dict()
    assert data["valid"] is True
    assert data["errors"] == []
    assert [w["field"] for w in data["warnings"]] == [
        "tools",
        "llm.api_key",
        "deployment.canary_percentage",
    ]


def test_report_of_an_invalid_file_has_no_spec_and_is_not_valid():
    report = check_agent_file('name = "a"\nbogus = 1\n', source="a.toml")

    assert not report.valid
    assert report.as_dict()["valid"] is False
    with pytest.raises(AgentSpecError):
        report.spec_or_raise()


def test_llm_base_url_must_be_http():
    problem = only_error('name = "a"\n[llm]\nbase_url = "localhost:11434"\n')

    assert problem.message.startswith("llm.base_url must start with http:// or https://")


def test_errors_in_fallback_tables_name_their_index_and_line():
    text = toml(
        """
        name = "a"
        [llm]
        provider = "openai"
        [[llm.fallback]]
        provider = "local"
        [[llm.fallback]]
        provider = "antropic"
        """
    )

    problem = only_error(text)

    assert problem.key == "llm.fallback[1].provider"
    assert problem.line == 7
    assert problem.suggestion == "did you mean anthropic?"


# -- bytes, encodings, size, syntax --------------------------------------------------------------


def test_binary_garbage_is_refused_with_the_position_of_the_first_bad_byte():
    data = b'name = "a"\ndescription = "\xff\xfe\x00garbage"\n'

    problem = only_error(data)

    assert problem.message == "the file is not UTF-8 text (byte 0xff)"
    assert (problem.line, problem.column) == (2, 16)
    assert "UTF-8" in problem.suggestion


def test_random_bytes_are_refused_not_crashed_on():
    data = bytes(range(256)) * 4

    problem = only_error(data)

    assert problem.message.startswith("the file")


def test_nul_bytes_in_utf8_text_are_called_binary():
    problem = only_error(b'name = "a"\n\x00\x00\x00')

    assert problem.message == (
        "the file contains NUL bytes; it looks like binary data, not TOML text"
    )
    assert (problem.line, problem.column) == (2, 1)


def test_a_wasm_module_given_as_agent_file_gets_a_manifest_hint():
    problem = only_error(b"\x00asm\x01\x00\x00\x00")

    assert problem.message == "the file is a WebAssembly module, not a TOML agent file"
    assert "[wasm] module" in problem.suggestion


def test_utf8_byte_order_mark_is_accepted():
    spec = parse_agent_spec('\ufeffname = "bom"\n'.encode(), source="bom.toml")

    assert spec.name == "bom"


def test_a_50_megabyte_file_is_refused_before_parsing():
    data = b"x" * (50 * 1000 * 1000)

    problem = only_error(data)

    assert problem.message == "the agent file is 50MB (50000000 bytes); the limit is 1MiB"
    assert problem.line is None


def test_a_huge_text_is_refused_too():
    problem = only_error("#" * (MAX_SPEC_BYTES + 1))

    assert "the limit is 1MiB" in problem.message


def test_size_check_before_reading_a_file():
    check_spec_size(MAX_SPEC_BYTES, source="ok.toml")
    with pytest.raises(AgentSpecError) as caught:
        check_spec_size(50 * 1000 * 1000, source="big.toml")

    assert "big.toml" in str(caught.value)
    assert "the limit is 1MiB" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "line", "column", "message", "hint"),
    [
        ('name = "a"\nversion = "1.0.0\n', 2, 17, "Illegal character", "close the string on"),
        ('name = "a"\nversion = "1.0.0', 2, 17, "Unterminated string", "close the string with"),
        ('name = "a"\nname = "b"\n', 2, 11, "Cannot overwrite a value", "set twice"),
        ("name = a\n", 1, 8, "Invalid value", "text values need quotes"),
        ("name = '''\nnever closed", 2, 13, "Expected \"'''\"", "close the multi-line string"),
        ('[memory\nname = "a"\n', 1, 8, "Expected ']'", "close the table header"),
    ],
)
def test_malformed_toml_reports_tomli_line_and_column(text, line, column, message, hint):
    problem = only_error(text)

    assert problem.message == f"invalid TOML: {message}" or problem.message.startswith(
        f"invalid TOML: {message}"
    )
    assert (problem.line, problem.column) == (line, column)
    assert hint in problem.suggestion


# -- WASM manifests ------------------------------------------------------------------------------


def test_wasm_manifest_gets_documented_default_limits():
    spec = parse_agent_spec(
        'name = "echo"\nversion = "1.0.0"\n[wasm]\nmodule = "echo.wasm"\n', source="echo.toml"
    )

    assert isinstance(spec, WasmAgentSpec)
    assert spec.kind == "wasm"
    assert spec.module == "echo.wasm"
    assert spec.limits.max_memory_bytes == 10 * 1024 * 1024
    assert spec.limits.max_fuel == 500_000_000
    assert spec.limits.max_execution_time_s == 30
    assert spec.limits.max_message_size == 100_000


def test_wasm_limits_take_sizes_durations_and_float_fuel():
    text = toml(
        """
        name = "cruncher"
        capabilities = ["math"]
        [wasm]
        module = "cruncher.wat"
        [limits]
        max_memory_bytes = "64MiB"
        max_fuel = 5e8
        max_execution_time = "2m"
        max_message_size = "1MB"
        """
    )

    spec = parse_agent_spec(text, source="cruncher.toml")

    assert isinstance(spec, WasmAgentSpec)
    assert spec.limits.max_memory_bytes == 64 * 1024 * 1024
    assert spec.limits.max_fuel == 500_000_000
    assert isinstance(spec.limits.max_fuel, int)
    assert spec.limits.max_execution_time_s == 120
    assert spec.limits.max_message_size == 1_000_000


def test_wasm_module_may_be_omitted_for_api_deploys_only():
    text = 'name = "echo"\n[wasm]\n'

    spec = parse_agent_spec(text, source="<api>", require_module=False)
    problem = only_error(text)

    assert isinstance(spec, WasmAgentSpec)
    assert spec.module is None
    assert problem.key == "wasm.module"
    assert problem.line == 2
    assert "add module =" in problem.suggestion


def test_wasm_module_must_be_wasm_or_wat():
    problem = only_error('name = "echo"\n[wasm]\nmodule = "echo.py"\n')

    assert problem.message == "wasm.module must name a .wasm or .wat file, got 'echo.py'"


def test_wasm_manifest_refuses_config_agent_keys_and_small_memory():
    text = toml(
        """
        name = "echo"
        system_prompt = "hi"
        [wasm]
        module = "echo.wasm"
        [limits]
        max_memory_bytes = "1KB"
        max_fuel = 0
        """
    )

    problems = errors_of(text)

    assert [p.key for p in problems] == [
        "system_prompt",
        "limits.max_memory_bytes",
        "limits.max_fuel",
    ]
    assert "only valid in config agents" in problems[0].suggestion
    assert problems[1].message == "limits.max_memory_bytes must be between 64KiB and 4GiB, got 1KB"
    assert problems[2].message == "limits.max_fuel must be at least 1, got 0"


def test_wasm_manifest_name_below_the_wasm_table_is_the_toml_trap():
    text = '[wasm]\nmodule = "echo.wasm"\nname = "echo"\n'

    problems = errors_of(text)

    keys = {p.key: p for p in problems}
    assert "wasm.name" in keys
    assert "move name = … above the first table ([wasm] at line 1)" in keys["wasm.name"].suggestion
    assert keys["name"].message == "missing required key name"


# -- documentation as data -----------------------------------------------------------------------


def test_documented_key_paths_cover_both_agent_kinds_once():
    paths = documented_key_paths()

    assert len(paths) == len(set(paths))
    for expected in (
        "name",
        "user_prompt_template",
        "llm.fallback",
        "memory.search.cache_ttl",
        "performance.llm_config.temperature",
        "tool_config.<tool>.allowed_hosts",
        "parameters",
        "deployment.canary_percentage",
        "wasm.module",
        "limits.max_message_size",
    ):
        assert expected in paths
    assert set(paths) == {d.path for d in (*CONFIG_AGENT_KEYS, *WASM_AGENT_KEYS)}


def test_every_documented_key_has_help_text():
    for doc in (*CONFIG_AGENT_KEYS, *WASM_AGENT_KEYS):
        assert doc.help.strip(), doc.path


def test_package_exports_exactly_its_public_names():
    import caxton.agents

    public = {
        name
        for name, value in vars(caxton.agents).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    assert public - {"annotations"} == set(caxton.agents.__all__)


def test_wasm_limits_refuse_a_zero_execution_time_as_a_spec_problem():
    report = check_agent_file(
        'name = "echo"\nversion = "1.0.0"\n[wasm]\nmodule = "echo.wasm"\n'
        '[limits]\nmax_execution_time = "0s"\n',
        source="echo.toml",
    )

    assert report.spec is None
    assert [p.key for p in report.errors] == ["limits.max_execution_time"]


def test_wasm_manifest_limits_are_the_limits_the_pool_enforces():
    spec = parse_agent_spec(
        'name = "echo"\nversion = "1.0.0"\n[wasm]\nmodule = "echo.wasm"\n', source="echo.toml"
    )

    assert isinstance(spec, WasmAgentSpec)
    assert spec.limits == WasmLimits()


def test_wasm_version_hash_is_stable_because_it_names_stored_versions():
    assert version_hash("abc", b"\x00asm") == "a188b4ad175e4475d38048c4769add60"
    assert version_hash("abc", b"\x00asm") != version_hash("abd", b"\x00asm")
