"""Per-agent resource limits of a WebAssembly guest (the manifest's ``[limits]`` table)."""

from __future__ import annotations

import attrs

MIB = 1024 * 1024


@attrs.frozen(kw_only=True)
class WasmLimits:
    """Limits applied to every guest call of one agent version.

    Attributes:
        max_memory_bytes: linear memory cap; ``memory.grow`` past it returns -1 in the guest.
        max_fuel: wasmtime fuel granted to each call (and to ``agent_init``).
        max_execution_time_s: wall-clock budget of each call, enforced by epoch interruption.
        max_message_size: cap in bytes on the incoming message and on the whole reply.
    """

    max_memory_bytes: int = attrs.field(default=10 * MIB, validator=attrs.validators.gt(0))
    max_fuel: int = attrs.field(default=500_000_000, validator=attrs.validators.gt(0))
    max_execution_time_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    max_message_size: int = attrs.field(default=100_000, validator=attrs.validators.gt(0))
