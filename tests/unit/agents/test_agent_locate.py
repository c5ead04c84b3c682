"""The TOML key locator: positions of headers and keys, never of text inside strings."""

from __future__ import annotations

import textwrap

import pytest
import tomli

from caxton.agents.locate import Position, format_key_path, locate_keys


def toml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_keys_and_headers_get_line_and_column():
    text = toml(
        """
        name = "a"   # the name
          tools = ["x"]
        [memory]
        enabled = true
        [memory.search]
        max_results = 3
        """
    )

    found = locate_keys(text)

    assert found.keys[("name",)] == Position(line=1, column=1)
    assert found.keys[("tools",)] == Position(line=2, column=3)
    assert found.keys[("memory",)] == Position(line=3, column=1)
    assert found.keys[("memory", "enabled")] == Position(line=4, column=1)
    assert found.keys[("memory", "search", "max_results")] == Position(line=6, column=1)
    assert [h.text for h in found.headers] == ["[memory]", "[memory.search]"]
    assert found.first_header() == found.headers[0]


def test_text_inside_multiline_strings_is_not_taken_for_keys_or_headers():
    text = toml(
        """
        system_prompt = '''
        [not_a_table]
        fake = "key"
        '''
        documentation = \"\"\"
        also = "not a key" \\\"\"\"
        [still.not.a.table]
        \"\"\"
        real = 1
        """
    )
    assert tomli.loads(text)["real"] == 1

    found = locate_keys(text)

    assert set(found.keys) == {("system_prompt",), ("documentation",), ("real",)}
    assert found.keys[("real",)].line == 9
    assert found.headers == ()


def test_multiline_arrays_do_not_hide_the_next_key():
    text = toml(
        """
        tools = [
          "memory_search",  # first
          "http_client",
        ]
        name = "a"
        """
    )

    found = locate_keys(text)

    assert found.keys[("name",)].line == 5
    assert ("memory_search",) not in found.keys


def test_quoted_and_dotted_keys():
    text = toml(
        """
        memory.enabled = true
        [tool_config."wasm:echo"]
        'time out' = "5s"
        """
    )

    found = locate_keys(text)

    assert found.keys[("memory",)].line == 1
    assert found.keys[("memory", "enabled")].line == 1
    assert found.keys[("tool_config", "wasm:echo")].line == 2
    assert found.keys[("tool_config", "wasm:echo", "time out")].line == 3


def test_arrays_of_tables_are_indexed():
    text = toml(
        """
        [[llm.fallback]]
        provider = "local"
        [[llm.fallback]]
        provider = "anthropic"
        [llm.fallback.extra]
        note = "applies to the last item"
        """
    )

    found = locate_keys(text)

    assert found.keys[("llm", "fallback", 0, "provider")].line == 2
    assert found.keys[("llm", "fallback", 1, "provider")].line == 4
    assert found.keys[("llm", "fallback", 1, "extra", "note")].line == 6


def test_find_falls_back_to_the_closest_located_ancestor():
    text = 'name = "a"\nmemory = { search = { max_results = 5 } }\n'

    found = locate_keys(text)

    assert found.find(("memory", "search", "max_results")) == Position(line=2, column=1)
    assert found.find(("nowhere",)) is None


def test_header_before_a_line_is_the_table_a_key_lands_in():
    text = toml(
        """
        name = "a"
        [memory]
        enabled = true

        [tool_config.http_client]
        timeout = "10s"

        system_prompt = "x"
        """
    )

    found = locate_keys(text)

    assert found.header_before(1) is None
    header = found.header_before(found.keys[("tool_config", "http_client", "system_prompt")].line)
    assert header is not None
    assert header.text == "[tool_config.http_client]"
    assert header.line == 5


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("memory", "search"), "memory.search"),
        (("llm", "fallback", 0, "model"), "llm.fallback[0].model"),
        (("tool_config", "wasm:echo", "timeout"), 'tool_config."wasm:echo".timeout'),
        ((), ""),
    ],
)
def test_format_key_path(path, text):
    assert format_key_path(path) == text
