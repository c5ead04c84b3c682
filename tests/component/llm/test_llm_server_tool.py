"""The scripted server's script format: files, the documented example, typos."""

from __future__ import annotations

import json

import pytest
import yaml
from servers import load_llm_server

llm_server_tool = load_llm_server()


def test_the_documented_example_script_loads():
    doc = llm_server_tool.__doc__
    block = doc[doc.index("The script (JSON or YAML)::") : doc.index("Tests import it")]
    text = "\n".join(line[4:] for line in block.splitlines()[1:])
    script = llm_server_tool.Script.from_mapping(yaml.safe_load(text))
    assert script.api_key == "sk-test"
    assert script.rule_for("what is the WEATHER").reply == "It is sunny."
    assert script.rule_for("call it").tool_calls[0]["name"] == "get_weather"
    assert script.rule_for("flaky").status == 500
    assert script.rule_for("nothing matches").reply == "nothing matches"  # echo


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_scripts_load_from_files(tmp_path, suffix):
    data = {"chunk_delay_s": 0.5, "rules": [{"match": "hi", "reply": "hello"}]}
    path = tmp_path / f"script{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    script = llm_server_tool.Script.load(path)
    assert script.chunk_delay_s == 0.5
    assert script.rule_for("oh hi").reply == "hello"


def test_a_misspelt_key_is_refused():
    with pytest.raises(ValueError, match="reply"):
        llm_server_tool.Script.from_mapping({"rules": [{"match": "x", "replay": "y"}]})
