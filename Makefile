# advflat — the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install run test test-all test-slurm lint format bench bench-smoke check-wheel clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

# pyproject.toml declares ranges; constraints.txt pins the versions the tests ran with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install advflat with its dependencies

run: $(STAMP)  ## the quickstart: adversarial training + evaluation on the bundled digits (CPU, minutes)
	$(BIN)/advflat experiment=quickstart

# One pytest worker per core (each test file stays on one worker, so a module's fixtures are
# built once); `make test TEST_WORKERS=0` runs the suite in one process.
TEST_WORKERS ?= 2

test: $(STAMP)  ## the test suite (slow, gpu and slurm tests excluded)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slurm: $(STAMP)  ## the SLURM tests on a local one-node cluster (left up; slurm_local.sh stop)
	bash scripts/slurm_local.sh start
	$(BIN)/pytest -q -m slurm

test-all: $(STAMP)  ## every test, including slow and gpu ones (those skip without a GPU)
	$(BIN)/pytest -q -m ''

lint: $(STAMP)  ## ruff lint (incl. complexity), format check, mypy type check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmarks; results in outputs/bench/<timestamp>.json and .md
	$(BIN)/python -m benchmarks

bench-smoke: $(STAMP)  ## the benchmark on tiny sizes (seconds): checks that it runs
	$(BIN)/python -m benchmarks --smoke --out outputs/bench/smoke

check-wheel: $(STAMP)  ## build the wheel, install it in a fresh venv, run it outside the checkout
	bash scripts/check_wheel.sh

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
