"""caxton message send and caxton conversations against a real server, as a user types them."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import trio
from processes import run_cli_async, start_server, wait_exit, write_config

REPO_AGENTS = Path(__file__).parents[2] / "agents"


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    result = await run_cli_async("--url", url, *args)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_message_send_and_conversations(nursery: trio.Nursery, tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    for name, module in (("wordcount", "wordcount.wasm"), ("asker", "asker.wasm")):
        shutil.copy(REPO_AGENTS / f"{name}.toml", agents)
        shutil.copy(REPO_AGENTS / module, agents)
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    config.write_text(config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n"))
    server = await start_server(nursery, "--config", str(config))
    url = server.api_url

    # one agent asks the other by capability
    code, out, err = await cli(
        url, "message", "send", "--to", "asker", "--content", "how many words are here"
    )
    assert code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines())
    conversation = fields["conversation"].strip()
    assert fields["from"].strip() == "asker"
    assert fields["content"].strip().startswith("asked text-statistics")

    with trio.fail_after(10):
        while True:
            code, out, err = await cli(url, "conversations", "show", conversation, "-o", "json")
            assert code == 0, err
            if json.loads(out)["message_count"] == 5:
                break
            await trio.sleep(0.05)
    code, out, err = await cli(url, "conversations", "show", conversation)
    assert code == 0, err
    assert f"conversation:  {conversation}" in out
    assert "participants:  asker, client, wordcount" in out
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("#")))
    assert lines[header].split() == ["#", "PERFORMATIVE", "FROM", "TO", "CONTENT"]
    rows = [line.split(None, 4) for line in lines[header + 1 :]]
    assert rows[0][1:4] == ["request", "client", "asker"]
    assert ["request", "asker", "[text-statistics]"] in [row[1:4] for row in rows]
    assert ["inform", "wordcount", "asker"] in [row[1:4] for row in rows]
    assert 'text-statistics answered: {"words": 5,' in out

    code, out, err = await cli(url, "conversations", "list")
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        "ID",
        "STATUS",
        "MESSAGES",
        "PARTICIPANTS",
        "LAST",
        "ACTIVITY",
    ]
    assert conversation in out

    # by capability, JSON content, JSON output
    code, out, err = await cli(
        url,
        "message", "send", "--capability", "text-statistics", "--performative", "query",
        "--content", "one two", "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    reply = json.loads(out)
    assert (reply["performative"], reply["sender"]) == ("inform", "wordcount")
    assert reply["content"]["words"] == 2

    # --no-wait returns at once with the conversation; the exchange is recorded later
    code, out, err = await cli(
        url, "message", "send", "--capability", "text-statistics", "--content", "x", "--no-wait"
    )
    assert code == 0, err
    accepted = dict(line.split(":", 1) for line in out.splitlines())
    assert accepted["accepted"].strip() == "yes"
    later = accepted["conversation"].strip()
    with trio.fail_after(10):
        while True:
            code, out, err = await cli(url, "conversations", "show", later, "-o", "json")
            if code == 0 and json.loads(out)["message_count"] == 2:
                break
            await trio.sleep(0.05)

    # a failure reply exits 1 and says why
    code, out, err = await cli(url, "message", "send", "--capability", "nope", "--content", "x")
    assert code == 1
    assert "performative: failure" in out
    assert "no agent provides capability 'nope'" in err
    assert "text-statistics" in err

    # usage errors exit 2; server-side refusals exit 1 with the server's message
    code, _, err = await cli(url, "message", "send", "--content", "x")
    assert code == 2
    assert "--to AGENT or --capability" in err
    code, _, err = await cli(
        url, "message", "send", "--to", "asker", "--content", "x", "--conversation", "missing"
    )
    assert code == 1
    assert "no conversation 'missing'" in err

    code, out, err = await cli(url, "conversations", "close", conversation)
    assert (code, out.strip()) == (0, f"closed conversation {conversation}")
    code, _, err = await cli(
        url, "message", "send", "--to", "asker", "--content", "x", "--conversation", conversation
    )
    assert code == 1
    assert "is closed" in err
    code, _, err = await cli(url, "conversations", "show", "missing")
    assert code == 1
    assert "CONVERSATION_NOT_FOUND" in err

    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0
