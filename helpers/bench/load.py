"""Load generators: when requests are sent. They neither time requests (targets do) nor report.

* :func:`run_serial` — one after another (``invoke`` in a loop), the blog's "sync";
* :func:`run_threads` — LangChain's ``batch`` on a thread pool of ``max_concurrency``;
* :func:`run_closed_loop` — asyncio, at most ``concurrency`` in flight (``--max-concurrency``);
* :func:`run_open_loop` — asyncio, arrivals at ``rate`` per second with gamma gaps
  (``burstiness`` 1 = Poisson; ``rate=inf`` sends everything at once), optionally capped.

Each first sends ``warmup`` requests that are not counted, then returns a :class:`RunResult` whose
times start at 0 with the first counted send. Every prompt gives a record: failures included.
Each record's ``client_queue_s`` is the time from its arrival to its send (``vllm bench serve``'s
``client_queue_time``): in the open loop arrivals follow the schedule; the other generators have
every prompt arrive at the start, so the queue time is the wait for a free slot. A cancelled run
cancels its requests in flight.

Example:
    >>> run = await run_closed_loop(client, ["你是谁?"] * 20, concurrency=20)  # doctest: +SKIP
    >>> summarize(run)["request_throughput"]                                      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.runnables import RunnableLambda
from tqdm.auto import tqdm

from helpers.bench.records import RequestRecord, RunResult
from helpers.bench.targets import AsyncTarget, SyncTarget


def run_serial(
    target: SyncTarget, prompts: Sequence[str], *, warmup: int = 0, progress: bool = False
) -> RunResult:
    """Send the prompts one after another from this thread."""
    _check_prompts(prompts, warmup)
    for prompt in _warmup_prompts(prompts, warmup):
        target.request(prompt)
    settings = _settings("serial", target, len(prompts), warmup, concurrency=1)
    with _Clock() as clock, _bar(len(prompts), settings, progress) as bar:
        records = []
        for prompt in prompts:
            records.append(target.request(prompt))
            bar.update()
    return _finish(records, clock, settings)


def run_threads(
    target: SyncTarget,
    prompts: Sequence[str],
    *,
    max_concurrency: int,
    warmup: int = 0,
    progress: bool = False,
) -> RunResult:
    """Send the prompts through LangChain's ``batch`` (a thread pool of ``max_concurrency``)."""
    _check_prompts(prompts, warmup)
    _check_positive("max_concurrency", max_concurrency)
    config = {"max_concurrency": max_concurrency}
    settings = _settings("threads", target, len(prompts), warmup, concurrency=max_concurrency)
    with _bar(len(prompts), settings, progress) as bar:

        def send(prompt: str) -> RequestRecord:
            record = target.request(prompt)
            bar.update()
            return record

        if warmup:
            RunnableLambda(target.request).batch(_warmup_prompts(prompts, warmup), config=config)
        with _Clock() as clock:
            records = RunnableLambda(send).batch(list(prompts), config=config)
    return _finish(records, clock, settings)


async def run_closed_loop(
    target: AsyncTarget,
    prompts: Sequence[str],
    *,
    concurrency: int,
    warmup: int = 0,
    progress: bool = False,
) -> RunResult:
    """Keep ``concurrency`` requests in flight until every prompt is sent (asyncio workers)."""
    _check_prompts(prompts, warmup)
    _check_positive("concurrency", concurrency)
    if warmup:
        await _closed_loop(target, _warmup_prompts(prompts, warmup), concurrency, None)
    settings = _settings("closed", target, len(prompts), warmup, concurrency=concurrency)
    with _bar(len(prompts), settings, progress) as bar, _Clock() as clock:
        records = await _closed_loop(target, prompts, concurrency, bar)
    return _finish(records, clock, settings)


async def run_open_loop(
    target: AsyncTarget,
    prompts: Sequence[str],
    *,
    rate: float,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    seed: int = 0,
    warmup: int = 0,
    progress: bool = False,
) -> RunResult:
    """Send at ``rate`` requests/s on average, whether or not earlier ones have finished.

    Gaps between sends follow a gamma distribution of shape ``burstiness`` and mean ``1/rate``
    (burstiness 1: Poisson arrivals; below 1: burstier; above 1: steadier). ``max_concurrency``
    caps the requests in flight (later arrivals wait for a slot), as in ``vllm bench serve``.
    """
    _check_prompts(prompts, warmup)
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests/s (or math.inf), got {rate}")
    _check_positive("burstiness", burstiness)
    if max_concurrency is not None:
        _check_positive("max_concurrency", max_concurrency)
    if warmup:
        await _closed_loop(target, _warmup_prompts(prompts, warmup), max_concurrency or warmup, None)
    offsets = arrival_offsets(len(prompts), rate, burstiness, seed)
    settings = _settings(
        "open",
        target,
        len(prompts),
        warmup,
        rate=rate,
        burstiness=burstiness,
        concurrency=max_concurrency,
        seed=seed,
    )
    with _bar(len(prompts), settings, progress) as bar, _Clock() as clock:
        records = await _open_loop(target, prompts, offsets, clock.start, max_concurrency, bar)
    return _finish(records, clock, settings)


def arrival_offsets(count: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Send times (s from start) of ``count`` requests: gamma gaps, first request at 0.

    >>> arrival_offsets(3, math.inf).tolist()
    [0.0, 0.0, 0.0]
    """
    if math.isinf(rate) or count == 0:
        return np.zeros(count)
    gaps = np.random.default_rng(seed).gamma(burstiness, 1.0 / (rate * burstiness), count - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


async def _closed_loop(
    target: AsyncTarget, prompts: Sequence[str], concurrency: int, bar: Any
) -> list[RequestRecord]:
    records: list[RequestRecord | None] = [None] * len(prompts)
    pending = iter(range(len(prompts)))

    async def worker() -> None:
        for i in pending:
            records[i] = await target.arequest(prompts[i])
            if bar is not None:
                bar.update()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(prompts)))))
    return records  # type: ignore[return-value]  # every slot was filled


async def _open_loop(
    target: AsyncTarget,
    prompts: Sequence[str],
    offsets: Sequence[float],
    start: float,
    max_concurrency: int | None,
    bar: Any,
) -> list[RequestRecord]:
    """Send prompt ``k`` at ``start + offsets[k]`` (``perf_counter`` seconds), at most
    ``max_concurrency`` in flight; each record's client queue time is from its arrival to its send."""
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def send(prompt: str, arrival: float) -> RequestRecord:
        if slots is None:
            record = await target.arequest(prompt)
        else:
            async with slots:
                record = await target.arequest(prompt)
        record.client_queue_s = record.start_s - arrival
        if bar is not None:
            bar.update()
        return record

    # A task group: cancelled while it sleeps until the next arrival, the run also cancels the
    # requests already sent instead of leaving them running on the loop.
    async with asyncio.TaskGroup() as group:
        tasks = []
        for prompt, offset in zip(prompts, offsets, strict=True):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(group.create_task(send(prompt, time.perf_counter())))
    return [task.result() for task in tasks]


class _Clock:
    """Wall time and this process's CPU time over a ``with`` block."""

    def __enter__(self) -> _Clock:
        self.cpu_start = time.process_time()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = time.perf_counter()
        self.cpu_s = time.process_time() - self.cpu_start


def _finish(records: Sequence[RequestRecord], clock: _Clock, settings: dict) -> RunResult:
    """Times from the run start. A request the generator gave no arrival time to (serial, threads,
    closed loop) arrived at the start, as with ``vllm bench serve --request-rate inf``: its client
    queue time is how long it waited for a free slot."""
    for record in records:
        if record.client_queue_s is None:
            record.client_queue_s = max(record.start_s - clock.start, 0.0)
    shifted = [record.shifted(clock.start, index=i) for i, record in enumerate(records)]
    return RunResult(shifted, duration_s=clock.end - clock.start, cpu_s=clock.cpu_s, settings=settings)


def _settings(generator: str, target: Any, requests: int, warmup: int, **load: Any) -> dict:
    settings = {
        "generator": generator,
        "path": getattr(target, "path", type(target).__name__),
        "stream": bool(getattr(target, "stream", False)),
        "requests": requests,
        "warmup": warmup,
    }
    settings.update({k: v for k, v in load.items() if v is not None})
    return settings


def _bar(total: int, settings: dict, progress: bool) -> tqdm:
    label = settings["generator"]
    if "rate" in settings:
        label += f" {settings['rate']:g} req/s"
    elif "concurrency" in settings:
        label += f" c={settings['concurrency']}"
    return tqdm(total=total, desc=label, unit="req", disable=not progress, leave=False)


def _warmup_prompts(prompts: Sequence[str], warmup: int) -> list[str]:
    return [prompts[i % len(prompts)] for i in range(warmup)]


def _check_prompts(prompts: Sequence[str], warmup: int) -> None:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string: pass [prompt]")
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
