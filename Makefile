# `make run`: install and serve on the embedded default (SQLite file, in-process broadcast);
#   with Node.js present it also builds the web client served at /.
# `make test`: install everything the tests need (Python packages, npm packages, Debian's
#   chromium) and run them against real Postgres, Redis, gunicorn, Apollo clients and a browser.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: install run test bench lint format web chromium lock

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

# `make lock`: regenerate requirements.txt and requirements-dev.txt (every package pinned, with
# the hashes of all its files on PyPI) from requirements.in and requirements-dev.in, keeping
# every pin that still fits; `make lock UPGRADE="anyio idna"` moves those packages to their
# newest allowed versions. pip-tools runs from a venv of its own, and reads PyPI whatever this
# machine's pip configuration adds (local indexes, find-links): the hashes are those of the
# files Heroku downloads.
LOCK_VENV ?= .venv-lock
PIP_COMPILE = env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
	--generate-hashes --allow-unsafe --strip-extras --index-url https://pypi.org/simple --no-emit-index-url \
	$(addprefix --upgrade-package ,$(UPGRADE))

$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q pip==26.3 pip-tools==7.7.0

lock: $(LOCK_VENV)/bin/pip-compile
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in

run: install
	@if command -v npm >/dev/null 2>&1; then $(MAKE) web; else echo "Node.js not found: serving the API without the web client"; fi
	$(BIN)/python -m db.migrate
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/gunicorn -c serving/gunicorn.conf.py app:app

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Codegen from schema.graphql, then the type check, then the bundle: a schema change that
# breaks the client fails here.
web/dist/index.html: web/node_modules/.installed schema.graphql $(shell find web/src web/index.html web/*.ts -type f -not -path "*/generated/*" 2>/dev/null)
	cd web && npm run build

web: web/dist/index.html

chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: install tests/js/node_modules/.installed web chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

# About 26 minutes in all (`make bench ARGS=--quick` for a smoke run). Prints figures for the
# fast stack, the naive baseline and the raw floor side by side, then memory with 2,000 idle
# subscribers, then a resume from 20,000 messages back and a 5,000-client reconnect storm, then
# the chat features (the roomEvents mix, typing heartbeats, unread counts), then room lists
# (`myRooms` fan-out in a room of 1,000 against messageCreated, `rooms` for a user in 1,000 rooms
# against `me`), then createMessage and live p99 with webhooks off, on with a fast receiver and on
# with one that is down, then subscriptions over SSE and Apollo's multipart HTTP against WebSocket
# (S=1000 at 20 msg/s, and memory per idle stream), then what a subscription's executor keeps per
# event (graphql-core's and ours), then telemetry off against on (bench.telemetry), then what an
# abusive member or an anonymous client costs everyone else (bench-abuse).
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.idle_memory
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.reconnect $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.chat_features $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.room_lists $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.webhooks $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.http_streams $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.executor_memory
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.telemetry $(ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.abuse $(ARGS)

# An honest subscriber's p50 and p99 in a room of 200 without and with a member holding 100
# distinct heavy subscriptions and reacting at the rate limit; each worker's RSS and Redis'
# used_memory before and after 2,000 distinct padded documents, plain and as persisted-query
# registrations (a few minutes; `make bench-abuse ARGS=--quick` for a smoke run).
.PHONY: bench-abuse
bench-abuse: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.abuse $(ARGS)

# Each reach into a library's internals (core/reaches.py) against the public API it replaces, in
# one process, alternating, with medians and spread (about two minutes; needs Postgres at
# DATABASE_URL or 127.0.0.1:5432; `make bench-reaches ARGS=--quick` for a smoke run).
.PHONY: bench-reaches
bench-reaches: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.reaches $(ARGS)

# Churn for a few minutes (WebSocket cycles, HTTP with malformed and oversized requests) and
# print each worker's memory before, at peak and after; `make soak ARGS=--quick` for a smoke run.
.PHONY: soak
soak: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.soak $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
