"""Errors a WebAssembly agent can cause, at deploy time and per message.

Status codes: a guest that breaks one of its limits answers ``422`` (``WASM_LIMIT_EXCEEDED``):
the outcome is deterministic for this message and these limits, retrying does not help, and the
fix lies with the request or the agent's ``[limits]`` rather than with the server, which stays
healthy (DESIGN §4.2: limits "affect no other agent or the server"); an oversized incoming
message is squarely the client's doing. A trap or a non-zero status is the agent's own defect,
so it maps to ``500`` like an uncaught exception in any application code would. A module that
cannot be deployed is a validation failure, ``422``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from caxton.errors import CaxtonError

if TYPE_CHECKING:
    from collections.abc import Sequence

LimitName = Literal["fuel", "time", "memory", "message_size"]

_LIMIT_KEYS: dict[LimitName, str] = {
    "fuel": "max_fuel",
    "time": "max_execution_time",
    "memory": "max_memory_bytes",
    "message_size": "max_message_size",
}


class WasmError(CaxtonError):
    """Root of the errors raised by the WebAssembly runtime."""

    code = "WASM_ERROR"


class WasmLimitExceeded(WasmError):
    """A guest call (or its input or output) went past one of the agent's ``[limits]``.

    Args:
        agent: the agent name, for the message.
        limit: which limit: ``fuel``, ``time``, ``memory`` or ``message_size``.
        value: the configured value of that limit.
        observed: what was measured, when known (bytes of a message, seconds elapsed).
        what: a short phrase saying what happened, e.g. "the reply is too large".
    """

    code = "WASM_LIMIT_EXCEEDED"
    http_status = 422

    def __init__(
        self,
        *,
        agent: str,
        limit: LimitName,
        value: int | float,
        observed: int | float | None = None,
        what: str,
    ) -> None:
        self.agent = agent
        self.limit: LimitName = limit
        self.value = value
        self.observed = observed
        key = _LIMIT_KEYS[limit]
        seen = "" if observed is None else f" (got {observed})"
        super().__init__(
            f"WASM agent {agent!r}: {what}{seen}; the limit is [limits].{key} = {value}. "
            f"Raise [limits].{key} in the agent manifest or make the agent do less per message.",
            details={
                "agent": agent,
                "limit": limit,
                "key": key,
                "value": value,
                "observed": observed,
            },
        )


class WasmTrap(WasmError):
    """The guest trapped (``unreachable``, stack overflow, out-of-bounds access, ...).

    Args:
        agent: the agent name.
        trap: the trap code in snake case (``unreachable``, ``stack_overflow``, ``bad_pointer``,
            ``memory_out_of_bounds``, ...).
        detail: the first line of the engine's description, or the host's.
    """

    code = "WASM_TRAP"
    http_status = 500

    def __init__(self, *, agent: str, trap: str, detail: str = "") -> None:
        self.agent = agent
        self.trap = trap
        suffix = f": {detail}" if detail else ""
        super().__init__(
            f"WASM agent {agent!r} trapped ({trap}){suffix}. The agent instance was discarded "
            "and is re-created for the next message; fix the agent code.",
            details={"agent": agent, "trap": trap, "detail": detail},
        )


class WasmAgentFailed(WasmError):
    """The guest ran to completion but reported failure.

    For ``caxton-v1`` that is a non-zero ``handle_message`` or ``agent_init`` status, for
    ``wasi-stdio`` a non-zero exit code.
    """

    code = "WASM_AGENT_FAILED"
    http_status = 500

    def __init__(self, *, agent: str, function: str, status: int) -> None:
        self.agent = agent
        self.function = function
        self.status = status
        super().__init__(
            f"WASM agent {agent!r}: {function} returned status {status} (0 means success).",
            details={"agent": agent, "function": function, "status": status},
        )


class WasmBadModule(WasmError):
    """A module cannot be deployed; ``problems`` lists every finding, one per line.

    Args:
        source: where the module came from (a file name, or "<module>").
        problems: one sentence per problem, each saying what to change.
        line: for WAT syntax errors, the 1-based line of the error.
        column: for WAT syntax errors, the 1-based column.
    """

    code = "WASM_BAD_MODULE"
    http_status = 422

    def __init__(
        self,
        source: str,
        problems: Sequence[str],
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source = source
        self.problems = list(problems)
        self.line = line
        self.column = column
        where = source if line is None else f"{source}:{line}:{column}"
        count = len(self.problems)
        head = f"{where}: {count} problem{'s' if count != 1 else ''} with the WASM module"
        super().__init__(
            "\n".join([head, *(f"  - {p}" for p in self.problems)]),
            details={
                "source": source,
                "problems": list(self.problems),
                "line": line,
                "column": column,
            },
        )
