"""Test-run settings and shared fixtures for the unit tests and nbval over the notebooks.

Environment: the notebooks resolve their endpoint from the environment; under test they must always
talk to the embedded simulator (or a simulated fleet), on a faster clock (``QWEN_SIM_TIME_SCALE=10``),
so a user's ``QWEN_BASE_URL`` never leaks into the suite.

How the suite is spread (``make test`` runs ``pytest -n 4``; pytest-xdist, ``--dist loadfile``):
- each file runs on one worker: a notebook's cells in order in one kernel, a module's tests with
  their module-scoped simulators started once. Tests that must share something expensive live in
  one file: every Ray test is in tests/test_ray.py, so Ray starts once per run. (``--dist
  loadgroup`` would allow finer groups, but pytest-xdist 3.8 cannot rename pytest 9's node ids, so
  its ``xdist_group`` marks are ignored.) A new tier (e.g. tests_vllm/) gets the same spreading.
- more workers than cores pays: run alone, most of the suite waits on simulators, kernels and
  subprocesses; with 4 workers the two cores are busy for most of the run;
- pytest-xdist sends the files holding the most tests first (its default ``--loadscope-reorder``),
  which puts the notebooks and the large parametrized files ahead. An explicit longest-first order
  was tried and measured no better (quiet fresh clones, 2026-12-07: 289 and 305 s against 295 s), as
  the suite is mostly CPU-bound on 2 cores; tests/test_ray.py then runs last, alone, in about a minute.

Tiers (markers, see pyproject.toml): ``server`` marks tests that start a simulator, a fleet, a kernel,
Ray or another subprocess; ``make test-fast`` runs ``-m "not server"`` over tests/ (no notebooks).
A new test that starts anything must carry ``server`` (module-level ``pytestmark`` or per test).

Simulators: ``shared_sim(**serve_options)`` returns one running simulator per configuration and per
worker, started on first use and stopped at the end of the session. Use it when a test only reads
from the server (requests, /metrics deltas); start a fresh one with ``with serve(...)`` when the test
changes it, kills it, or counts absolute /metrics totals.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

for _name in ("QWEN_BASE_URL", "OPENAI_BASE_URL", "QWEN_API_KEY", "OPENAI_API_KEY", "QWEN_MODEL"):
    os.environ.pop(_name, None)
os.environ.setdefault("QWEN_SIM_TIME_SCALE", "10")
# Results written while testing go to a scratch folder, not into the working directory.
os.environ.setdefault("QWEN_RESULTS_DIR", tempfile.mkdtemp(prefix="qwen-results-"))

# nbval runs the English notebooks only: each Chinese twin (notebooks/*.zh-CN.ipynb) has the same code
# cells and outputs byte for byte, which tests/test_zh_edition.py proves without executing them again.
# (`pytest notebooks/NN_name.zh-CN.ipynb` still runs one when named explicitly.)
collect_ignore_glob = ["notebooks/*.zh-CN.ipynb"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Notebook cells are ``server`` tests: they run a kernel and simulators."""
    for item in items:
        if ".ipynb::" in item.nodeid:
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def shared_sim() -> Iterator[Callable[..., Any]]:
    """``shared_sim(**options)``: the worker's running ``serve(**options)``, started on first use."""
    from helpers.sim import serve

    servers: dict[tuple, Any] = {}

    def get(**options: Any) -> Any:
        key = tuple(sorted((name, repr(value)) for name, value in options.items()))
        server = servers.get(key)
        if server is None or not server.is_running():
            server = servers[key] = serve(**options)
        return server

    yield get
    for server in servers.values():
        server.stop()
