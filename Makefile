# pinlife: `make run` serves on SQLite with no set-up; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard protos/pinlife/v1/*.proto)
GEN := gen
STAMP_INSTALL := $(VENV)/.installed
STAMP_GEN := $(GEN)/.generated

export PINLIFE_DATABASE_URL ?= sqlite:///var/pinlife.db
export PINLIFE_KEY_FILE ?= var/dev-keys.json

.PHONY: install gen dev-keys migrate run demo test test-unit bench bench-quick clean

install: $(STAMP_INSTALL)
$(STAMP_INSTALL): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# Stubs are build output (not committed): regenerated from protos/ and put on
# the venv's path with a .pth file.
gen: $(STAMP_GEN)
$(STAMP_GEN): $(STAMP_INSTALL) $(PROTOS)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) $(PROTOS)
	echo "$(CURDIR)/$(GEN)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pinlife-gen.pth"
	@touch $@

# Development keys: made if missing (never over a store that already has
# verifiers), completed if an older file lacks a section; kept otherwise.
dev-keys: gen
	$(PY) -m service.cli dev-key $(PINLIFE_KEY_FILE)

migrate: gen dev-keys
	$(PY) -m service.cli migrate

run: gen dev-keys migrate
	$(PY) -m service.cli serve

# The README's seed story through the real API with the CLI, on a throwaway
# store and its own server (service/demo.py; DEMO_ARGS="--clock ..." moves it).
demo: gen
	$(PY) -m service.demo $(DEMO_ARGS)

# Tests run in parallel, one worker per core (pytest-xdist).
test: gen
	$(PY) -m pytest -n auto $(PYTEST_ARGS)

test-unit: gen
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Performance (not part of `make test`): see bench/README.md and the README.
$(VENV)/.bench-installed: $(STAMP_INSTALL)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: gen $(VENV)/.bench-installed
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: gen $(VENV)/.bench-installed
	$(PY) -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(GEN) .pytest_cache .hypothesis
