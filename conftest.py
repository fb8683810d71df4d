"""Test-run settings and shared fixtures for the unit tests and nbval over the notebooks.

Environment: the notebooks resolve their endpoint from the environment; under test they must always
talk to the embedded simulator (or a simulated fleet), on a faster clock (``QWEN_SIM_TIME_SCALE=10``),
so a user's ``QWEN_BASE_URL`` never leaks into the suite.

How the suite is spread (``make test`` runs ``pytest -n 4``; pytest-xdist, ``--dist loadgroup``):
- every test belongs to an xdist group: by default its file (a notebook's cells, or a module's tests
  and their module-scoped simulators, stay on one worker); a file or test may name another group with
  ``@pytest.mark.xdist_group("name")`` to run with other files on one worker (the Ray tests share one
  local Ray that way: ``local_ray``);
- more workers than cores pays: most of the suite waits on simulators, kernels and subprocesses.

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


@pytest.hookimpl(tryfirst=True)  # before xdist turns the marks into --dist loadgroup's groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test without an explicit ``xdist_group`` joins its file's group; notebooks are ``server``."""
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
        if item.nodeid.endswith(".ipynb") or ".ipynb::" in item.nodeid:
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


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Any]:
    """One local Ray (2 CPUs) per worker; tests using it belong to ``xdist_group("ray")``."""
    ray = pytest.importorskip("ray")
    for attempt in (1, 2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as error:  # Ray waits a fixed 30 s for its raylet: a busy machine can miss it
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(error):
                raise
    yield ray
    ray.shutdown()
