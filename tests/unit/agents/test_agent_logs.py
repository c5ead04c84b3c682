"""Agent log followers: a follower whose reader has left never breaks the writer."""

from __future__ import annotations

from caxton.agents.logs import AgentLogs


async def test_a_write_while_a_follower_is_leaving_is_not_an_error() -> None:
    logs = AgentLogs()
    async with logs.follow("echo") as lines:
        logs.write("echo", "info", "first")
        assert (await lines.receive()).message == "first"
        # the reader's side closes before the follower is removed (a checkpoint apart)
        await lines.aclose()
        logs.write("echo", "info", "second")  # was BrokenResourceError -> 500 on DELETE
    logs.write("echo", "info", "third")
    assert [line.message for line in logs.tail("echo", 10)] == ["first", "second", "third"]
