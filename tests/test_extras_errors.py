"""Each optional part of the kit, imported without its packages, is an ImportError naming its extra
and both ways to install it (checked in a subprocess that hides one package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("helpers.bench", "numpy", "bench"),
    ("helpers.plots", "matplotlib", "bench"),
    ("helpers.server_metrics", "prometheus_client", "bench"),
    ("helpers.sim", "uvicorn", "sim"),
    ("helpers.sim.fleet", "starlette", "sim"),
    ("helpers.bench.ray_load", "ray", "scale"),
]


def import_without(module: str, hidden: str) -> str:
    code = (
        f"import sys; sys.modules[{hidden!r}] = None\n"
        f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)\nelse:\n    print('IMPORTED')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, cwd=ROOT
    )
    return done.stdout


@pytest.mark.parametrize(("module", "hidden", "extra"), CASES)
def test_an_optional_module_without_its_packages_names_its_extra(
    module: str, hidden: str, extra: str
) -> None:
    message = import_without(module, hidden)
    assert f"'{extra}' extra" in message and f"no module {hidden}" in message, message
    assert f"pip install 'qwen-async-kit[{extra}]'" in message
    assert f"pip install -e '.[{extra}]'" in message


def test_the_batch_runner_needs_only_the_client() -> None:
    assert import_without("helpers.batch", "numpy").strip() == "IMPORTED"
