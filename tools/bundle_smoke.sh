#!/usr/bin/env bash
# Smoke test of the single-file binary (`make bundle` builds it): start it on a throwaway
# data_dir and config, talk to the echo WASM agent, store and search a memory entity with the
# bundled embedding model, fetch the console's page and scripts from /ui, run `caxton health`
# with the binary itself, stop it with SIGTERM (must exit 0), and print the binary's size and
# its cold start (process start -> /ready 200).
#
# Usage: tools/bundle_smoke.sh [BINARY]      (default: dist/caxton)
# Needs curl and python3 (for reading JSON) on PATH; the binary needs nothing else. When it may
# (root with unshare and ip), the whole test runs in a private network namespace that has only
# loopback, which proves the binary downloads nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/dist/caxton}")
READY_TIMEOUT="${READY_TIMEOUT:-90}"

if [[ -z "${SMOKE_NETWORK:-}" ]]; then
    if unshare -n true 2>/dev/null && command -v ip >/dev/null 2>&1; then
        # shellcheck disable=SC2016  # $0 and $@ belong to the inner shell
        exec env SMOKE_NETWORK="loopback only (private network namespace)" \
            unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$BIN"
    fi
    SMOKE_NETWORK="host network (unshare -n is not available)"
fi

fail() {
    echo "bundle smoke: FAIL: $*" >&2
    if [[ -n "${LOG:-}" && -f "$LOG" ]]; then
        echo "--- last server log lines ---" >&2
        tail -n 30 "$LOG" >&2
    fi
    exit 1
}

[[ -x "$BIN" ]] || fail "$BIN is not an executable file; build it with: make bundle"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/caxton-smoke.XXXXXX")
LOG="$WORK/server.log"
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        # The one-file binary's bootloader runs the server as its child and passes SIGTERM on;
        # a SIGKILL of the bootloader alone would leave that child running after a failure.
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        pkill -KILL -P "$PID" 2>/dev/null || true
        kill -KILL "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# json EXPR: evaluate a Python expression over the JSON document on stdin (bound to `d`).
json() {
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

mkdir -p "$WORK/agents" "$WORK/data"
cp "$ROOT/agents/echo.toml" "$ROOT/agents/echo.wat" "$WORK/agents/"
# Port 0: the kernel picks free ports; the server logs the bound addresses in its ready line.
cat >"$WORK/caxton.yaml" <<EOF
server:
  host: "127.0.0.1"
  port: 0
  data_dir: "$WORK/data"
  agents_dir: "$WORK/agents"
  shutdown_timeout: "10s"
logging:
  level: "info"
  format: "json"
observability:
  metrics_enabled: true
  metrics_port: 0
EOF

"$BIN" validate --config "$WORK/caxton.yaml" >/dev/null || fail "caxton validate rejected the config"

# The binary runs without the venv: no PATH to it, no PYTHON* or HF_* variables, no network use.
started=$(date +%s.%N)
env -i HOME="$WORK" PATH=/usr/bin:/bin "$BIN" start --config "$WORK/caxton.yaml" 2>"$LOG" &
PID=$!

API=""
deadline=$(($(date +%s) + READY_TIMEOUT))
while [[ -z "$API" ]]; do
    kill -0 "$PID" 2>/dev/null || fail "the server exited before it was ready"
    (($(date +%s) < deadline)) || fail "no ready line within ${READY_TIMEOUT}s"
    API=$(python3 - "$LOG" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    if "ready on" in str(record.get("message")):
        print(record["api"][0])
        break
PY
)
    [[ -n "$API" ]] || sleep 0.05
done
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$API/ready")" == 200 ]]; do
    (($(date +%s) < deadline)) || fail "$API/ready did not answer 200 within ${READY_TIMEOUT}s"
    sleep 0.05
done
ready=$(date +%s.%N)
cold_start=$(python3 -c "print(f'{$ready - $started:.2f}')")

# The model must come from inside the bundle (the binary does not carry the two pip packages
# it is assembled from in a venv): nothing assembled under data_dir.
[[ ! -e "$WORK/data/models" ]] || fail "the binary assembled a model under data_dir/models"

reply=$(curl -sf -X POST -H 'Content-Type: application/json' \
    -d '{"content": "hello from the bundle"}' "$API/api/v1/agents/echo/messages") ||
    fail "POST /api/v1/agents/echo/messages failed"
[[ "$(json 'd["content"]' <<<"$reply")" == *"hello from the bundle"* ]] ||
    fail "the echo agent replied $reply"
[[ "$(json 'd["sender"]' <<<"$reply")" == echo ]] || fail "the reply is not from echo: $reply"

status=$(curl -s -o "$WORK/entity.json" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' \
    -d '{"name": "Whiskers", "entity_type": "pet", "observations": ["a small cat that sleeps on the mat"]}' \
    "$API/api/v1/memory/entities")
[[ "$status" == 201 ]] || fail "POST /api/v1/memory/entities answered $status: $(cat "$WORK/entity.json")"
curl -s -X POST -H 'Content-Type: application/json' \
    -d '{"name": "NASDAQ", "entity_type": "market", "observations": ["stock prices fell sharply"]}' \
    "$API/api/v1/memory/entities" >/dev/null
found=$(curl -sf "$API/api/v1/memory/search?q=a%20kitten%20on%20a%20rug&limit=2") ||
    fail "GET /api/v1/memory/search failed"
[[ "$(json 'd["results"][0]["name"]' <<<"$found")" == Whiskers ]] ||
    fail "searching for a kitten did not find the cat first: $found"
similarity=$(json 'round(d["results"][0]["similarity"], 3)' <<<"$found")
# The binary carries OpenVINO's CPU plugin and ONNX reader (caxton.spec): the model runs on it,
# not on the onnxruntime fallback.
stats=$(curl -sf "$API/api/v1/memory/stats") || fail "GET /api/v1/memory/stats failed"
runtime=$(json 'd["embedder"]["runtime"]' <<<"$stats")
[[ "$runtime" == openvino* ]] ||
    fail "the embedding model runs on '$runtime', not OpenVINO: the bundle lacks its libraries"

# The console (issue #20) is served from files inside the binary, under its security policy.
ui_headers=$(curl -sf -D - -o "$WORK/ui.html" "$API/ui") || fail "GET /ui failed"
grep -qi "^content-security-policy: default-src 'self'" <<<"$ui_headers" ||
    fail "GET /ui came without its Content-Security-Policy: $ui_headers"
# the page names its files under the release prefix of the files inside the binary
prefix=$(grep -o '/ui/v/[0-9a-f]*/js/main.js' "$WORK/ui.html" | head -n 1)
[[ -n "$prefix" ]] || fail "GET /ui is not the console page"
prefix=${prefix%js/main.js}
for asset in js/main.js js/api.js js/pages/agents.js js/pages/health.js console.css; do
    status=$(curl -s -o /dev/null -w '%{http_code}' "$API$prefix$asset")
    [[ "$status" == 200 ]] || fail "GET $prefix$asset answered $status: the bundle lacks the console's files"
done
curl -sf -D - -o /dev/null "$API${prefix}js/main.js" | grep -qi '^cache-control: .*immutable' ||
    fail "GET ${prefix}js/main.js is not cached for good"

health=$("$BIN" --url "$API" health) || fail "caxton health exited $? ($health)"

kill -TERM "$PID"
code=0
wait "$PID" || code=$?
PID=""
((code == 0)) || fail "the server exited $code after SIGTERM"

size=$(stat -c %s "$BIN")
echo "bundle smoke: ok: echo agent replied, memory search found Whiskers (similarity $similarity," \
    "model on $runtime)," \
    "console served at /ui, $health, SIGTERM exit 0"
echo "bundle smoke: binary $BIN: $((size / 1048576)) MiB ($size bytes); cold start to /ready: ${cold_start} s"
echo "bundle smoke: network: $SMOKE_NETWORK"
