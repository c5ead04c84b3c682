#!/bin/sh
# Build the single-file `caxton` binary with PyInstaller: dist/caxton.
#
# Usage: packaging/pyinstaller/build.sh        (from anywhere; `make bundle` calls it)
# Environment: PYTHON (default: .venv/bin/python in the repository) must have Caxton and
# PyInstaller installed (`make bundle` installs PyInstaller with the `bundle` extra).
#
# The binary carries the embedding model folder and wasmtime's native library (see caxton.spec);
# nothing downloads when it runs. Build files go to build/pyinstaller, the binary to dist/.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"

if ! "$PYTHON" -c 'import PyInstaller' >/dev/null 2>&1; then
    echo "bundle: PyInstaller is not installed for $PYTHON; run: make bundle" >&2
    echo "    (or: $PYTHON -m pip install -e '.[bundle]')" >&2
    exit 1
fi

start=$(date +%s)
# --clean: a cached Analysis would otherwise survive changes to the spec's collect lists.
"$PYTHON" -m PyInstaller --clean --noconfirm --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller" \
    "$ROOT/packaging/pyinstaller/caxton.spec"
end=$(date +%s)

size=$(stat -c %s "$ROOT/dist/caxton")
echo "bundle: dist/caxton built in $((end - start)) s, $((size / 1048576)) MiB ($size bytes)"
