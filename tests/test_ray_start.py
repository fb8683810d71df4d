"""helpers.ray_start: a local Ray start that misses Ray's raylet deadline is cleaned up and retried.

Ray itself is replaced by stand-ins for ``ray.init`` here (a real start is in tests/test_ray.py):
a busy machine cannot be ordered on demand, but the failure it causes has one exact shape.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psutil
import pytest

from helpers.ray_start import start_ray

ray = pytest.importorskip("ray")

RAY_TIMEOUT = "The current node timed out during startup. This could happen because some of the raylet failed"


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``ray.init`` calls recorded; Ray itself never starts."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_a_start_that_misses_the_deadline_is_stopped_and_retried(monkeypatch, fake_ray) -> None:
    leftovers: list[subprocess.Popen] = []

    def init(**kwargs: Any) -> None:
        fake_ray.append(kwargs)
        if len(fake_ray) == 1:  # the first start leaves a process behind, as Ray's GCS and raylet stay up
            leftovers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
            raise Exception(RAY_TIMEOUT)

    monkeypatch.setattr(ray, "init", init)
    assert start_ray(num_cpus=2) is ray
    assert len(fake_ray) == 2 and fake_ray[1]["num_cpus"] == 2 and fake_ray[1]["include_dashboard"] is False
    assert not psutil.pid_exists(leftovers[0].pid)  # killed and reaped, not left running


def test_every_start_missing_the_deadline_says_what_to_do(monkeypatch, fake_ray) -> None:
    def init(**kwargs: Any) -> None:
        fake_ray.append(kwargs)
        raise Exception(RAY_TIMEOUT)

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(RuntimeError, match=r"did not start in 2 tries.*RAY_ADDRESS") as raised:
        start_ray(num_cpus=1, attempts=2)
    assert len(fake_ray) == 2 and RAY_TIMEOUT in str(raised.value.__cause__)


def test_other_start_errors_are_not_retried(monkeypatch, fake_ray) -> None:
    def init(**kwargs: Any) -> None:
        fake_ray.append(kwargs)
        raise ValueError("bad num_cpus")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ValueError, match="bad num_cpus"):
        start_ray(num_cpus=-1)
    assert len(fake_ray) == 1


def test_an_address_or_ray_address_joins_a_cluster_without_local_options(monkeypatch, fake_ray) -> None:
    monkeypatch.setattr(ray, "init", lambda **kwargs: fake_ray.append(kwargs))
    start_ray(num_cpus=4, address="ray://head:10001")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    start_ray(num_cpus=4)
    assert [call["address"] for call in fake_ray] == ["ray://head:10001", "auto"]
    assert all("num_cpus" not in call for call in fake_ray)


def test_a_running_ray_is_reused(monkeypatch, fake_ray) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kwargs: fake_ray.append(kwargs))
    assert start_ray(num_cpus=2) is ray and fake_ray == []
