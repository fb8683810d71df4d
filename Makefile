# Two commands on a fresh machine: `make lab` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# JupyterLab's address: LAB_IP=0.0.0.0 makes it reachable through a pod's or container's forwarded port
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888

.PHONY: install lab test lint format run bench zh clean

$(STAMP): requirements.txt pyproject.toml kit_tools/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e . -e ./kit_tools  # the kit, and the repo's tooling (kit_tools)
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install (skipped when up to date)

# No browser is opened (pods and SSH sessions have none): open the URL with token that Jupyter
# prints. --allow-root because containers usually run as root; it changes nothing for other users.
lab: install  ## JupyterLab on the notebooks (LAB_IP, LAB_PORT); prints the URL to open
	$(VENV)/bin/jupyter lab --no-browser --allow-root --ip=$(LAB_IP) --port=$(LAB_PORT) notebooks/

lint: install  ## ruff: lint and format check, notebooks included
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint  ## the whole suite: unit, integration, nbval over the notebooks
	$(PY) -m pytest

run: install  ## execute every notebook headless against the simulator; executed copies go to data/runs/, results to data/results/
	QWEN_RESULTS_DIR=$(CURDIR)/data/results $(PY) -m kit_tools.run_notebooks

bench: install  ## benchmark scripts that print the performance figures
	$(PY) -m benchmarks

zh: install  ## rebuild the Chinese notebooks (notebooks/*.zh-CN.ipynb) from the English ones and i18n/zh-CN/
	$(PY) -m kit_tools.translations build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
