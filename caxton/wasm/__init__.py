"""WebAssembly agents: the pool component, the two guest ABIs, limits and errors (DESIGN §4.2).

Typical use, inside the server's nursery tree::

    async with open_wasm_pool() as pool:
        agent = await pool.load(wat_or_wasm, WasmLimits(), name="echo")
        send, receive = trio.open_memory_channel[bytes](math.inf)  # drained by another task
        with send:
            reply = await agent.handle(message_json, stream=send)
"""

from caxton.wasm.abi import CAXTON_V1, WASI_STDIO, Abi
from caxton.wasm.agent import AgentModuleStatistics, LoadedAgentModule, WasmReply
from caxton.wasm.errors import (
    WasmAgentFailed,
    WasmBadModule,
    WasmError,
    WasmLimitExceeded,
    WasmTrap,
)
from caxton.wasm.host import ChunkSink, GuestHooks, LogHook, SendMessageHook
from caxton.wasm.limits import WasmLimits
from caxton.wasm.pool import WasmPool, WasmPoolStatistics, open_wasm_pool

__all__ = [
    "CAXTON_V1",
    "WASI_STDIO",
    "Abi",
    "AgentModuleStatistics",
    "ChunkSink",
    "GuestHooks",
    "LoadedAgentModule",
    "LogHook",
    "SendMessageHook",
    "WasmAgentFailed",
    "WasmBadModule",
    "WasmError",
    "WasmLimitExceeded",
    "WasmLimits",
    "WasmPool",
    "WasmPoolStatistics",
    "WasmReply",
    "WasmTrap",
    "open_wasm_pool",
]
