#!/bin/sh
# Install the toolchain that builds the C example agents (agents/src/*.c) to WebAssembly:
# clang and the wasm-ld linker from lld, Debian packages only. No libc is needed: the examples
# are freestanding caxton-v1 modules.
#
# Idempotent: when clang can already link a wasm32 module, nothing is installed. Runs unattended
# (no prompts, no stdin) as root, or through passwordless sudo otherwise.
#
# Environment: CLANG (default: clang) names the compiler to check; APT_PACKAGES (default:
# "clang lld") the packages to install.
set -eu
# shellcheck source-path=SCRIPTDIR source=../lib/apt.sh
. "$(dirname "$0")/../lib/apt.sh"

CLANG="${CLANG:-clang}"
APT_PACKAGES="${APT_PACKAGES:-clang lld}"

# True when $CLANG compiles and links a trivial freestanding wasm32 module.
can_build_wasm() {
    command -v "$CLANG" >/dev/null 2>&1 || return 1
    dir=$(mktemp -d)
    printf 'int probe(void) { return 0; }\n' >"$dir/probe.c"
    if "$CLANG" --target=wasm32 -nostdlib -Wl,--no-entry -Wl,--export=probe \
        -o "$dir/probe.wasm" "$dir/probe.c" >/dev/null 2>&1; then
        ok=0
    else
        ok=1
    fi
    rm -rf "$dir"
    return "$ok"
}

if can_build_wasm; then
    echo "wasm toolchain: $("$CLANG" --version | head -n 1), $(command -v wasm-ld || echo 'wasm-ld') (already installed)"
    exit 0
fi

# shellcheck disable=SC2086  # the package list is meant to split into words
apt_install "wasm toolchain" $APT_PACKAGES

if ! can_build_wasm; then
    echo "wasm toolchain: $APT_PACKAGES installed, but $CLANG still cannot link a wasm32 module" >&2
    exit 1
fi
echo "wasm toolchain: $("$CLANG" --version | head -n 1) ready"
