# The two commands: `make run` (the site on http://127.0.0.1:8000/) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# loadgroup: tests marked xdist_group(name) share one xdist worker (tests/test_prod_sim.py's one topology);
# every other test is spread as with the default `load`.
PYTEST_ARGS ?= -n auto --dist loadgroup

.PHONY: run test lint bench load check-deploy clean security-report screenshots openapi fuzz prod-sim faults

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	AIEMAILY_ENV=development DEBUG=true $(BIN)/python manage.py migrate --noinput
	AIEMAILY_ENV=development AIEMAILY_PROCESS=vault $(BIN)/python manage.py migrate --database vault --noinput
	AIEMAILY_ENV=development AIEMAILY_PROCESS=sync $(BIN)/python manage.py migrate --database keys --noinput
	AIEMAILY_ENV=development DEBUG=true PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

# The production topology on this machine (docs/deployment.md "prod-sim"): PostgreSQL behind PgBouncer,
# RabbitMQ, moto (S3 + KMS), SoftHSM2, nginx with TLS in front of two webs, every worker, production
# settings; prints the URL, Ctrl-C stops it. `make faults` runs the fault-injection tests against it.
prod-sim: $(VENV)/.installed-dev
	$(BIN)/python -c 'import sys; sys.path.insert(0, "."); from tests.harness.system import install_system_packages as i; i()'
	$(BIN)/python scripts/prodsim.py

faults: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py -p no:xdist -m faults tests/project/test_prod_sim.py tests/project/test_clock_skew.py -q

# The whole suite on PostgreSQL (the fuzz run of tests/project/test_api_fuzz.py included), then the API tests
# that touch queries once more on the embedded SQLite default (marker sqlite_smoke).
test: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py $(PYTEST_ARGS)
	AIEMAILY_TEST_DATABASE=sqlite $(BIN)/python scripts/testenv.py -p no:xdist -m sqlite_smoke -q

# Writes the served OpenAPI schema to docs/openapi.yaml (tests/project/test_openapi.py fails when they differ).
openapi: $(VENV)/.installed
	AIEMAILY_ENV=development $(BIN)/python manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

# schemathesis against a live gunicorn, on SQLite and PostgreSQL, two seeded users (also part of `make test`).
# FUZZ_MAX_EXAMPLES=50 make fuzz runs longer; README "Fuzzing the API" runs it against a deployment.
fuzz: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py -p no:xdist tests/project/test_api_fuzz.py -q -s

# ruff, then the import contracts of pyproject.toml (trust zones, no cycle between apps).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

bench: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py -p no:xdist -o addopts="" -o python_files="bench_*.py" benchmarks -q -s $(BENCH_ARGS)

# Issue 19's scale runs alone (long; also part of `make bench`): USERS x MESSAGES through prod-sim for
# a bounded time (AIEMAILY_LOAD_* variables, default 100 x 1,000 for 180 s) and 500 IDLE watchers.
load: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py -p no:xdist -o addopts="" -o python_files="bench_*.py" \
	  benchmarks/bench_prod_sim_load.py benchmarks/bench_idle.py -q -s $(BENCH_ARGS)

# Runs every test that proves a public promise, then writes docs/security-claims.md (+ .json for the
# security page); fails when a promise has no passing test.
security-report: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py -n auto -m claim; \
	  $(BIN)/python scripts/security_report.py --write --check

# Captures the main pages in headless Chromium into docs/screenshots/ (linked from the README).
screenshots: $(VENV)/.installed-dev
	AIEMAILY_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/python scripts/testenv.py -p no:xdist \
	  tests/mail/test_browser_mailbox.py -k screenshots -q

clean:
	rm -rf $(VENV) staticfiles
