#!/bin/sh
# Build the C example agents: agents/src/<name>.c -> agents/<name>.wasm (caxton-v1 modules).
#
# Usage: tools/wasm/build-examples.sh [agents/src/<name>.c ...]   (default: every agents/src/*.c)
#
# The modules are freestanding: no libc, only the `caxton` host imports. Each one is written to a
# temporary file and renamed into place, so the agents-directory watcher never sees half a module.
# Install the toolchain first with tools/wasm/install-toolchain.sh.
#
# Environment: CLANG (default: clang); CFLAGS adds compiler flags.
set -eu

ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/../.." && pwd)
CLANG="${CLANG:-clang}"
EXTRA_CFLAGS="${CFLAGS:-}"

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "build-examples: $CLANG not found; run tools/wasm/install-toolchain.sh first" >&2
    exit 1
fi

if [ "$#" -eq 0 ]; then
    set -- "$ROOT"/agents/src/*.c
    if [ ! -e "$1" ]; then
        echo "build-examples: no sources in $ROOT/agents/src" >&2
        exit 1
    fi
fi

for source in "$@"; do
    name=$(basename -- "$source" .c)
    output="$ROOT/agents/$name.wasm"
    tmp="$output.tmp.$$"
    # -nostdlib: no libc is linked. -ffreestanding: clang does not turn loops into memset/memcpy
    #   calls (a call it still emits would fail at link time, not at load time).
    # --no-entry: a library-style module (caxton-v1 has no _start); the exports are named in the
    #   source with __attribute__((export_name)), the imports with import_module/import_name.
    # --stack-first: the stack sits below the static data, so an overflow traps instead of
    #   silently overwriting the agent's state.
    # shellcheck disable=SC2086  # EXTRA_CFLAGS is a list of flags
    if ! "$CLANG" --target=wasm32 -O2 -std=c11 -Wall -Wextra -ffreestanding -nostdlib \
        -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
        $EXTRA_CFLAGS -o "$tmp" "$source"; then
        rm -f "$tmp"
        echo "build-examples: failed to build $source" >&2
        exit 1
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$output"
    echo "build-examples: $source -> $output ($(wc -c <"$output") bytes)"
done
