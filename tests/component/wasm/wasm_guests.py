"""Small WAT guests for the WASM runtime tests (each one exercises one behaviour)."""

from __future__ import annotations

import math
from pathlib import Path

import trio

AGENTS = Path(__file__).resolve().parents[3] / "agents"

# A caxton-v1 prelude: the reply import, one page of memory, and an allocator that always hands
# out offset 1024 (the host writes one message and calls handle_message right away).
V1_PRELUDE = """
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param $len i32) (result i32)
    (local $needed i32)
    (local.set $needed
      (i32.shr_u (i32.add (i32.add (i32.const 1024) (local.get $len)) (i32.const 65535))
                 (i32.const 16)))
    (if (i32.gt_u (local.get $needed) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $needed) (memory.size))))))
    (i32.const 1024))
"""


def chunk_stream() -> tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]:
    """A stream for a call's reply chunks, as a caller opens one (unbounded: the guest never
    waits for its reader)."""
    return trio.open_memory_channel[bytes](math.inf)


def taken(receive: trio.MemoryReceiveChannel[bytes]) -> list[bytes]:
    """The chunks waiting in a stream, taken now."""
    chunks: list[bytes] = []
    while True:
        try:
            chunks.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return chunks


def v1_module(body: str, *, imports: str = "") -> str:
    """Return WAT for a caxton-v1 module: extra ``imports``, the prelude, then ``body``."""
    return f"(module\n{imports}\n{V1_PRELUDE}\n{body}\n)"


# Spins forever: only fuel, the wall clock or a cancellation ends it.
SPIN = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32)
         (loop $forever (br $forever))
         (i32.const 0))"""
)

# Replies "started" (so the test knows the guest runs), then spins forever.
SPIN_AFTER_REPLY = v1_module(
    """(data (i32.const 0) "started")
       (func (export "handle_message") (param i32 i32) (result i32)
         (call $reply (i32.const 0) (i32.const 7))
         (loop $forever (br $forever))
         (i32.const 0))"""
)

# Grows memory one page at a time until memory.grow fails, then replies the page count (4 bytes,
# little endian). memory.grow returning -1 is what the guest sees at max_memory_bytes.
GROW_UNTIL_REFUSED = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32)
         (block $refused
           (loop $grow
             (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
             (br $grow)))
         (i32.store (i32.const 0) (memory.size))
         (call $reply (i32.const 0) (i32.const 4))
         (i32.const 0))"""
)

# Ignores memory.grow failing and writes past the end of memory anyway.
GROW_AND_OVERRUN = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32)
         (loop $grow
           (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
         (i32.store (i32.mul (memory.size) (i32.const 65536)) (i32.const 1))
         (i32.const 0))"""
)

# Recurses without end.
RECURSE = v1_module(
    """(func $down (param $n i32) (result i32)
         (call $down (i32.add (local.get $n) (i32.const 1))))
       (func (export "handle_message") (param i32 i32) (result i32)
         (call $down (i32.const 0)))"""
)

UNREACHABLE = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32)
         unreachable)"""
)

# Replies the message over and over, forever: only the reply size limit (or fuel) stops it.
FLOOD = v1_module(
    """(func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
         (loop $again
           (call $reply (local.get $ptr) (local.get $len))
           (br $again))
         (i32.const 0))"""
)

# Replies the message three times (three chunks), then returns.
TRIPLE = v1_module(
    """(func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
         (call $reply (local.get $ptr) (local.get $len))
         (call $reply (local.get $ptr) (local.get $len))
         (call $reply (local.get $ptr) (local.get $len))
         (i32.const 0))"""
)

# Replies "0", "1", ... "4" as five chunks, burning some CPU between them (~10 ms each).
CHUNKS = v1_module(
    """(func $busy (local $i i32)
         (local.set $i (i32.const 20000000))
         (loop $l
           (local.set $i (i32.sub (local.get $i) (i32.const 1)))
           (br_if $l (i32.ne (local.get $i) (i32.const 0)))))
       (func (export "handle_message") (param i32 i32) (result i32)
         (local $n i32)
         (loop $each
           (i32.store8 (local.get $n) (i32.add (i32.const 48) (local.get $n)))
           (call $reply (local.get $n) (i32.const 1))
           (call $busy)
           (local.set $n (i32.add (local.get $n) (i32.const 1)))
           (br_if $each (i32.lt_u (local.get $n) (i32.const 5))))
         (i32.const 0))"""
)

# A counter in guest memory; a message starting with "!" increments it and then traps.
COUNTER_THAT_TRAPS = v1_module(
    """(func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
         (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
         (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33))
           (then unreachable))
         (call $reply (i32.const 0) (i32.const 4))
         (i32.const 0))"""
)

# Forwards the message through caxton.send_message and replies the status (4 bytes, LE).
SENDER = v1_module(
    """(func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
         (i32.store (i32.const 0) (call $send (local.get $ptr) (local.get $len)))
         (call $reply (i32.const 0) (i32.const 4))
         (i32.const 0))""",
    imports='(import "caxton" "send_message" (func $send (param i32 i32) (result i32)))',
)

# Logs the message at level 2 and replies now_ms() (8 bytes, LE).
LOGGER_CLOCK = v1_module(
    """(func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
         (call $log (i32.const 2) (local.get $ptr) (local.get $len))
         (i64.store (i32.const 0) (call $now))
         (call $reply (i32.const 0) (i32.const 8))
         (i32.const 0))""",
    imports="""(import "caxton" "log" (func $log (param i32 i32 i32)))
               (import "caxton" "now_ms" (func $now (result i64)))""",
)

# agent_init returns 7: the module must not load.
INIT_FAILS = v1_module(
    """(func (export "agent_init") (result i32) (i32.const 7))
       (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))"""
)

# Returns status 3 from handle_message.
STATUS_3 = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32) (i32.const 3))"""
)

# Replies the pointer caxton_alloc handed out... but its allocator points past the memory.
BAD_ALLOC = """(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 70000))
  (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0)))"""

# Replies from a range outside its memory.
BAD_REPLY_POINTER = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32)
         (call $reply (i32.const 65530) (i32.const 100))
         (i32.const 0))"""
)

# caxton-v1 modules that must be refused at load.
IMPORTS_WASI = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))""",
    imports="""(import "wasi_snapshot_preview1" "fd_write"
                 (func (param i32 i32 i32 i32) (result i32)))""",
)
IMPORTS_UNKNOWN_HOST_FUNCTION = v1_module(
    """(func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))""",
    imports='(import "caxton" "open_socket" (func (param i32) (result i32)))',
)
MISSING_EXPORTS = """(module
  (memory (export "memory") 1)
  (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0)))"""
NO_ABI = """(module (func (export "main")))"""
BIG_INITIAL_MEMORY = """(module
  (memory (export "memory") 200)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0)))"""

# -- wasi-stdio guests ------------------------------------------------------------------------

_WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
"""


def wasi_module(body: str) -> str:
    """Return WAT for a wasi-stdio module with the WASI imports, 2 pages of memory and ``body``.

    Memory layout: iovec at 0 (ptr, len), results at 16, scratch at 32, buffer at 1024.
    ``$write(ptr, len)`` writes to stdout.
    """
    return f"""(module
{_WASI_IMPORTS}
  (memory (export "memory") 2)
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))))
{body}
)"""


# Copies stdin to stdout, one write per read (so each read is one chunk).
WASI_CAT = wasi_module(
    """(func (export "_start")
         (loop $copy
           (i32.store (i32.const 0) (i32.const 1024))
           (i32.store (i32.const 4) (i32.const 4096))
           (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
           (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 0))
             (then
               (call $write (i32.const 1024) (i32.load (i32.const 16)))
               (br $copy)))))"""
)

# Writes four bytes: argc, environment count, errno of fd_prestat_get(3) (8 = EBADF: nothing is
# preopened), and a global run counter (always 1 in a fresh instance).
WASI_PROBE = wasi_module(
    """(global $runs (mut i32) (i32.const 0))
       (func (export "_start")
         (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
         (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
         (i32.store8 (i32.const 32) (i32.load (i32.const 16)))
         (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
         (i32.store8 (i32.const 33) (i32.load (i32.const 16)))
         (i32.store8 (i32.const 34) (call $fd_prestat_get (i32.const 3) (i32.const 16)))
         (i32.store8 (i32.const 35) (global.get $runs))
         (call $write (i32.const 32) (i32.const 4)))"""
)

WASI_EXIT_3 = wasi_module("""(func (export "_start") (call $proc_exit (i32.const 3)))""")
WASI_EXIT_0 = wasi_module(
    """(data (i32.const 64) "bye")
       (func (export "_start")
         (call $write (i32.const 64) (i32.const 3))
         (call $proc_exit (i32.const 0)))"""
)
WASI_SPIN = wasi_module("""(func (export "_start") (loop $forever (br $forever)))""")
WASI_IMPORTS_HOST = """(module
  (import "caxton" "reply" (func (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"""
WASI_UNKNOWN_FUNCTION = """(module
  (import "wasi_snapshot_preview1" "no_such_call" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"""

# A counter that spins forever when the message starts with "!".
COUNTER_THAT_SPINS = v1_module(
    """(func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
         (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
         (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33))
           (then (loop $forever (br $forever))))
         (call $reply (i32.const 0) (i32.const 4))
         (i32.const 0))"""
)

# agent_init spins forever.
INIT_SPINS = v1_module(
    """(func (export "agent_init") (result i32) (loop $forever (br $forever)) (i32.const 0))
       (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))"""
)
