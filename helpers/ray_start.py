"""Start (or join) Ray for the kit's Ray engines, surviving a busy machine.

Ray gives a new local node a fixed 30 s to register its raylet (``ray/_private/node.py``); on a
loaded 2-core machine the Python agents the raylet waits for can take longer, and ``ray.init`` then
raises "The current node timed out during startup" and leaves the half-started processes running.
:func:`start_ray` stops those and tries again. Needs the ``scale`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

START_ATTEMPTS = 3
_START_TIMEOUT_MESSAGE = "timed out during startup"
_QUIET = {"log_to_driver": False, "logging_level": logging.ERROR}


def start_ray(
    num_cpus: int | None = None, address: str | None = None, *, attempts: int = START_ATTEMPTS
) -> Any:
    """Ray, initialised: joined to a cluster at ``address`` (or ``RAY_ADDRESS``), else started locally with
    ``num_cpus`` CPUs and no dashboard; Ray's own logs stay out of the caller's output either way. A Ray
    already initialised is reused as it is. A local start that misses Ray's raylet deadline is cleaned
    up and retried, ``attempts`` times in all. Returns the ``ray`` module.
    """
    from helpers.extras import require_extra

    require_extra("scale", ["ray", "psutil"], needed_for="the Ray engines (engine='local' needs nothing)")
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **_QUIET)
        return ray
    failure: Exception | None = None
    for _ in range(attempts):
        started_before = _child_pids()
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **_QUIET)
            return ray
        except Exception as error:
            if _START_TIMEOUT_MESSAGE not in str(error):
                raise
            failure = error
            ray.shutdown()
            _stop_children_except(started_before)
    raise RuntimeError(
        f"Ray did not start in {attempts} tries: its raylet missed Ray's fixed 30 s start-up deadline each "
        "time (the machine is too busy). Free some CPU and run again, or start Ray once with "
        "`ray start --head` and set RAY_ADDRESS (or pass address=) to join it."
    ) from failure


def _child_pids() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


def _stop_children_except(kept: set[int]) -> None:
    """Kill the processes this one started since ``kept`` was taken (a failed start's GCS, raylet, agents)."""
    import psutil

    leftovers = [child for child in psutil.Process().children(recursive=True) if child.pid not in kept]
    for child in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(leftovers, timeout=10)
