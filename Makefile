# Two entry points a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-min lint typecheck unit coverage bench soak clean

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

# The suite against the declared minimum versions of the runtime dependencies (every
# `>=X` in pyproject.toml pinned to `==X`), in its own venv, so the floors stay true.
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed

$(MIN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d.replace('>=', '==') for d in deps))" > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/constraints.txt -e ".[dev]"
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(aiohttp|websockets|pydantic|msgspec)=='
	PYTHONASYNCIODEBUG=1 $(MIN_VENV)/bin/pytest -q -p no:cacheprovider

# Branch coverage of the library (slower under tracing; not part of `make test`).
coverage: $(STAMP)
	$(BIN)/pytest -q --cov --cov-report=term

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_codec.py
	$(BIN)/python benchmarks/bench_protocol.py
	$(BIN)/python benchmarks/bench_server.py

soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py

clean:
	rm -rf $(VENV) $(MIN_VENV) .mypy_cache .pytest_cache .ruff_cache demo-output
