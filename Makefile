# Flightdeck — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system

# Use uv from PATH, or bootstrap a private copy from PyPI into .tools/ on a fresh machine.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

$(VENV)/.synced: uv.lock pyproject.toml libs/common/pyproject.toml services/*/pyproject.toml | $(UV)
	$(UV) sync --all-packages --frozen
	@touch $@

.PHONY: install
install: $(VENV)/.synced ## create the virtual environment from uv.lock

.PHONY: run
run: install ## run everything embedded: 3 services + Traefik, SQLite under var/ (Ctrl-C stops)
	$(PY) -m flightdeck_common.devstack run --var-dir var

.PHONY: run-full
run-full: install ## same, against local PostgreSQL + Redis started from the system binaries
	$(PY) -m flightdeck_common.devstack run --full --var-dir var

.PHONY: postgres-stop postgres-start
postgres-stop: install ## stop the PostgreSQL of a running `make run-full` (to watch /readyz react)
	$(PY) -m flightdeck_common.devstack postgres stop --var-dir var
postgres-start: install ## start it again: the services recover by themselves
	$(PY) -m flightdeck_common.devstack postgres start --var-dir var

.PHONY: test
test: install ## the whole suite (starts throwaway PostgreSQL, Redis, Traefik itself)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: lint
lint: install ## ruff lint + format check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: install ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: migrate
migrate: install ## apply migrations of the three services (uses FLIGHTDECK_*_DATABASE_URL)
	$(VENV)/bin/flightdeck-auth migrate
	$(VENV)/bin/flightdeck-pipeline migrate
	$(VENV)/bin/flightdeck-admin migrate

.PHONY: lock
lock: | $(UV) ## refresh uv.lock after changing dependencies
	$(UV) lock

.PHONY: clean
clean: ## remove local data (var/) and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
