# `make run`: install and serve on the embedded default (SQLite file, in-process broadcast).
# `make test`: install everything the tests need and run them against real Postgres and Redis.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: install run test bench lint format

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python -m db.migrate
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/gunicorn -c gunicorn.conf.py app:app

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: install tests/js/node_modules/.installed
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# Prints figures for the fast stack and the naive baseline side by side (about 10 minutes;
# `make bench ARGS=--quick` for a smoke run), then memory with 2,000 idle subscribers.
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.idle_memory

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
