"""What the router needs from the agents, as Protocols: the server hands in the agent table
(:class:`caxton.agents.table.AgentTable`) and the per-agent logs, which live a floor above."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from caxton.messages import ChunkSender, Message


class Answer(Protocol):
    """An agent's reply to one message."""

    @property
    def content(self) -> str | dict[str, Any]: ...


class AgentDirectory(Protocol):
    """The running agents: who they are, what they declare, and how to reach them."""

    @property
    def state(self) -> object:
        """A value that changes whenever agents or their versions change (for caching)."""
        ...

    def has_agent(self, name: str) -> bool: ...

    def agent_names(self) -> list[str]: ...

    def status_of(self, name: str) -> tuple[str, str | None]:
        """The agent's status and the version serving it (``None`` when none does)."""
        ...

    def in_flight(self, name: str) -> int: ...

    def declared_capabilities(self) -> dict[str, tuple[str, ...]]: ...

    async def send(
        self, name: str, message: Message, stream: ChunkSender | None = None
    ) -> tuple[Answer, object]:
        """Deliver ``message`` to the version of ``name`` serving its conversation.

        Raises:
            CaxtonError: the agent has no running version, or its answer failed.
        """
        ...


class AgentLog(Protocol):
    """Per-agent log lines (refused sends go to the sender's log)."""

    def write(self, agent: str, level: str, message: str) -> None: ...
