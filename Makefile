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

.PHONY: install gen dev-keys migrate run demo console console-vendor check test test-unit bench bench-quick bench-growth release-protos clean

# The venv belongs to the Python that made it: one made by another (an older
# PYTHON, or an interpreter since removed or upgraded to another minor
# version) is made anew, saying so, rather than reused. `make clean` removes it.
VERSION_OF = -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
PYTHON_VERSION := $(shell $(PYTHON) $(VERSION_OF))
ifneq ($(wildcard $(VENV)/pyvenv.cfg),)
VENV_VERSION := $(shell $(PY) $(VERSION_OF))
ifneq ($(VENV_VERSION),$(PYTHON_VERSION))
REMAKE_VENV := 1
.PHONY: $(STAMP_INSTALL)
endif
endif

install: $(STAMP_INSTALL)
$(STAMP_INSTALL): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "make: pinlife needs Python 3.11+; PYTHON=$(PYTHON) is $(or $(PYTHON_VERSION),not found): make PYTHON=python3.12 ..." >&2; exit 2; }
ifdef REMAKE_VENV
	@echo "make: $(VENV) was made by Python $(or $(VENV_VERSION),that is gone), not $(PYTHON) ($(PYTHON_VERSION)): making it anew (make clean removes it)"
	rm -rf $(VENV)
endif
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,console]'
	@touch $@

# Stubs are build output (not committed): generated from protos/ into
# service/v1/, which the editable install maps to pinlife.v1 (a wheel gets
# them from setup.py's build hook). gen/pinlife points at service/ so that
# mypy finds the package under its installed name.
# The package is byte-compiled once, as a wheel install does (an editable
# one does not): with PYTHONDONTWRITEBYTECODE set, every interpreter that
# imports pinlife (a served test, a writer process, a CLI command) would
# otherwise compile its hundred modules again, a sixth of its start-up; a
# module edited since is compiled from its source as usual.
gen: $(STAMP_GEN)
$(STAMP_GEN): $(STAMP_INSTALL) $(PROTOS)
	rm -rf $(GEN) service/v1 && mkdir -p $(GEN)/out
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN)/out --grpc_python_out=$(GEN)/out \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=$(GEN)/out \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=$(GEN)/out \
		$(PROTOS)
	mv $(GEN)/out/pinlife/v1 service/v1 && touch service/v1/__init__.py && rm -rf $(GEN)/out
	ln -s ../service $(GEN)/pinlife
	$(PY) -m compileall -q service migrations tools >/dev/null
	@touch $@

# Development keys: made if missing (never over a store that already has
# verifiers), completed if an older file lacks a section; kept otherwise.
dev-keys: gen
	$(PY) -m pinlife.cli dev-key $(PINLIFE_KEY_FILE)

migrate: gen dev-keys
	$(PY) -m pinlife.cli migrate

run: gen dev-keys migrate
	$(PY) -m pinlife.cli serve

# The seed story (docs/procedures.md) through the real API with the CLI, on a throwaway
# store and its own server (tools/demo.py; DEMO_ARGS="--clock ..." moves it).
demo: gen
	$(PY) -m tools.demo $(DEMO_ARGS)

# The auditors' web console (docs/audit.md) against `make run`'s server, on http://127.0.0.1:8040/.
console: gen
	$(PY) -m pinlife.cli console $(CONSOLE_ARGS)

# The console's browser libraries (htmx, Chart.js), pinned in tools/console/package.json, copied
# with their licences into service/console/static/vendor/ (committed: serving needs no npm).
console-vendor:
	npm ci --prefix tools/console --no-audit --no-fund --loglevel=error
	$(PY) tools/console/vendor.py

# Hygiene, before the tests: lint and format (ruff), types (mypy on
# service/), the protos (buf lint; buf breaking against the released
# contract, tools/buf/released.binpb). buf comes from npm (tools/buf).
BUF := tools/buf/node_modules/.bin/buf
LINTED := service tests bench migrations
$(BUF): tools/buf/package.json tools/buf/package-lock.json
	npm ci --prefix tools/buf --no-audit --no-fund --loglevel=error
	@touch $@

check: gen $(BUF)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy
	$(BUF) lint
	$(BUF) breaking protos --against tools/buf/released.binpb

# A release of the API: what later changes to protos/ must not break.
release-protos: $(BUF)
	$(BUF) build protos -o tools/buf/released.binpb

# Tests run in parallel, one worker per core (pytest-xdist).
test: check
	$(PY) -m pytest -n auto $(PYTEST_ARGS)

test-unit: gen
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Performance (not part of `make test`): what each figure means is bench/README.md; figures are docs/performance.md.
$(VENV)/.bench-installed: $(STAMP_INSTALL) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,console,bench]'
	@touch $@

bench: gen $(VENV)/.bench-installed
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: gen $(VENV)/.bench-installed
	$(PY) -m bench.run --quick $(BENCH_ARGS)

bench-growth: gen $(VENV)/.bench-installed
	$(PY) -m bench.run --growth $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(GEN) service/v1 build dist .pytest_cache .hypothesis
	find service migrations tools -name __pycache__ -type d -prune -exec rm -rf {} +
