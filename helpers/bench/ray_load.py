"""The Ray engine of :mod:`helpers.bench.multiproc`: each load process is a Ray actor.

With ``engine="ray"`` the shares of a run go to ``processes`` Ray actors (one CPU each) instead of
local processes, so the load can come from several machines of a Ray cluster (``ray_address`` or
``RAY_ADDRESS``; without either, and if Ray is not running yet, ``helpers.ray_start.start_ray``
starts a local Ray with ``num_cpus=processes``). Each
actor builds its target from the factory and warms up; then the driver sends one start time and
every actor sends its share from it, as the local engine does.

* **One clock across machines**: machines do not share ``CLOCK_MONOTONIC``, so the start is a
  wall-clock time (``time.time()``) a second ahead; each actor converts it to its own
  ``perf_counter`` and times its records from there. Within an actor times are exact; between
  actors on different machines they are as aligned as the machines' clocks (the NTP skew, usually
  a millisecond or less on a LAN, tens of ms if a clock is badly kept). Actors on one machine share
  the wall clock, so there only the conversion's microseconds remain.
* **The actors must reach the endpoint**: on a cluster, a server or router address, not this
  machine's localhost.
* **Errors**: a factory or load that raises fails the run with :class:`LoadProcessError` (the
  actor's number and the remote traceback); so does an actor that dies. Every actor is killed when
  the run ends, however it ends.

Example::

    run = run_closed_loop_processes(factory, prompts, concurrency=256, processes=8,
                                    engine="ray", ray_address="ray://head:10001")
"""

from __future__ import annotations

import time
from typing import Any

from helpers.extras import require_extra

require_extra("scale", ["ray"], needed_for="engine='ray' (engine='local' needs nothing more)")

from helpers.bench.shares import (
    LoadProcessError,
    Share,
    ShareRun,
    TargetFactory,
    prepare_share,
    send_share,
)
from helpers.ray_start import start_ray

RAY_START_MARGIN_S = 1.0  # the shared start is this far after the last actor is ready


def run_on_ray(factory: TargetFactory, shares: list[Share], ray_address: str | None) -> list[ShareRun]:
    """Send each share from its own Ray actor from one wall-clock start; their runs in order."""
    ray = start_ray(num_cpus=len(shares), address=ray_address)
    actor_class = ray.remote(num_cpus=1)(_LoadActor)
    actors = [actor_class.remote() for _ in shares]
    try:
        _gather(
            ray, [actor.prepare.remote(factory, share) for actor, share in zip(actors, shares, strict=True)]
        )
        start = time.time() + RAY_START_MARGIN_S
        return _gather(ray, [actor.run.remote(start) for actor in actors])
    finally:
        for actor in actors:
            ray.kill(actor)


class _LoadActor:
    """A Ray actor: one event loop (Ray's, for async actors) holding one target."""

    async def prepare(self, factory: TargetFactory, share: Share) -> None:
        self.share = share
        self.target = await prepare_share(factory, share)

    async def run(self, wall_start: float) -> ShareRun:
        start = time.perf_counter() + (wall_start - time.time())  # the shared start on this clock
        return await send_share(self.target, self.share, start)


def _gather(ray: Any, refs: list) -> list:
    """The results of ``refs`` in order; the first failure (in time) fails them all."""
    number = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            try:
                results[number[ref]] = ray.get(ref)
            except ray.exceptions.RayActorError as error:
                raise LoadProcessError(number[ref], f"its Ray actor died: {error}") from None
            except ray.exceptions.RayTaskError as error:
                raise LoadProcessError(number[ref], str(error)) from None
    return results
