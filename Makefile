# Two entry points a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-pipecat test-min test-matrix lint typecheck unit coverage bench soak clean report-check

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

# The pipecat examples need the pipecat extra: `make test-pipecat` type-checks them.
PIPECAT_EXAMPLES := examples/pipecat_agent.py examples/pipecat_session_agent.py
typecheck: $(STAMP)
	$(BIN)/mypy vobiz_async tests benchmarks $(filter-out $(PIPECAT_EXAMPLES),$(wildcard examples/*.py))

unit: $(STAMP)
	PYTHONASYNCIODEBUG=1 $(BIN)/pytest -q

test: lint typecheck unit

# The suite against the declared minimum versions of the runtime dependencies and of the
# fastapi extra (every `>=X` pinned to `==X`), in its own venv, so the floors stay true.
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed

$(MIN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; deps = p['dependencies'] + p['optional-dependencies']['fastapi'] + p['optional-dependencies']['speed']; print('\n'.join(d.replace('>=', '==') for d in deps))" > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/constraints.txt -e ".[dev]"
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(aiohttp|websockets|pydantic|msgspec|fastapi|starlette|uvicorn|uvloop)=='
	PYTHONASYNCIODEBUG=1 $(MIN_VENV)/bin/pytest -q -p no:cacheprovider

# pipecat (vobiz_async.integrations.pipecat) pulls in numpy, onnxruntime and more, which
# would make `make test` several minutes slower: its tests (marked `pipecat`) and its
# example run here, in their own venv (.venv-pipecat), and skip in `make test`.
PIPECAT_VENV := .venv-pipecat
PIPECAT_STAMP := $(PIPECAT_VENV)/.installed

$(PIPECAT_STAMP): pyproject.toml
	test -x $(PIPECAT_VENV)/bin/python || $(PYTHON) -m venv $(PIPECAT_VENV)
	$(PIPECAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PIPECAT_VENV)/bin/python -m pip install --quiet -e ".[dev,pipecat]"
	touch $(PIPECAT_STAMP)

test-pipecat: $(PIPECAT_STAMP)
	$(PIPECAT_VENV)/bin/mypy vobiz_async/integrations tests/test_pipecat.py tests/test_pipecat_session.py $(PIPECAT_EXAMPLES)
	PYTHONASYNCIODEBUG=1 $(PIPECAT_VENV)/bin/pytest -q -p no:cacheprovider -m pipecat

# Branch coverage of the library (slower under tracing; not part of `make test`).
coverage: $(STAMP)
	$(BIN)/pytest -q --cov --cov-report=term

# Benchmark-only peers, timed beside us in the same run; never runtime dependencies.
# They live in their own venv (.venv-bench) so the test venv stays what users install.
# (plivo-stream-sdk imports `plivo` without declaring it.)
BENCH_PEERS := soxr numpy pipecat-vobiz plivo-stream-sdk plivo
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[speed]" $(BENCH_PEERS)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/bench_codec.py
	$(BENCH_VENV)/bin/python benchmarks/bench_protocol.py
	$(BENCH_VENV)/bin/python benchmarks/bench_server.py --calls 200 --echo-calls 300 --capacity

# The demo's call report, rendered by headless Chromium and checked (issue 18).
report-check: $(STAMP)
	$(BIN)/vobiz-async demo --out build/demo > /dev/null
	$(BIN)/python -m tests.report_check build/demo/call.wav --out build/report-check

soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py

clean:
	rm -rf $(VENV) $(MIN_VENV) $(PIPECAT_VENV) .venv-3.* .venv-bench .mypy_cache .pytest_cache .ruff_cache demo-output

# The suite on every Python the package claims (3.11, 3.12, 3.13) that this machine has:
# a plain `pythonX.Y` on PATH, or a pyenv build. Each gets its own venv (.venv-X.Y).
MATRIX ?= 3.11 3.12 3.13
test-matrix:
	@found=0; for v in $(MATRIX); do \
	  py=""; \
	  for cand in $$(command -v python$$v) $$(ls -d $$HOME/.pyenv/versions/$$v*/bin/python$$v 2>/dev/null); do \
	    if "$$cand" -c 'import sys' >/dev/null 2>&1; then py=$$cand; break; fi; \
	  done; \
	  if [ -z "$$py" ]; then echo "test-matrix: Python $$v not found, skipped"; continue; fi; \
	  found=$$((found+1)); echo "test-matrix: Python $$v ($$py)"; \
	  if [ ! -x .venv-$$v/bin/python ]; then "$$py" -m venv .venv-$$v && .venv-$$v/bin/python -m pip install --quiet --upgrade pip; fi; \
	  .venv-$$v/bin/python -m pip install --quiet -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true; \
	  PYTHONASYNCIODEBUG=1 .venv-$$v/bin/python -m pytest -q -p no:cacheprovider || exit 1; \
	done; \
	if [ $$found -eq 0 ]; then echo "test-matrix: no interpreter found"; exit 1; fi
