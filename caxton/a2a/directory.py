"""The local agents and the remote A2A agents as the one directory the router reads.

The router routes by name or capability over an
:class:`~caxton.messaging.agents.AgentDirectory`; this one answers from the agent table first
(a local agent wins over a remote one of the same name) and from :class:`RemoteAgents`
second, so remote agents take part in capability routing, the hop guard, timeouts and
failure replies exactly as local ones do: no second routing model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caxton.a2a.remote import RemoteAgents
    from caxton.agents.table import AgentTable
    from caxton.messages import ChunkSender, Message
    from caxton.messaging.agents import Answer


class AgentsAndRemotes:
    """An :class:`~caxton.messaging.agents.AgentDirectory` over both kinds of agents."""

    def __init__(self, table: AgentTable, remotes: RemoteAgents) -> None:
        self.table = table
        self.remotes = remotes
        self._state: tuple[object, object] = (table.state, remotes.state)

    @property
    def state(self) -> object:
        """Changes when the agents or the remote agents change (the same object otherwise,
        so the router's capability index is rebuilt only then)."""
        local, remote = self.table.state, self.remotes.state
        if self._state[0] is not local or self._state[1] is not remote:
            self._state = (local, remote)
        return self._state

    def _remote(self, name: str) -> bool:
        return not self.table.has_agent(name) and self.remotes.has(name)

    def has_agent(self, name: str) -> bool:
        return self.table.has_agent(name) or self.remotes.has(name)

    def agent_names(self) -> list[str]:
        return sorted({*self.table.agent_names(), *self.remotes.names()})

    def status_of(self, name: str) -> tuple[str, str | None]:
        if self._remote(name):
            return self.remotes.status_of(name)
        return self.table.status_of(name)

    def in_flight(self, name: str) -> int:
        if self._remote(name):
            return self.remotes.in_flight(name)
        return self.table.in_flight(name)

    def declared_capabilities(self) -> dict[str, tuple[str, ...]]:
        return {**self.remotes.declared_capabilities(), **self.table.declared_capabilities()}

    async def send(
        self, name: str, message: Message, stream: ChunkSender | None = None
    ) -> tuple[Answer, object]:
        if self._remote(name):
            return await self.remotes.send(name, message, stream), None
        return await self.table.send(name, message, stream)
