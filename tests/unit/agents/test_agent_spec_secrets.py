"""Validation problems are shown to every role: they never quote a credential (issue #13)."""

from __future__ import annotations

from caxton.agents.spec import check_agent_file


def test_problems_do_not_repeat_credentials() -> None:
    report = check_agent_file(
        'name = "a"\nsystem_prompt = "x"\n[llm]\nbase_url = "htp://me:hunter2pw@h/?key=k3y"\n'
        "api_key = 987654321\n",
        source="a.toml",
    )
    shown = "\n".join(p.render() for p in (*report.errors, *report.warnings))
    assert "llm.base_url must start with http:// or https://" in shown
    assert "llm.api_key must be a string" in shown
    for secret in ("hunter2pw", "k3y", "987654321"):
        assert secret not in shown


def test_a_variable_reference_is_a_valid_base_url() -> None:
    report = check_agent_file(
        'name = "a"\nsystem_prompt = "x"\n[llm]\nbase_url = "${LLM_URL}"\n', source="a.toml"
    )
    assert report.valid, report.errors
