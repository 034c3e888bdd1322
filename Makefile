# OptiStack — every target sets up what it needs, so each works on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OPTISTACK_RESULTS ?= $(CURDIR)/results
export OPTISTACK_HOME ?= $(CURDIR)/.optistack

.PHONY: install test demo airflow bench lint format local-up local-down local-status clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[airflow,local,dev]'
	@touch $(STAMP)

## test: install, make sure the test servers run, then the whole suite
test: install
	bash scripts/test-servers.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## demo: the main job — a benchmark on local servers that need no system install, ending in a report
demo: install
	bash scripts/demo.sh

## airflow: the Airflow UI on :8080 with OptiStack's DAGs and plugin
airflow: install
	bash scripts/airflow.sh standalone

bench: install
	$(BIN)/python scripts/bench_harness.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

local-up: install
	$(BIN)/optistack local up

local-down: install
	$(BIN)/optistack local down

local-status: install
	$(BIN)/optistack local status

clean:
	-$(BIN)/optistack local down
	rm -rf results .optistack airflow_home .pytest_cache
