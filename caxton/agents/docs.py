"""Render the agent file reference (README's tables) from the schema's key documentation."""

from __future__ import annotations

from caxton.agents.schema import CONFIG_AGENT_KEYS, WASM_AGENT_KEYS, KeyDoc


def _rows(keys: tuple[KeyDoc, ...] | list[KeyDoc]) -> list[str]:
    rows = []
    for doc in keys:
        default = "-" if doc.default is None else f"`{doc.default!r}`".replace("'", '"')
        rows.append(f"| `{doc.path}` | {doc.kind.value} | {default} | {doc.help} |")
    return rows


def reference_markdown() -> str:
    header = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(
        [
            "Config (LLM) agents:",
            "",
            *header,
            *_rows(list(CONFIG_AGENT_KEYS)),
            "",
            "WASM agents (a file with a `[wasm]` table):",
            "",
            *header,
            *_rows(list(WASM_AGENT_KEYS)),
        ]
    )


if __name__ == "__main__":
    print(reference_markdown())
