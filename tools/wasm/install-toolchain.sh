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

if ! command -v apt-get >/dev/null 2>&1; then
    echo "wasm toolchain: $CLANG cannot build wasm32 modules and apt-get is not available;" >&2
    echo "install clang and lld (wasm-ld) with your package manager, then re-run." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "wasm toolchain: missing, and installing needs root: run" >&2
    echo "    sudo apt-get install -y $APT_PACKAGES" >&2
    exit 1
fi

echo "wasm toolchain: installing $APT_PACKAGES"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q </dev/null
# shellcheck disable=SC2086  # the package list is meant to split into words
$SUDO apt-get install -y -q --no-install-recommends $APT_PACKAGES </dev/null

if ! can_build_wasm; then
    echo "wasm toolchain: $APT_PACKAGES installed, but $CLANG still cannot link a wasm32 module" >&2
    exit 1
fi
echo "wasm toolchain: $("$CLANG" --version | head -n 1) ready"
