# The README's two commands: `make run` and `make test`. Each sets up everything it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FLOWPAY := $(BIN)/flowpay
# uv installs the dependencies from uv.lock (exact versions, each file checked against its hash).
# It lives in a venv of its own, installed from PyPI at the version pyproject.toml requires:
# `uv sync` removes from .venv whatever the lock does not name, uv itself included.
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
UV_VERSION := $(shell sed -n 's/^required-version = "==\(.*\)"$$/\1/p' pyproject.toml)
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Only the Python given: never a download of one.
export UV_PYTHON_DOWNLOADS := never
# Every role, CLI call and test process imports about 900 modules. Compiled once at install
# (the dependencies by uv, ours by compileall), not at every start: where Python does not write
# bytecode (PYTHONDONTWRITEBYTECODE), each start compiled them all again, seconds of CPU.
export UV_COMPILE_BYTECODE := 1

.PHONY: run test chaos install lock lock-upgrade infra lint down status clean stripe-mock browser

run: infra  ## install, start the whole local stack, print where everything is, send a demo payment
	$(FLOWPAY) dev up
	$(FLOWPAY) pay --amount 1999 --currency USD --wait --json > .flowpay/demo-payment.json
	$(FLOWPAY) status $$($(BIN)/python -c "import json; print(json.load(open('.flowpay/demo-payment.json'))['id'])")
	$(FLOWPAY) dev webhooks --wait 30 --payment $$($(BIN)/python -c "import json; print(json.load(open('.flowpay/demo-payment.json'))['id'])")

test: infra lint stripe-mock browser  ## install, start PostgreSQL and Kafka, run the whole suite
	$(BIN)/pytest
	$(BIN)/pytest -m chaos -n 3
	$(BIN)/pytest -m serial -n 0

chaos: install  ## the chaos scenario at full size (python -m chaos --help), then a random contract run
	$(BIN)/python -m chaos
	CONTRACT_SEED=random CONTRACT_MAX_TIME=600 $(BIN)/pytest tests/test_fuzz_api.py -n 0

# Every run checks the lock: --locked fails when pyproject.toml and uv.lock disagree (`make lock`).
install: $(UV)
	$(UV) sync --locked --all-extras --python $(PYTHON)
	$(BIN)/python -m compileall -q flowpay_cli workers bench chaos tests
# The client generator, in an environment of its own (pyproject.toml's codegen group says why).
	UV_PROJECT_ENVIRONMENT=$(VENV)/codegen $(UV) sync --locked --only-group codegen --python $(PYTHON)

lock: $(UV)  ## bring uv.lock in line with pyproject.toml, keeping the other pins
	$(UV) lock

lock-upgrade: $(UV)  ## every locked version to the newest pyproject.toml allows
	$(UV) lock --upgrade

$(UV): pyproject.toml
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)
	touch $(UV)

infra: install
	$(FLOWPAY) dev up --infra-only

# Stripe's API mock, which the Stripe connector's tests run against: `go install` at the version
# tests/helpers/stripe_mock.py pins, once, into .flowpay/stripe-mock/<version>/.
stripe-mock: install
	$(BIN)/python -m tests.helpers.stripe_mock

.PHONY: bench
bench: infra  ## every benchmark of issue 7 (under 15 min): tables, bench/results/, docs/performance.md
	$(BIN)/python -m bench

# Debian's Chromium and its chromedriver, for the real-browser tests: apt-get as root, once.
browser: install
	$(BIN)/python -m tests.helpers.browser

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

down: install
	$(FLOWPAY) dev down

status: install
	$(FLOWPAY) dev status

clean: down
	rm -rf .flowpay
