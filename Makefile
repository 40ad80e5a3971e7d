# The README's two commands: `make run` and `make test`. Each sets up everything it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FLOWPAY := $(BIN)/flowpay
STAMP  := $(VENV)/.installed

.PHONY: run test chaos install infra lint down status clean

run: infra  ## install, start the whole local stack, print where everything is, send a demo payment
	$(FLOWPAY) dev up
	$(FLOWPAY) pay --amount 1999 --currency USD --wait --json > .flowpay/demo-payment.json
	$(FLOWPAY) status $$($(BIN)/python -c "import json; print(json.load(open('.flowpay/demo-payment.json'))['id'])")
	$(FLOWPAY) dev webhooks --wait 30 --payment $$($(BIN)/python -c "import json; print(json.load(open('.flowpay/demo-payment.json'))['id'])")

test: infra lint  ## install, start PostgreSQL and Kafka, run the whole suite
	$(BIN)/pytest
	$(BIN)/pytest -m chaos -n 0

chaos: install  ## the chaos scenario at full size (python -m chaos --help), then a random contract run
	$(BIN)/python -m chaos
	CONTRACT_SEED=random CONTRACT_MAX_TIME=600 $(BIN)/pytest tests/test_fuzz_api.py -n 0

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
# The client generator, in an environment of its own (pyproject.toml's codegen group says why).
	$(PYTHON) -m venv --clear --without-pip $(VENV)/codegen
	$(BIN)/pip --python $(VENV)/codegen/bin/python install --quiet --group codegen
	touch $(STAMP)

infra: install
	$(FLOWPAY) dev up --infra-only

.PHONY: bench
bench: infra  ## every benchmark of issue 7 (under 15 min): tables, bench/results/, docs/performance.md
	$(BIN)/python -m bench

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
