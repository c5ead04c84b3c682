"""Config (LLM-driven) agents: a prompt, tools and memory, answered by the operator's LLM.

A request runs like this (DESIGN §4.1)::

    wait for a slot ([performance] max_concurrent_requests), all under request_timeout
    -> memory context (semantic search, [memory] scope / similarity_threshold / max_results,
       cached for cache_ttl) and earlier turns of the conversation
    -> prompt (caxton.agents.prompt) -> LLM call, streamed: text chunks go to the caller
       as they arrive
    -> tool calls the model asked for run, their results go back in the next call
       (a failing tool is a result the model reads, not an error) ... up to max_turns calls
    -> with [memory] auto_store, the exchange is remembered

Each loaded version is one :class:`ConfigAgentInstance`; blue-green swaps, draining and
canaries are the registry's, exactly as for WASM agents.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

from caxton.agents.logs import AgentLogs
from caxton.agents.mcp_tools.connections import McpClients
from caxton.agents.prompt import Turn, build_prompt, memory_context, request_text, turns_of
from caxton.agents.runtime import AgentReply
from caxton.agents.spec import AgentSpec
from caxton.agents.tools import ToolCallContext, ToolDeps, ToolFailed, error_result, tools_for
from caxton.config.model import LLMConfig
from caxton.errors import CaxtonError
from caxton.llm import ChatRequest, Finish, TextDelta, ToolCall
from caxton.llm import Message as ChatMessage
from caxton.llm.redact import redact_text
from caxton.llm.resolve import LLMNotConfigured, resolve_chain
from caxton.llm.service import LLMService
from caxton.memory.types import NewEntity, Scope
from caxton.tracing import set_attributes, span
from caxton.usage.model import Budget
from caxton.usage.service import UsageService

if TYPE_CHECKING:
    from caxton.agents.mcp_tools.connections import McpConnections
    from caxton.agents.runtime import AgentInstance, LoadRequest
    from caxton.agents.tools import Tool
    from caxton.llm.client import LLMClient
    from caxton.llm.types import Usage
    from caxton.messages import ChunkSender, Message

#: Earlier messages of a conversation read for the prompt.
HISTORY_MESSAGES: Final = 20
#: Longest tool result handed back to the model, in characters.
TOOL_RESULT_CHARS: Final = 32_000
#: Longest text of one side of an exchange kept by ``auto_store``.
STORED_CHARS: Final = 2_000
#: Memory-context cache entries kept per version.
CONTEXT_CACHE_SIZE: Final = 256


class AgentTimeout(CaxtonError):
    """The agent did not answer within its ``[performance] request_timeout``."""

    code = "TIMEOUT"
    http_status = 504


class ConversationHistory(Protocol):
    """Earlier messages of a conversation, oldest first."""

    async def recent(self, conversation_id: str, limit: int) -> list[Message]: ...


@attrs.frozen(kw_only=True)
class ConfigAgentDeps:
    """What config agents use, handed in when the server builds their runtime.

    Attributes:
        environ: where ``${VAR}`` of agent files in agents_dir (written by the operator) is
            expanded from: the server's environment.
        api_root: the folder of agents deployed through the API (their ``source`` is below it).
        api_env_allowlist: the only variables ``${VAR}`` of those agents may read
            (``security.agent_env_allowlist``); an API caller must not read the server's
            environment (issue #13).
    """

    llm: LLMService
    defaults: LLMConfig
    tools: ToolDeps
    logs: AgentLogs
    environ: Mapping[str, str]
    history: ConversationHistory
    api_root: str | None = None
    api_env_allowlist: tuple[str, ...] = ()
    #: Token accounting and budgets (issue #18); None: calls are not accounted.
    usage: UsageService | None = None
    #: where the sessions of ``[[mcp_servers]]`` run (issue #19); ``None``: no MCP tools
    mcp: McpClients | None = None

    def log(self, agent: str, level: str, text: str) -> None:
        """Write an agent log line with URL credentials and auth headers masked: tool and LLM
        errors quote URLs, and every role that reads logs must not read secrets (issue #13)."""
        self.logs.write(agent, level, redact_text(text))

    def environ_for(self, spec: AgentSpec) -> tuple[Mapping[str, str], str]:
        """The environment ``${VAR}`` of ``spec`` reads, and how to make a missing one
        available."""
        if self.api_root is None or not spec.source.startswith(self.api_root.rstrip("/") + "/"):
            return self.environ, ""
        allowed = {n: self.environ[n] for n in self.api_env_allowlist if n in self.environ}
        return allowed, (
            "agents deployed through the API read only the variables listed in caxton.yaml "
            "security.agent_env_allowlist: ask an admin to list it, or write the value in the "
            "agent file"
        )


class ConfigRuntime:
    """Loads config agents: resolves their LLM endpoints and tools."""

    def __init__(self, deps: ConfigAgentDeps) -> None:
        if deps.usage is None:  # token metrics and the meter still count (no store here)
            deps = attrs.evolve(
                deps, usage=UsageService(None, prices={}, tokens=deps.llm.metrics.tokens)
            )
        self.deps = deps

    async def load(self, request: LoadRequest) -> AgentInstance:
        spec = request.spec
        assert isinstance(spec, AgentSpec)
        deps = self.deps
        environ, env_hint = deps.environ_for(spec)
        try:
            chain = resolve_chain(
                spec.name,
                spec.llm,
                deps.defaults,
                spec.performance.llm_config,
                environ,
                env_hint=env_hint,
            )
        except LLMNotConfigured as exc:
            deps.log(spec.name, "warn", f"this version cannot answer: {exc.message}")
            return ConfigAgentInstance(spec, deps, client=None, problem=exc)
        mcp = None
        if spec.mcp_servers and deps.mcp is not None:
            # the version owns its MCP servers: started now, closed by aclose (issue #19)
            mcp = await deps.mcp.open(
                spec.name,
                spec.mcp_servers,
                environ=environ,
                env_hint=env_hint,
                log=lambda level, text: deps.log(spec.name, level, text),
            )
        return ConfigAgentInstance(
            spec,
            deps,
            client=deps.llm.client(chain),
            problem=None,
            model=chain[0].model,
            mcp=mcp,
        )


class ConfigAgentInstance:
    """One loaded version of a config agent; see the module docstring."""

    def __init__(
        self,
        spec: AgentSpec,
        deps: ConfigAgentDeps,
        *,
        client: LLMClient | None,
        problem: LLMNotConfigured | None,
        model: str | None = None,
        mcp: McpConnections | None = None,
    ) -> None:
        self.spec = spec
        self.deps = deps
        self.client = client
        self.problem = problem
        #: the primary model of the [llm] chain (the one priced when the provider names none)
        self.model = model or "unknown"
        performance = spec.performance
        self.budget = Budget(
            scope="agent",
            name=spec.name,
            max_tokens_per_day=performance.max_tokens_per_day,
            max_cost_per_day=performance.max_cost_per_day,
            where=f"[performance] in {spec.source}",
        )
        self.tools: dict[str, Tool] = tools_for(spec.tools, deps.tools)
        self.mcp = mcp
        if mcp is not None:
            self.tools.update(mcp.tools(set(self.tools)))
        self._slots = trio.Semaphore(max(1, spec.performance.max_concurrent_requests))
        self._context_cache: dict[str, tuple[float, str]] = {}

    @property
    def details(self) -> dict[str, Any]:
        llm: dict[str, Any] = (
            {"provider": self.client.provider, "url": self.client.url}
            if self.client is not None
            else {"error": self.problem.message if self.problem else "not configured"}
        )
        return {
            "llm": llm,
            "tools": sorted(tool.name for tool in self.tools.values()),
            "max_concurrent_requests": self.spec.performance.max_concurrent_requests,
            **({"mcp_servers": self.mcp.view()} if self.mcp is not None else {}),
        }

    async def handle(self, message: Message, stream: ChunkSender | None = None) -> AgentReply:
        """Answer ``message`` (see the module docstring).

        Raises:
            LLMUnavailable: no LLM is configured, or the provider cannot be reached (503).
            LLMError: the provider failed (502).
            AgentTimeout: ``request_timeout`` passed, waiting for a slot included (504).

        Cancellation:
            Stops the LLM call (its connection is closed) and any running tool.
        """
        if self.problem is not None:
            raise self.problem
        timeout_s = self.spec.performance.request_timeout_s
        with trio.move_on_after(timeout_s) as deadline:
            async with self._slots:
                return await self._answer(message, stream)
        assert deadline.cancelled_caught
        raise AgentTimeout(
            f"agent {self.spec.name!r} did not answer within its request_timeout of "
            f"{timeout_s:g}s ([performance] request_timeout in its file)",
            details={"agent": self.spec.name, "timeout_s": timeout_s},
        )

    async def aclose(self) -> None:
        if self.mcp is not None:
            await self.mcp.aclose()

    # -- one request ---------------------------------------------------------------------------

    async def _answer(self, message: Message, stream: ChunkSender | None) -> AgentReply:
        spec = self.spec
        request = request_text(message.content)
        memory = await self._memory_context(request) if spec.memory.enabled else ""
        prompt = build_prompt(
            system_prompt=spec.system_prompt,
            template=spec.user_prompt_template,
            request=request,
            memory=memory,
            turns=await self._earlier_turns(message),
            parameters=spec.parameters,
        )
        messages = list(prompt.messages)
        offered = tuple(tool.spec() for tool in self.tools.values())
        texts: list[str] = []
        chunks = tokens = 0
        usage = self.deps.usage
        for _ in range(max(1, spec.conversation.max_turns)):
            if usage is not None:
                # before every call: a run that crossed a budget stops here (issue #18)
                await usage.check(self.budget)
            call = ChatRequest(messages=tuple(messages), system=prompt.system, tools=offered)
            text, calls, pieces, used = await self._call_llm(call, stream)
            texts.append(text)
            chunks += pieces
            tokens += used
            if not calls:
                break
            messages.append(ChatMessage(role="assistant", content=text, tool_calls=calls))
            context = ToolCallContext(spec=spec, message=message)
            for tool_call in calls:
                result = await self._run_tool(tool_call, context)
                messages.append(ChatMessage(role="tool", content=result, tool_call_id=tool_call.id))
        else:
            self.deps.log(
                spec.name,
                "warn",
                f"stopped after {spec.conversation.max_turns} LLM calls ([conversation] "
                "max_turns) while the model still asked for tools",
            )
        reply = "".join(texts)
        if spec.memory.enabled and spec.memory.auto_store:
            await self._remember(message, request, reply)
        return AgentReply(content=reply, chunks=chunks, tokens=tokens)

    async def _call_llm(
        self, request: ChatRequest, stream: ChunkSender | None
    ) -> tuple[str, tuple[ToolCall, ...], int, int]:
        """One streamed call: its text, the tool calls it asked for, the chunk count and the
        tokens it used (accounted in the usage records once the call finished)."""
        assert self.client is not None
        provider = self.client.provider
        metrics = self.deps.llm.metrics
        labels = {"agent": self.spec.name, "provider": provider}
        parts: list[str] = []
        calls: list[ToolCall] = []
        finish: Finish | None = None
        started = time.perf_counter()
        client = self.client
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": self.model,
            "gen_ai.agent.name": self.spec.name,
            "server.address": client.url,
        }
        try:
            with span(f"chat {self.model}", lambda: attributes, kind="client") as current:
                async with self.client.stream(request) as events:
                    async for event in events:
                        if isinstance(event, TextDelta):
                            parts.append(event.text)
                            if stream is not None and event.text:
                                await stream.send(event.text)
                        elif isinstance(event, ToolCall):
                            calls.append(event)
                        elif isinstance(event, Finish):
                            finish = event
                if finish is not None:
                    set_attributes(current, _chat_attributes(finish))
        except CaxtonError as exc:
            metrics.errors.labels(**labels, code=exc.code).inc()
            raise
        finally:
            metrics.calls.labels(**labels).observe(time.perf_counter() - started)
        tokens = 0
        if finish is not None:
            tokens = finish.usage.total_tokens
            await self._account(provider, finish.model or self.model, finish.usage)
        return "".join(parts), tuple(calls), len(parts), tokens

    async def _account(self, provider: str, model: str, usage: Usage) -> None:
        accounting = self.deps.usage
        assert accounting is not None  # (ConfigRuntime made one)
        try:
            await accounting.record(
                agent=self.spec.name, provider=provider, model=model, usage=usage
            )
        except CaxtonError as exc:
            # the answer is not lost because the store could not keep its cost; say so
            self.deps.log(self.spec.name, "warn", f"usage not recorded: {exc.message}")

    async def _run_tool(self, call: ToolCall, context: ToolCallContext) -> str:
        """The result of one tool call as the model reads it (errors included)."""
        name = self.spec.name
        tool = self.tools.get(call.name)
        started = time.perf_counter()
        with span(
            f"execute_tool {call.name}",
            lambda: {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call.name,
                "gen_ai.tool.call.id": call.id,
                "gen_ai.agent.name": name,
            },
        ) as current:
            try:
                if tool is None:
                    offered = ", ".join(sorted(self.tools)) or "none"
                    raise ToolFailed(f"there is no tool {call.name!r}; the tools are: {offered}")
                result = await tool.run(tool.check(call.parsed_arguments()), context)
            except CaxtonError as exc:
                self.deps.log(name, "warn", f"tool {call.name} failed: {exc.message}")
                set_attributes(current, {"error.type": exc.code})
                return error_result(exc)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.deps.log(name, "info", f"tool {tool.name} answered in {elapsed_ms:.0f} ms")
        if len(result) > TOOL_RESULT_CHARS:
            result = result[:TOOL_RESULT_CHARS] + f"\n[cut at {TOOL_RESULT_CHARS} characters]"
        return result

    # -- context -------------------------------------------------------------------------------

    async def _memory_context(self, request: str) -> str:
        memory = self.deps.tools.memory
        if memory is None or not request.strip():
            return ""
        search = self.spec.memory.search
        now = trio.current_time()
        cached = self._context_cache.get(request)
        if cached is not None and cached[0] > now:
            return cached[1]
        own_only = self.spec.memory.scope == Scope.AGENT.value
        try:
            hits = await memory.search(
                request,
                limit=search.max_results,
                min_similarity=search.similarity_threshold,
                scope=Scope.AGENT if own_only else None,
                agent=self.spec.name,
            )
        except CaxtonError as exc:
            self.deps.log(self.spec.name, "warn", f"memory search failed: {exc.message}")
            return ""
        text = memory_context(hits)
        if search.cache_ttl_s > 0:
            if len(self._context_cache) >= CONTEXT_CACHE_SIZE:
                self._context_cache.pop(next(iter(self._context_cache)))
            self._context_cache[request] = (now + search.cache_ttl_s, text)
        return text

    async def _earlier_turns(self, message: Message) -> list[Turn]:
        earlier = [
            m
            for m in await self.deps.history.recent(message.conversation_id, HISTORY_MESSAGES)
            if m.message_id != message.message_id
        ]
        if not earlier:
            return []
        idle_s = time.time() - earlier[-1].created_at
        if idle_s > self.spec.conversation.timeout_s:
            return []  # the conversation went quiet for longer than [conversation] timeout
        return turns_of(earlier, self.spec.name)

    async def _remember(self, message: Message, request: str, reply: str) -> None:
        memory = self.deps.tools.memory
        if memory is None:
            return
        scope = Scope(self.spec.memory.scope)
        entity = NewEntity(
            name=f"{self.spec.name} conversation {message.conversation_id}",
            entity_type="conversation",
            observations=(
                f"{message.sender or 'user'} asked: {request[:STORED_CHARS]}",
                f"{self.spec.name} answered: {reply[:STORED_CHARS]}",
            ),
            scope=scope,
            agent=self.spec.name if scope is Scope.AGENT else None,
            metadata={"conversation_id": message.conversation_id},
        )
        try:
            await memory.create_entity(entity)
        except CaxtonError as exc:
            self.deps.log(self.spec.name, "warn", f"auto_store: exchange not stored: {exc.message}")


def _chat_attributes(finish: Finish) -> dict[str, Any]:
    """The GenAI attributes of a finished call: ``gen_ai.usage.input_tokens`` counts every
    prompt token (cached ones included), as the conventions define it."""
    usage = finish.usage
    return {
        "gen_ai.response.model": finish.model,
        "gen_ai.response.finish_reasons": (finish.reason,),
        "gen_ai.usage.input_tokens": usage.input_tokens
        + usage.cache_read_tokens
        + usage.cache_write_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
    }
