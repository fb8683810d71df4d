"""One load process's part of a multi-process run: its share of the prompts, how it warms up and
sends them from the shared start, and what it sends back. Used by both engines, local processes
(:mod:`helpers.bench.multiproc`) and Ray actors (:mod:`helpers.bench.ray_load`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from helpers.bench.load import _closed_loop, _open_loop
from helpers.bench.records import RequestRecord
from helpers.bench.targets import AsyncTarget

TargetFactory = Callable[[], AsyncTarget]


class LoadProcessError(RuntimeError):
    """A load process failed (not a request: the process itself); the message has its traceback."""

    def __init__(self, process: int, message: str) -> None:
        super().__init__(f"load process {process} failed: {message}")
        self.process = process


@dataclass
class Share:
    """What one child sends: its prompts (with their indices in the whole run) and its load."""

    indices: list[int]
    prompts: list[str]
    warmup: int
    concurrency: int | None = None  # closed loop: in flight; open loop: the cap (None: no cap)
    offsets: list[float] | None = None  # open loop: arrival times from the shared start


@dataclass
class ShareRun:
    """What one child sends back: records with times from the shared start."""

    records: list[RequestRecord]
    end_s: float
    cpu_s: float
    path: str
    stream: bool


async def prepare_share(factory: TargetFactory, share: Share) -> AsyncTarget:
    """In a load process: build the target and send the share's uncounted warm-up requests."""
    target = factory()
    if share.warmup:
        warm = [share.prompts[i % len(share.prompts)] for i in range(share.warmup)]
        await _closed_loop(target, warm, share.concurrency or share.warmup, None)
    return target


async def send_share(target: AsyncTarget, share: Share, start: float) -> ShareRun:
    """In a load process: send the share from ``start`` (this process's ``perf_counter``)."""
    delay = start - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    cpu_start = time.process_time()
    if share.offsets is None:
        records = await _closed_loop(target, share.prompts, share.concurrency or 1, None)
        for record in records:  # as load.py: every prompt arrived at the start
            record.client_queue_s = max(record.start_s - start, 0.0)
    else:
        records = await _open_loop(target, share.prompts, share.offsets, start, share.concurrency, None)
    end = time.perf_counter()
    cpu_s = time.process_time() - cpu_start
    close = getattr(target, "aclose", None)
    if close is not None:
        await close()
    return ShareRun(
        records=[record.shifted(start) for record in records],
        end_s=end - start,
        cpu_s=cpu_s,
        path=getattr(target, "path", type(target).__name__),
        stream=bool(getattr(target, "stream", False)),
    )
