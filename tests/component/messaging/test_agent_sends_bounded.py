"""What one request can make agents do: sends per call, per conversation, queues (issue #13).

Item 5: one ``handle_message`` may not send without end. Item 15: an agent that sends to
itself twice per call is bounded by more than the hop guard. Item 13: a full queue answers 503
``AGENT_BUSY`` with ``Retry-After``. Item 4: dropped guest log bytes are counted per agent.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import httpx
import trio
from agents_wat import deploy_body

from caxton.messaging.routing import SEND_CALL_LIMIT, SendLimits
from caxton.wasm.limits import (
    MAX_CONCURRENT_CALLS_PER_AGENT,
    MAX_QUEUED_CALLS_PER_AGENT,
    MAX_SENDS_PER_CALL,
)

if TYPE_CHECKING:
    from caxton.server import ServerInfo

# Writes the decimal digits of $n so that they end just before $end; returns where they start.
_DEC = """
  (func $dec (param $n i32) (param $end i32) (result i32)
    (local $p i32)
    (local.set $p (local.get $end))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (local.get $p))
"""


def sender_wat(envelope: dict[str, str], *, sends: int, only_requests: bool) -> str:
    """An agent that sends ``envelope`` ``sends`` times per message, then replies
    "<accepted> -<first refusal code>"; with ``only_requests``, other messages (the informs
    that answer its sends) do nothing."""
    text = json.dumps(envelope)
    guard = ""
    if only_requests:  # the host's envelope starts {"performative": "request", ...
        guard = """(if (i32.ne (i32.load8_u (i32.add (local.get $p) (i32.const 18)))
                          (i32.const 114))
                     (then (return (i32.const 0))))"""
    return f"""
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (import "caxton" "send_message" (func $send (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) {json.dumps(text)})
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  {_DEC}
  (func (export "handle_message") (param $p i32) (param $n i32) (result i32)
    (local $i i32) (local $ok i32) (local $first i32) (local $status i32) (local $at i32)
    {guard}
    (loop $again
      (local.set $status (call $send (i32.const 0) (i32.const {len(text.encode())})))
      (if (i32.eqz (local.get $status))
        (then (local.set $ok (i32.add (local.get $ok) (i32.const 1))))
        (else (if (i32.eqz (local.get $first)) (then (local.set $first (local.get $status))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const {sends}))))
    (local.set $at (call $dec (local.get $ok) (i32.const 600)))
    (call $reply (local.get $at) (i32.sub (i32.const 600) (local.get $at)))
    (i32.store (i32.const 700) (i32.const 0x2d20))
    (call $reply (i32.const 700) (i32.const 2))
    (local.set $at (call $dec (i32.sub (i32.const 0) (local.get $first)) (i32.const 900)))
    (call $reply (local.get $at) (i32.sub (i32.const 900) (local.get $at)))
    (i32.const 0)))
"""


def counted(server: ServerInfo, metric: str, **labels: str) -> float:
    """The value of one series of the server's metrics (0 when absent)."""
    text = server.services.metrics.exposition().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{metric}\{{(.*)\}} (\S+)$", line)
        if match and all(part in match.group(1).split(",") for part in wanted.split(",")):
            total += float(match.group(2))
    return total


async def deploy(client: httpx.AsyncClient, name: str, wat: str, extra: str = "") -> None:
    response = await client.post("/api/v1/agents", json=deploy_body(name, wat, extra=extra))
    assert response.status_code == 201, response.text


async def wait_sends_settled(server: ServerInfo) -> None:
    router = server.services.router
    quiet = 0
    while quiet < 5:
        await trio.sleep(0.05)
        quiet = quiet + 1 if router.statistics()["agent_sends_in_flight"] == 0 else 0


async def test_one_call_sends_at_most_its_share_and_the_guest_sees_the_refusal(
    server: ServerInfo,
) -> None:
    flood = sender_wat({"receiver": "echo", "content": "x"}, sends=5000, only_requests=True)
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
        with trio.fail_after(60):
            await deploy(client, "flooder", flood)
            response = await client.post("/api/v1/agents/flooder/messages", json={"content": "go"})
            assert response.status_code == 200, response.text
            await wait_sends_settled(server)
    assert response.json()["content"] == f"{MAX_SENDS_PER_CALL} {SEND_CALL_LIMIT}"
    refused = counted(
        server, "caxton_wasm_send_refused_total", agent="flooder", reason="sends_per_call"
    )
    assert refused == 5000 - MAX_SENDS_PER_CALL
    lines = [line.message for line in server.services.agent_logs.tail("flooder", 100)]
    assert sum(f"send_message refused ({SEND_CALL_LIMIT})" in m for m in lines) == 1


async def test_an_agent_that_sends_to_itself_twice_per_call_is_bounded(
    server: ServerInfo,
) -> None:
    selfish = sender_wat({"receiver": "selfish", "content": "again"}, sends=2, only_requests=False)
    limits = SendLimits()
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
        await deploy(client, "selfish", selfish)
        with trio.fail_after(60):  # without bounds: ~40,000 messages over minutes
            started = trio.current_time()
            response = await client.post("/api/v1/agents/selfish/messages", json={"content": "go"})
            assert response.status_code == 200, response.text
            await wait_sends_settled(server)
            elapsed = trio.current_time() - started
        conversation = response.json()["conversation_id"]
        shown = await client.get(
            f"/api/v1/conversations/{conversation}", params={"limit": "100000"}
        )
    messages = shown.json()["messages"]
    sent = [m for m in messages if m["sender"] == "selfish" and m["receiver"] == "selfish"]
    # every accepted send is recorded with its reply; nothing past the conversation's bound
    assert len(sent) <= 2 * limits.max_per_conversation
    assert len(messages) <= 3 * limits.max_per_conversation + 2
    refused = counted(server, "caxton_wasm_send_refused_total", agent="selfish")
    assert refused > 0
    # refusals are logged at most once a second per kind (five kinds can apply here)
    lines = server.services.agent_logs.tail("selfish", 10_000)
    logged = [line for line in lines if "refused" in line.message]
    assert 0 < len(logged) <= 5 * (int(elapsed) + 1) < refused


async def test_a_full_queue_answers_503_agent_busy_with_retry_after(server: ServerInfo) -> None:
    spin = """(module (memory (export "memory") 1)
      (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "handle_message") (param i32 i32) (result i32)
        (loop $forever (br $forever)) (i32.const 0)))"""
    limits = '[limits]\nmax_execution_time = "10s"\nmax_fuel = 1000000000000000\n'
    accepted = MAX_CONCURRENT_CALLS_PER_AGENT + MAX_QUEUED_CALLS_PER_AGENT
    calls = accepted + 14
    connections = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=server.api_urls[0], timeout=30, limits=connections
    ) as client:
        await deploy(client, "spinner", spin, extra=limits)
        statuses: list[int] = []

        async def ask() -> None:
            answer = await client.post("/api/v1/agents/spinner/messages", json={"content": "x"})
            statuses.append(answer.status_code)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(calls):
                    nursery.start_soon(ask)
                while len(statuses) < calls - accepted:  # past the queue: refused at once
                    await trio.sleep(0.01)
                busy = await client.post("/api/v1/agents/spinner/messages", json={"content": "x"})
                nursery.cancel_scope.cancel()  # the accepted calls would wait their 10 s
    assert busy.status_code == 503
    assert busy.json()["error"]["code"] == "AGENT_BUSY"
    assert busy.headers["Retry-After"] == "1"
    assert statuses.count(503) >= calls - accepted


async def test_dropped_guest_log_bytes_are_counted_per_agent(server: ServerInfo) -> None:
    chatty = """(module
      (import "caxton" "log" (func $log (param i32 i32 i32)))
      (import "caxton" "reply" (func $reply (param i32 i32)))
      (memory (export "memory") 2)
      (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "handle_message") (param $p i32) (param $n i32) (result i32)
        (local $i i32)
        (loop $again
          (call $log (i32.const 1) (i32.const 0) (i32.const 100000))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get $i) (i32.const 100))))
        (call $reply (local.get $p) (local.get $n))
        (i32.const 0)))"""
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
        with trio.fail_after(30):
            await deploy(client, "chatty", chatty)
            response = await client.post("/api/v1/agents/chatty/messages", json={"content": "x"})
    assert response.status_code == 200, response.text
    dropped = counted(server, "caxton_wasm_log_dropped_bytes_total", agent="chatty")
    assert 100 * 100_000 - 64 * 1024 <= dropped < 100 * 100_000
    lines = [line.message for line in server.services.agent_logs.tail("chatty", 1000)]
    assert sum(len(m) for m in lines) < 80 * 1024
    assert any("bytes of guest log dropped" in m for m in lines)
