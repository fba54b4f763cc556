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
# pytest-xdist workers of `make test` (each starts its own PostgreSQL, Redis and stacks; a
# test file stays on one worker); 0 runs everything in this process.
PYTEST_WORKERS ?= 2
# Kustomize overlay rendered by `make k8s-render` (deploy/k8s/overlays/<name>).
OVERLAY ?= dev

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

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

.PHONY: run-cluster
run-cluster: install ## two replicas of each service behind Traefik, sharing local PostgreSQL + Redis (README: Multi-replica mode)
	$(PY) -m flightdeck_common.devstack run --full --replicas 2 --var-dir var

.PHONY: postgres-stop postgres-start
postgres-stop: install ## stop the PostgreSQL of a running `make run-full` (to watch /readyz react)
	$(PY) -m flightdeck_common.devstack postgres stop --var-dir var
postgres-start: install ## start it again: the services recover by themselves
	$(PY) -m flightdeck_common.devstack postgres start --var-dir var

.PHONY: test
test: install ## the whole suite (starts throwaway PostgreSQL, Redis, Traefik itself), PYTEST_WORKERS processes
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

.PHONY: test-resilience
test-resilience: install ## outages of PostgreSQL, Redis, auth and Traefik under a running full-mode stack, and a rolling restart under load (also in make test)
	$(PY) -m pytest libs/common/tests/resilience $(PYTEST_ARGS)

# Cases per operation of `make fuzz` (`make test` runs the same fuzzer with a few).
FUZZ_EXAMPLES ?= 200

.PHONY: fuzz
fuzz: install ## schema fuzzing of every service through the ingress, FUZZ_EXAMPLES cases per operation (default 200)
	FLIGHTDECK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest libs/common/tests/contract/test_schema_fuzz.py --timeout=3600 $(PYTEST_ARGS)

.PHONY: lint
lint: install ## ruff lint + format check, then mypy (typecheck)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@$(MAKE) --no-print-directory typecheck

.PHONY: typecheck
typecheck: install ## mypy --strict over libs/common and the three services
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: install ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: openapi
openapi: install ## write each service's OpenAPI schema to openapi/<service>.json (review the diff)
	$(PY) -m flightdeck_common.openapi_export

.PHONY: clients
clients: install ## generate a Python client per service from openapi/ into build/clients/ (fails on any warning)
	$(PY) -m flightdeck_common.clients_build --out build/clients

.PHONY: migrate
migrate: install ## apply migrations of the three services (uses FLIGHTDECK_*_DATABASE_URL)
	$(VENV)/bin/flightdeck-auth migrate
	$(VENV)/bin/flightdeck-pipeline migrate
	$(VENV)/bin/flightdeck-admin migrate

.PHONY: bench bench-quick
BENCH_ARGS ?=
bench: install ## benchmark (issue 8): seed 1M runs, full stack under wrk load vs a bare reference; writes bench/results/ (installs wrk when root)
	$(PY) -m bench $(BENCH_ARGS)
bench-quick: install ## the benchmark's smoke version: 100k runs, short measurements (a few minutes)
	$(PY) -m bench --quick $(BENCH_ARGS)

.PHONY: lock
lock: | $(UV) ## refresh uv.lock after changing dependencies
	$(UV) lock

# Compose needs a Docker engine with the Compose plugin; say so plainly when there is none.
define require_compose
	@if ! docker compose version >/dev/null 2>&1; then \
		echo "make $@: needs Docker with the Compose plugin ('docker compose'), not found here." >&2; \
		echo "  docker-compose.yml is still checked without Docker by 'make deploy-check'." >&2; \
		exit 1; \
	fi
	@if ! docker info >/dev/null 2>&1; then \
		echo "make $@: 'docker compose' is installed but no Docker engine answers (is the daemon running?)." >&2; \
		exit 1; \
	fi
endef

.PHONY: compose-up
compose-up: ## start the compose stack in the background and wait until it is healthy (needs Docker)
	$(require_compose)
	@[ -f .env ] || echo "note: no .env here; copy .env.example to .env to set secrets and options"
	docker compose up -d --wait

.PHONY: compose-down
compose-down: ## stop and remove the compose stack's containers (volumes are kept)
	$(require_compose)
	docker compose down

.PHONY: k8s-dev-secrets
k8s-dev-secrets: ## generate random secrets for the dev overlay (deploy/k8s/overlays/dev/secrets/, git-ignored)
	python3 deploy/k8s/overlays/dev/generate_secrets.py

.PHONY: k8s-render
k8s-render: install k8s-dev-secrets ## print the Kubernetes manifests of overlay OVERLAY (dev|prod; default dev)
	@[ -d deploy/k8s/overlays/$(OVERLAY) ] || { echo "make $@: no overlay deploy/k8s/overlays/$(OVERLAY)" >&2; exit 1; }
	$(VENV)/bin/kubectl kustomize deploy/k8s/overlays/$(OVERLAY)

.PHONY: k8s-validate
k8s-validate: install ## render every overlay and validate each object against the Kubernetes schemas
	$(PY) -m pytest libs/common/tests/deploy/test_deploy_k8s.py $(PYTEST_ARGS)

.PHONY: deploy-check
deploy-check: install ## all deployment checks: compose, Kubernetes, monitoring, workflows, Makefile
	$(PY) -m pytest libs/common/tests/deploy $(PYTEST_ARGS)

.PHONY: clean
clean: ## remove local data (var/), build/ and caches (keeps .venv)
	rm -rf var build .pytest_cache .mypy_cache .ruff_cache
	find libs services -type d -name __pycache__ -prune -exec rm -rf {} +

.PHONY: clean-all
clean-all: clean ## clean, and also remove .venv and the bootstrapped .tools
	rm -rf $(VENV) .tools
