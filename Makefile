# Two entry points a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit coverage bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vobiz-async demo --out demo-output

lint: $(STAMP)
	$(BIN)/ruff check vobiz_async tests benchmarks examples
	$(BIN)/ruff format --check vobiz_async tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy vobiz_async tests benchmarks $(wildcard examples/*.py)

unit: $(STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -q

test: lint typecheck unit

# Branch coverage of the library (slower under tracing; not part of `make test`).
coverage: $(STAMP)
	$(BIN)/pytest -q --cov --cov-report=term

# Benchmark-only peers, timed beside us in the same run; never runtime dependencies.
# (plivo-stream-sdk imports `plivo` without declaring it.)
BENCH_PEERS := soxr numpy pipecat-vobiz plivo-stream-sdk plivo
BENCH_STAMP := $(VENV)/.bench-peers

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(BENCH_PEERS)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_codec.py
	$(BIN)/python benchmarks/bench_protocol.py
	$(BIN)/python benchmarks/bench_server.py

soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache demo-output
