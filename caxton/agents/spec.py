"""Agent specs: the validated, typed content of one agent file.

:func:`parse_agent_spec` turns the text of an agent file into an :class:`AgentSpec` (a config,
LLM-driven agent) or a :class:`WasmAgentSpec` (a manifest with a ``[wasm]`` table), or raises
:class:`~caxton.agents.problems.AgentSpecError` carrying every problem of the file.
:func:`check_agent_file` returns the same findings as a :class:`SpecReport` without raising, for the
validate route and ``caxton agents validate``.

Everything here is pure: no file system, no network, no event loop. Durations are stored in
seconds (``*_s`` fields) and sizes in bytes (``*_bytes`` fields).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs
import cattrs

from caxton.agents.mcp_tools.spec import McpServerSpec, build_mcp_servers, check_mcp_servers
from caxton.agents.problems import AgentSpecError, SpecProblem, sort_problems
from caxton.agents.schema import CONFIG_AGENT_KEYS, WASM_AGENT_KEYS, KeyDoc, Kind
from caxton.agents.validate import (
    MAX_SPEC_BYTES,
    SpecChecker,
    decode_text,
    parse_toml,
    size_problem,
)
from caxton.llm.settings import LlmSpec
from caxton.units import parse_duration, parse_size
from caxton.wasm.limits import WasmLimits

if TYPE_CHECKING:
    from caxton.errors import JSONValue

_WASM_SUFFIXES: Final = (".wasm", ".wat")


@attrs.frozen(kw_only=True)
class MemorySearchSpec:
    """``[memory.search]``: how memory context is found for a prompt."""

    similarity_threshold: float
    max_results: int
    cache_ttl_s: float


@attrs.frozen(kw_only=True)
class MemorySpec:
    """``[memory]``: whether and how the agent uses long-term memory."""

    enabled: bool
    scope: str
    auto_store: bool
    search: MemorySearchSpec


@attrs.frozen(kw_only=True)
class LlmOverrides:
    """``[performance.llm_config]``: per-agent overrides of ``[llm]``."""

    max_tokens: int | None = None
    temperature: float | None = None


@attrs.frozen(kw_only=True)
class PerformanceSpec:
    """``[performance]``: concurrency and request deadline."""

    max_concurrent_requests: int
    request_timeout_s: float
    llm_config: LlmOverrides
    #: Daily budgets (issue #18): tokens of every kind, and cost from usage.prices.
    max_tokens_per_day: int | None = None
    max_cost_per_day: float | None = None


@attrs.frozen(kw_only=True)
class ToolSettings:
    """``[tool_config.<tool>]``: settings of one tool; ``None`` means the tool's default."""

    timeout_s: float | None = None
    max_connections: int | None = None
    allowed_hosts: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class ConversationSpec:
    """``[conversation]``: multi-turn limits."""

    max_turns: int
    timeout_s: float


@attrs.frozen(kw_only=True)
class DeploymentSpec:
    """``[deployment]``: how a new version of the agent replaces the running one."""

    strategy: str
    canary_percentage: float


@attrs.frozen(kw_only=True)
class AgentSpec:
    """A config (LLM-driven) agent, as one file defines it.

    Attributes:
        source: the file the spec came from (or ``"<api>"``), for messages.
        content_hash: BLAKE2b of the file bytes, to skip reloads of unchanged content.
        warnings: findings that do not stop the agent from loading.
    """

    kind: ClassVar[str] = "config"

    name: str
    version: str
    description: str
    capabilities: tuple[str, ...]
    documentation: str
    tools: tuple[str, ...]
    system_prompt: str
    user_prompt_template: str
    llm: LlmSpec
    memory: MemorySpec
    performance: PerformanceSpec
    tool_config: Mapping[str, ToolSettings]
    conversation: ConversationSpec
    parameters: Mapping[str, Any]
    deployment: DeploymentSpec
    source: str
    content_hash: str
    warnings: tuple[SpecProblem, ...] = ()
    #: ``[[mcp_servers]]``: MCP servers whose tools the model may call (issue #19).
    mcp_servers: tuple[McpServerSpec, ...] = ()


@attrs.frozen(kw_only=True)
class WasmAgentSpec:
    """A WASM agent manifest (a file with a ``[wasm]`` table).

    Attributes:
        module: the module path relative to the manifest; ``None`` when the module bytes come
            with an API deploy.
    """

    kind: ClassVar[str] = "wasm"

    name: str
    version: str
    description: str
    capabilities: tuple[str, ...]
    documentation: str
    module: str | None
    limits: WasmLimits
    deployment: DeploymentSpec
    source: str
    content_hash: str
    warnings: tuple[SpecProblem, ...] = ()


AnyAgentSpec = AgentSpec | WasmAgentSpec


@attrs.frozen(kw_only=True)
class SpecReport:
    """Everything validation found in one agent file.

    Attributes:
        spec: the spec, or ``None`` when there are errors.
        errors: problems that stop the file from loading.
        warnings: findings worth fixing that do not stop the file from loading.
    """

    source: str
    spec: AnyAgentSpec | None
    errors: tuple[SpecProblem, ...]
    warnings: tuple[SpecProblem, ...]

    @classmethod
    def failed(cls, source: str, errors: Iterable[SpecProblem]) -> SpecReport:
        """The report of a file that does not load, with no warnings."""
        return cls(source=source, spec=None, errors=tuple(errors), warnings=())

    @property
    def valid(self) -> bool:
        """Whether the file loads."""
        return not self.errors

    def as_dict(self) -> dict[str, JSONValue]:
        """Return ``{valid, errors, warnings}`` as ``POST /api/v1/agents/validate`` answers."""
        return {
            "valid": self.valid,
            "errors": [p.as_dict() for p in self.errors],
            "warnings": [p.as_dict() for p in self.warnings],
        }

    def spec_or_raise(self) -> AnyAgentSpec:
        """Return the spec.

        Raises:
            AgentSpecError: carrying every error, when the file is invalid.
        """
        if self.spec is None:
            raise AgentSpecError(self.source, self.errors)
        return self.spec


def check_spec_size(size: int, *, source: str) -> None:
    """Refuse an agent file of ``size`` bytes before reading it.

    Raises:
        AgentSpecError: when ``size`` exceeds :data:`~caxton.agents.validate.MAX_SPEC_BYTES`.
    """
    problem = size_problem(size, source=source)
    if problem is not None:
        raise AgentSpecError(source, [problem])


def parse_agent_spec(
    data: str | bytes, *, source: str, require_module: bool = True
) -> AnyAgentSpec:
    """Parse and validate one agent file.

    Args:
        data: the file content; bytes are decoded as UTF-8.
        source: the file name (or ``"<api>"``) used in messages.
        require_module: whether a WASM manifest must name its module (``False`` for API
            deploys that carry the module bytes).

    Returns:
        An :class:`AgentSpec`, or a :class:`WasmAgentSpec` when the file has a ``[wasm]`` table.

    Raises:
        AgentSpecError: carrying every problem of the file.
    """
    return check_agent_file(data, source=source, require_module=require_module).spec_or_raise()


def check_agent_file(data: str | bytes, *, source: str, require_module: bool = True) -> SpecReport:
    """Validate one agent file and return every error and warning, without raising.

    Args:
        data: the file content; bytes are decoded as UTF-8.
        source: the file name (or ``"<api>"``) used in messages.
        require_module: whether a WASM manifest must name its module.
    """
    raw, text, problem = _read(data, source=source)
    if problem is not None or text is None:
        return SpecReport.failed(source, [problem] if problem else [])
    document, problem = parse_toml(text, source=source)
    if problem is not None or document is None:
        return SpecReport.failed(source, [problem] if problem else [])
    content_hash = hashlib.blake2b(raw, digest_size=16).hexdigest()
    if "wasm" in document:
        return _check_wasm(document, text, source, content_hash, require_module=require_module)
    return _check_config(document, text, source, content_hash)


def spec_as_dict(spec: AnyAgentSpec) -> dict[str, Any]:
    """Return the spec as plain JSON-ready data (tuples become lists), with its ``type``."""
    data: dict[str, Any] = _CONVERTER.unstructure(spec)
    data.pop("warnings", None)
    return {"type": spec.kind, **data}


_CONVERTER: Final = cattrs.Converter()


def _read(data: str | bytes, *, source: str) -> tuple[bytes, str | None, SpecProblem | None]:
    """Size-check and decode ``data``; the size is checked before anything else is done."""
    if isinstance(data, str):
        # A str of n characters is at least n UTF-8 bytes: refuse huge text before encoding it.
        if len(data) > MAX_SPEC_BYTES:
            return b"", None, size_problem(len(data), source=source)
        raw = data.encode("utf-8", errors="surrogatepass")
    else:
        raw = data
    problem = size_problem(len(raw), source=source)
    if problem is not None:
        return raw, None, problem
    text, problem = decode_text(raw, source=source)
    return raw, text, problem


def _report(
    checker: SpecChecker,
    source: str,
    build: Callable[[tuple[SpecProblem, ...]], AnyAgentSpec],
) -> SpecReport:
    """Finish a check: sort findings and build the spec only when there is no error."""
    errors = tuple(sort_problems(checker.all_errors()))
    warnings = tuple(sort_problems(checker.all_warnings()))
    spec = None if errors else build(warnings)
    return SpecReport(source=source, spec=spec, errors=errors, warnings=warnings)


def _check_config(
    document: Mapping[str, Any], text: str, source: str, content_hash: str
) -> SpecReport:
    checker = SpecChecker(
        source=source,
        text=text,
        docs=CONFIG_AGENT_KEYS,
        other_docs=WASM_AGENT_KEYS,
        other_kind="WASM agent manifests (files with a [wasm] table)",
    )
    cleaned = checker.check_document(document)
    _check_identity(checker, cleaned)
    tools: tuple[str, ...] = cleaned.get("tools", ())
    checker.check_tools(tools)
    checker.check_tool_config(cleaned.get("tool_config", {}), tools)
    parameters = cleaned.get("parameters", {})
    template = cleaned.get("user_prompt_template")
    if isinstance(template, str):
        checker.check_template(template, parameters)
    if "llm" in cleaned:
        checker.check_llm(cleaned["llm"], ("llm",))
    checker.check_deployment(cleaned.get("deployment", {}))
    check_mcp_servers(checker, cleaned.get("mcp_servers", ()))

    def build(warnings: tuple[SpecProblem, ...]) -> AgentSpec:
        return _build_config(cleaned, source, content_hash, warnings)

    return _report(checker, source, build)


def _check_wasm(
    document: Mapping[str, Any],
    text: str,
    source: str,
    content_hash: str,
    *,
    require_module: bool,
) -> SpecReport:
    checker = SpecChecker(
        source=source,
        text=text,
        docs=WASM_AGENT_KEYS,
        other_docs=CONFIG_AGENT_KEYS,
        other_kind="config agents (files without a [wasm] table)",
    )
    cleaned = checker.check_document(document)
    _check_identity(checker, cleaned)
    wasm = cleaned.get("wasm", {})
    module = wasm.get("module")
    if module is None and require_module and isinstance(document.get("wasm"), dict):
        checker.error(
            ("wasm", "module"),
            "missing key wasm.module: the manifest does not say which module to run",
            'add module = "<file>.wasm" (a path relative to this file) under [wasm]',
        )
    elif isinstance(module, str) and not module.endswith(_WASM_SUFFIXES):
        checker.error(
            ("wasm", "module"),
            f"wasm.module must name a .wasm or .wat file, got {module!r}",
            'e.g. module = "echo.wasm"',
        )
    if cleaned.get("limits", {}).get("max_execution_time") == 0:
        checker.error(
            ("limits", "max_execution_time"),
            "limits.max_execution_time must be more than 0s: no call could run",
            'e.g. max_execution_time = "30s"',
        )
    checker.check_deployment(cleaned.get("deployment", {}))

    def build(warnings: tuple[SpecProblem, ...]) -> WasmAgentSpec:
        return _build_wasm(cleaned, source, content_hash, warnings)

    return _report(checker, source, build)


def _check_identity(checker: SpecChecker, cleaned: Mapping[str, Any]) -> None:
    checker.check_name(cleaned.get("name"))
    checker.check_version(cleaned.get("version"))
    checker.check_capabilities(cleaned.get("capabilities", ()))


class _Defaults:
    """Reads cleaned values, falling back to the documented default of each key."""

    def __init__(self, docs: tuple[KeyDoc, ...]) -> None:
        self._docs = {doc.path: doc for doc in docs}

    def get(self, table: Mapping[str, Any], path: str) -> Any:
        """Return ``table[<last part of path>]`` or the documented default of ``path``."""
        doc = self._docs[path]
        if doc.name in table:
            return table[doc.name]
        if doc.kind is Kind.DURATION and doc.default is not None:
            return parse_duration(doc.default)
        if doc.kind is Kind.SIZE and doc.default is not None:
            return parse_size(doc.default)
        if doc.kind is Kind.STRING_LIST and doc.default is not None:
            return ()
        return doc.default


_CONFIG_DEFAULTS: Final = _Defaults(CONFIG_AGENT_KEYS)
_WASM_DEFAULTS: Final = _Defaults(WASM_AGENT_KEYS)


def _build_config(
    cleaned: Mapping[str, Any],
    source: str,
    content_hash: str,
    warnings: tuple[SpecProblem, ...],
) -> AgentSpec:
    get = _CONFIG_DEFAULTS.get
    memory = cleaned.get("memory", {})
    search = memory.get("search", {})
    performance = cleaned.get("performance", {})
    overrides = performance.get("llm_config", {})
    conversation = cleaned.get("conversation", {})
    return AgentSpec(
        name=cleaned["name"],
        version=get(cleaned, "version"),
        description=get(cleaned, "description"),
        capabilities=get(cleaned, "capabilities"),
        documentation=get(cleaned, "documentation"),
        tools=get(cleaned, "tools"),
        system_prompt=get(cleaned, "system_prompt"),
        user_prompt_template=get(cleaned, "user_prompt_template"),
        llm=_build_llm(cleaned.get("llm", {})),
        memory=MemorySpec(
            enabled=memory.get("enabled", "memory" in cleaned),
            scope=get(memory, "memory.scope"),
            auto_store=get(memory, "memory.auto_store"),
            search=MemorySearchSpec(
                similarity_threshold=get(search, "memory.search.similarity_threshold"),
                max_results=get(search, "memory.search.max_results"),
                cache_ttl_s=get(search, "memory.search.cache_ttl"),
            ),
        ),
        performance=PerformanceSpec(
            max_concurrent_requests=get(performance, "performance.max_concurrent_requests"),
            request_timeout_s=get(performance, "performance.request_timeout"),
            llm_config=LlmOverrides(
                max_tokens=overrides.get("max_tokens"),
                temperature=overrides.get("temperature"),
            ),
            max_tokens_per_day=performance.get("max_tokens_per_day"),
            max_cost_per_day=performance.get("max_cost_per_day"),
        ),
        tool_config={
            tool: ToolSettings(
                timeout_s=settings.get("timeout"),
                max_connections=settings.get("max_connections"),
                allowed_hosts=settings.get("allowed_hosts"),
            )
            for tool, settings in cleaned.get("tool_config", {}).items()
        },
        conversation=ConversationSpec(
            max_turns=get(conversation, "conversation.max_turns"),
            timeout_s=get(conversation, "conversation.timeout"),
        ),
        parameters=cleaned.get("parameters", {}),
        deployment=_build_deployment(cleaned.get("deployment", {})),
        source=source,
        content_hash=content_hash,
        warnings=warnings,
        mcp_servers=build_mcp_servers(cleaned.get("mcp_servers", ())),
    )


def _build_llm(llm: Mapping[str, Any]) -> LlmSpec:
    return LlmSpec(
        provider=llm.get("provider"),
        model=llm.get("model"),
        base_url=llm.get("base_url"),
        api_key=llm.get("api_key"),
        temperature=llm.get("temperature"),
        max_tokens=llm.get("max_tokens"),
        top_p=llm.get("top_p"),
        timeout_s=llm.get("timeout"),
        max_retries=llm.get("max_retries"),
        fallback=tuple(_build_llm(item) for item in llm.get("fallback", ())),
    )


def _build_deployment(deployment: Mapping[str, Any]) -> DeploymentSpec:
    get = _CONFIG_DEFAULTS.get
    return DeploymentSpec(
        strategy=get(deployment, "deployment.strategy"),
        canary_percentage=float(get(deployment, "deployment.canary_percentage")),
    )


def _build_wasm(
    cleaned: Mapping[str, Any],
    source: str,
    content_hash: str,
    warnings: tuple[SpecProblem, ...],
) -> WasmAgentSpec:
    get = _WASM_DEFAULTS.get
    limits = cleaned.get("limits", {})
    return WasmAgentSpec(
        name=cleaned["name"],
        version=get(cleaned, "version"),
        description=get(cleaned, "description"),
        capabilities=get(cleaned, "capabilities"),
        documentation=get(cleaned, "documentation"),
        module=cleaned.get("wasm", {}).get("module"),
        limits=WasmLimits(
            max_memory_bytes=get(limits, "limits.max_memory_bytes"),
            max_fuel=get(limits, "limits.max_fuel"),
            max_execution_time_s=get(limits, "limits.max_execution_time"),
            max_message_size=get(limits, "limits.max_message_size"),
        ),
        deployment=_build_deployment(cleaned.get("deployment", {})),
        source=source,
        content_hash=content_hash,
        warnings=warnings,
    )
