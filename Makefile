# extauthz — developer entry points. Every target creates the virtualenv on demand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint proto proto-check bench bench-all image clean fuzz soak

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: real Envoy -> extauthz -> demo upstream, with dev keys and ready-to-use curl commands
run: $(STAMP)
	$(PY) tools/demo.py

## test: the whole suite (unit, gRPC integration, real-Envoy end-to-end, chart)
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

## lint: ruff + mypy strict on the package
lint: $(STAMP)
	$(VENV)/bin/ruff check extauthz tests bench
	$(VENV)/bin/mypy

## proto: regenerate extauthz/_proto from proto/ (never hand-edit the generated code)
proto: $(STAMP)
	$(PY) tools/protogen.py

## proto-check: fail if extauthz/_proto is stale
proto-check: $(STAMP)
	$(PY) tools/protogen.py --check

## bench: the cost of one Check in-process, next to bare joserfc (seconds)
bench: $(STAMP)
	$(PY) bench/check_cost.py

## bench-all: direct gRPC load, Envoy side by side with jwt_authn, memory; then docs/benchmarks.md
bench-all: $(STAMP)
	$(PY) bench/direct.py --nice -10
	$(PY) bench/envoy_bench.py --nice -10
	$(PY) bench/memory.py --nice -10
	$(PY) bench/report.py --write

## soak: Checks under key rotation while the Kubernetes API faults (SOAK_SECONDS=300)
soak: $(STAMP)
	$(PY) tools/soak.py --seconds $${SOAK_SECONDS:-300}

## fuzz: coverage-guided fuzzing of the whole pipeline with atheris (RUNS=1000000)
fuzz: $(STAMP)
	$(PY) -m pip install --quiet atheris
	mkdir -p fuzz/corpus fuzz/artifacts
	$(PY) fuzz/fuzz_check.py fuzz/corpus -artifact_prefix=fuzz/artifacts/ -runs=$${RUNS:-1000000}

image:
	docker build -t extauthz:dev .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
