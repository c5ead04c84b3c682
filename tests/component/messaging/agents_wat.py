"""Small WAT agents for the messaging tests, deployed through the API."""

from __future__ import annotations

import base64
import json
from typing import Any


def const_wat(text: str, *, delay_ms: int = 0) -> str:
    """An agent that waits ``delay_ms`` (busy, on the wall clock), then replies ``text``."""
    return f"""
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (import "caxton" "now_ms" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) {json.dumps(text)})
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param $p i32) (param $n i32) (result i32)
    (local $until i64)
    (local.set $until (i64.add (call $now) (i64.const {delay_ms})))
    (block $out (loop $wait
      (br_if $out (i64.ge_s (call $now) (local.get $until)))
      (br $wait)))
    (call $reply (i32.const 0) (i32.const {len(text.encode())}))
    (i32.const 0)))
"""


def deploy_body(
    name: str,
    wat: str,
    *,
    capabilities: tuple[str, ...] = (),
    version: str = "1.0.0",
    extra: str = "",
) -> dict[str, Any]:
    manifest = (
        f'name = "{name}"\nversion = "{version}"\ncapabilities = {json.dumps(list(capabilities))}\n'
        f"{extra}[wasm]\n"
    )
    return {"manifest": manifest, "wasm_module": base64.b64encode(wat.encode()).decode()}
