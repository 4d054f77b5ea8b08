# The two commands: `make run` (the site on http://127.0.0.1:8000/) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -n auto

.PHONY: run test lint bench check-deploy clean

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
	AIEMAILY_ENV=development DEBUG=true PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

test: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python scripts/testenv.py -p no:xdist -o addopts="" -o python_files="bench_*.py" benchmarks -q -s $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles
