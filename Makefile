# Every target sets up .venv on first use, so a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: install run dev test lint bench accuracy faults stop clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: install  ## meter the last hours of a simulated foundation on the embedded defaults
	$(BIN)/python -m billing_dagster.launch run

dev: install  ## the same set-up, then the Dagster UI on http://localhost:3000
	$(BIN)/python -m billing_dagster.launch dev

test: install  ## lint, every test on the local PostgreSQL 15, then again on the embedded 18
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	BILLING_TEST_DATABASE=embedded $(BIN)/python -m pytest -m "not embedded and not accuracy and not faults and not browser"

accuracy: install  ## a week of 200 apps, then a month of 2,000, checked against the simulator's oracle
	BILLING_ACCURACY=week $(BIN)/python -m pytest -m accuracy tests/accuracy
	$(BIN)/python -m tests.accuracy

faults: install  ## every fault scenario, three seeds, checked against the oracle and a fault-free run
	$(BIN)/python -m tests.faults --seeds 3

lint: install
	$(BIN)/ruff check .
	$(BIN)/pyright

bench: install  ## snapshot, landing, derivation and pricing timings beside their floors; a quarter of a 20k-app foundation; the UI's pages after a year
	$(BIN)/python -m bench.pricing
	$(BIN)/python -m bench.snapshot
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.backfill
	$(BIN)/python -m bench.year
	$(BIN)/python -m bench.ui_pages

stop:  ## stop the embedded PostgreSQL server started by run/dev
	$(BIN)/python -m billing_dagster.launch stop

clean: stop
	rm -rf .billing .dagster_home
