# One command surface for humans and CI. `make run` and `make test` set everything up from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local
# Branch coverage gate: only ever goes up.
COV_MIN ?= 70

.DEFAULT_GOAL := help
.PHONY: help venv run test unit lint typecheck fmt bench chaos clean preflight lint-deploy

help:
	@echo "make run    - set up and run the daemon with embedded Mongo-wire server and demo downstreams"
	@echo "make test   - set up and run the whole suite against real RabbitMQ/Redis/nx-27017"
	@echo "make chaos  - the fault scenarios at full size on private services (table + .chaos/*.json)"
	@echo "make docs   - the reference site under docs/ (mkdocs build --strict into .site/)"
	@echo "make lint | typecheck | fmt | bench | clean"

# Extras: `local` is what `make run` needs (nx-27017, mirakuru), with `otel` (tracing, off unless OTEL_* ask);
# `dev` (tests, lint, bench, chaos) includes `local`, `otel` and `httpx`. The image takes the wheel with `otel`.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(LOCAL_STAMP)

$(LOCAL_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,otel]'
	touch $(LOCAL_STAMP)

venv: $(STAMP)

preflight: $(STAMP)
	@$(BIN)/s2s-daemon preflight

run: $(LOCAL_STAMP)
	$(BIN)/s2s-daemon dev

# Three workers: most integration tests wait on leases, delay queues and sleeps, not on the CPU.
PYTEST_WORKERS ?= 3
test: $(STAMP) lint typecheck lint-deploy docs asyncapi-parser browser
	@$(BIN)/s2s-daemon preflight
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --cov --cov-report=term --cov-fail-under=$(COV_MIN) $(PYTEST_ARGS)

# Debian's chromium and chromedriver for the status-page test (Selenium never downloads a browser).
# Idempotent: skipped when both are installed; uses sudo when not root.
.PHONY: browser
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q chromium chromium-driver; \
	fi

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check s2s_daemon tests
	$(BIN)/ruff format --check s2s_daemon tests

# Dockerfile, compose, Kubernetes, Prometheus rules and Grafana dashboard: real linters, offline.
lint-deploy: $(STAMP)
	bash deploy/validate.sh

# @asyncapi/parser (npm), pinned, into the git-ignored .tools/node for tests/contracts (idempotent).
ASYNCAPI_PARSER := .tools/node/node_modules/@asyncapi/parser/package.json
.PHONY: asyncapi-parser
asyncapi-parser: $(ASYNCAPI_PARSER)
$(ASYNCAPI_PARSER):
	npm install --prefix .tools/node --no-audit --no-fund --ignore-scripts @asyncapi/parser@3.6.3

# The operator console's screenshots in docs/img/, taken by its browser test against a running daemon.
.PHONY: screenshots
screenshots: $(STAMP) browser
	S2S_SCREENSHOTS_DIR=docs/img $(BIN)/pytest tests/integration/test_console.py -k charts -q

# uPlot, the console's chart library, shipped inside the package (s2s_daemon/http/static/vendor/uplot/): fetched
# once from npm at the pinned version, its files and licence committed. Re-run only to change the version (then
# update UPLOT_VERSION and the hashes in tests/unit/test_console_assets.py).
UPLOT_VERSION := 1.6.32
UPLOT_DIR := s2s_daemon/http/static/vendor/uplot
.PHONY: vendor-uplot
vendor-uplot:
	rm -rf .tools/uplot && mkdir -p .tools/uplot $(UPLOT_DIR)
	cd .tools/uplot && npm pack --silent uplot@$(UPLOT_VERSION) && tar xzf uplot-$(UPLOT_VERSION).tgz
	cp .tools/uplot/package/dist/uPlot.iife.min.js .tools/uplot/package/dist/uPlot.min.css \
	  .tools/uplot/package/LICENSE .tools/uplot/package/package.json $(UPLOT_DIR)/

typecheck: $(STAMP)
	$(BIN)/mypy s2s_daemon tests/harness

# The reference site under docs/; --strict turns every broken link or anchor into a failure.
.PHONY: docs
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site

fmt: $(STAMP)
	$(BIN)/ruff format s2s_daemon tests
	$(BIN)/ruff check --fix s2s_daemon tests

# The harness lives in tests/harness (outside the wheel); both run from the repository root.
bench: $(STAMP)
	$(BIN)/python -m tests.harness.bench $(BENCH_ARGS)

# Private RabbitMQ/Redis/nx-27017 per scenario, daemons as processes; CHAOS_ARGS=--only=pause,sigkill or --short.
chaos: $(STAMP)
	$(BIN)/python -m tests.harness.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .data .bench .chaos .site .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov *.egg-info
