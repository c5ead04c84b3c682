"""``[[mcp_servers]]`` checks and the names MCP tools are offered under (pure; issue #19)."""

from __future__ import annotations

import pytest

from caxton.agents.mcp_tools.names import VALID_NAME, offered_name
from caxton.agents.spec import check_agent_file

HEAD = 'name = "a"\n[llm]\nprovider = "none"\n'


def errors(text: str) -> list[str]:
    return [problem.message for problem in check_agent_file(HEAD + text, source="a.toml").errors]


def test_a_server_is_exactly_one_of_command_or_url() -> None:
    both = errors('[[mcp_servers]]\nname = "x"\ncommand = "c"\nurl = "http://h/mcp"\n')
    neither = errors('[[mcp_servers]]\nname = "x"\n')
    assert (
        both
        == neither
        == [
            "mcp_servers[0] must set exactly one of command (a stdio server) or url (a streamable "
            "HTTP server)"
        ]
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "has space"\ncommand = "c"', "is not a valid server name"),
        ('command = "c"', "missing required key mcp_servers[0].name"),
        ('name = "x"\nurl = "file:///etc/passwd"', "must be an http or https URL"),
        ('name = "x"\nurl = "http://h/mcp"\nenv = { A = "b" }', "env does not apply"),
        ('name = "x"\ncommand = "c"\nheaders = { A = "b" }', "headers does not apply"),
        ('name = "x"\ncommand = "c"\nenv = { A = 1 }', "env.A must be a string"),
        ('name = "x"\ncommand = "c"\ntimeout = "0s"', "timeout must be more than 0s"),
        ('name = "x"\ncommand = "c"\nstartup_timeout = "1h"', "at most 300s, got 3600s"),
        ('name = "x"\ncommand = "c"\nbogus = 1', "unknown key mcp_servers[0].bogus"),
        ('name = "x"\ncommand = "c"\nmax_response_size = "1MiB"', "max_response_size does not"),
        ('name = "x"\nurl = "http://h/mcp"\nmax_restarts = 1', "max_restarts does not apply"),
        ('name = "x"\nurl = "http://h/mcp"\nmax_response_size = 10', "between 1KiB and 256MiB"),
        ('name = "x"\ncommand = "c"\nmax_restarts = 1000', "between 0 and 100"),
    ],
)
def test_bad_tables_are_named_errors(table: str, message: str) -> None:
    found = errors(f"[[mcp_servers]]\n{table}\n")
    assert any(message in text for text in found), found


def test_two_servers_may_not_share_a_name() -> None:
    text = (
        '[[mcp_servers]]\nname = "x"\ncommand = "c"\n[[mcp_servers]]\nname = "X"\ncommand = "d"\n'
    )
    assert errors(text) == ["two MCP servers are named 'X'"]


def test_a_valid_file_builds_typed_servers_with_defaults() -> None:
    report = check_agent_file(
        HEAD + '[[mcp_servers]]\nname = "files"\ncommand = "mcp-files"\n', source="a.toml"
    )
    assert report.spec is not None
    (server,) = report.spec.mcp_servers  # type: ignore[union-attr]
    assert (server.transport, server.args, server.allowed_tools) == ("stdio", (), None)
    assert (server.timeout_s, server.startup_timeout_s) == (30.0, 20.0)


@pytest.mark.parametrize(
    ("server", "tool", "taken", "expected"),
    [
        ("files", "read.file", set(), "mcp_files_read_file"),
        ("files", "read file", {"mcp_files_read_file"}, "mcp_files_read_file_2"),
        ("files", "x", {"MCP_FILES_X", "mcp_files_x_2"}, "mcp_files_x_3"),
        ("files", "", set(), "mcp_files_tool"),
        ("w", "überprüfen", set(), "mcp_w__berpr_fen"),
    ],
)
def test_offered_names(server: str, tool: str, taken: set[str], expected: str) -> None:
    assert offered_name(server, tool, taken) == expected


def test_long_names_are_cut_with_a_hash_and_stay_unique() -> None:
    first = offered_name("server", "t" * 200, set())
    second = offered_name("server", "t" * 199 + "u", set())
    assert len(first) == len(second) == 64
    assert first != second
    assert VALID_NAME.match(first)
    again = offered_name("server", "t" * 200, {first})
    assert len(again) == 64
    assert again.endswith("_2")
