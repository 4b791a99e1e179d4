# Two commands for a newcomer: `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser run status test test-fast test-faults lint bench deploy-check lock clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch node_modules/.installed

setup: $(STAMP) node_modules/.installed

## Headless Chromium + chromedriver for the console's browser test (Debian packages; only when missing).
browser:
	bash local/browser/install.sh

## Start the whole local stack with demo data (Ctrl-C stops everything it started).
RUN_ARGS ?=
run: setup
	$(PY) -m local.stack run --demo-data $(RUN_ARGS)

status: setup
	$(PY) -m local.stack status

lint: setup
	$(PY) -m ruff check .

## Every test: lint, unit, integration on the local stack, contract smoke, fault matrix.
test: setup lint browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not stack"

test-faults: setup
	$(PY) -m pytest -q -m slow

## `make bench BENCH_ARGS="--e2e-n 100000"`: the end-to-end job at 100,000 records (~20 min more; docs/benchmarks.md).
BENCH_ARGS ?=
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

deploy-check: setup
	$(PY) -m pytest -q tests/infra
	bash infra/checks/run-checkov.sh

## Regenerate the hashed locks after editing requirements.in / requirements-dev.in (pip-tools, own venv).
LOCK_FLAGS := --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock:
	@test -x .venv-lock/bin/pip-compile || ($(PYTHON_BOOT) -m venv .venv-lock && .venv-lock/bin/pip install -q pip-tools==7.6.2)
	.venv-lock/bin/pip-compile -q $(LOCK_FLAGS) -o requirements.txt requirements.in
	.venv-lock/bin/pip-compile -q $(LOCK_FLAGS) -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) .venv-lock .venv-checkov node_modules .local .pytest_cache .ruff_cache
