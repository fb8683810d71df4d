# Two commands on a fresh machine: `make lab` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lab test lint format run bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install (skipped when up to date)

lab: install  ## JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

lint: install  ## ruff: lint and format check, notebooks included
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint  ## the whole suite: unit, integration, nbval over the notebooks
	$(PY) -m pytest

run: install  ## execute every notebook headless against the simulator; executed copies go to data/runs/, results to data/results/
	QWEN_RESULTS_DIR=$(CURDIR)/data/results $(PY) -m helpers.run_notebooks

bench: install  ## benchmark scripts that print the performance figures
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
