"""Sweeps: the same prompts at several concurrencies or request rates, and the simulator's ideal.

The ``*_processes`` sweeps send each run from several load processes
(:mod:`helpers.bench.multiproc`): they take a picklable factory of the target, not the target.

Example:
    >>> runs = await sweep_concurrency(client, prompts, [1, 4, 16, 64])   # doctest: +SKIP
    >>> factory = partial(LeanClient, url, model)                          # doctest: +SKIP
    >>> runs = sweep_concurrency_processes(factory, prompts, [4, 64], processes=2)  # doctest: +SKIP
    >>> ideal = ideal_frame("t4", [1, 4, 16, 64], prompt_tokens=20, output_tokens=128)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from tqdm.auto import tqdm

from helpers.bench.load import run_closed_loop, run_open_loop
from helpers.bench.multiproc import (
    Engine,
    TargetFactory,
    run_closed_loop_processes,
    run_open_loop_processes,
)
from helpers.bench.records import RunResult
from helpers.bench.targets import AsyncTarget


async def sweep_concurrency(
    target: AsyncTarget,
    prompts: Sequence[str],
    concurrencies: Sequence[int],
    *,
    warmup: int | None = None,
    progress: bool = False,
) -> list[RunResult]:
    """One closed-loop run per concurrency, in the order given.

    ``warmup`` uncounted requests precede each run (default: as many as the concurrency, which
    also opens every connection before the clock starts).
    """
    _check_points("concurrencies", concurrencies)
    runs = []
    for concurrency in tqdm(concurrencies, desc="sweep", unit="run", disable=not progress):
        runs.append(
            await run_closed_loop(
                target,
                prompts,
                concurrency=concurrency,
                warmup=concurrency if warmup is None else warmup,
                progress=progress,
            )
        )
    return runs


async def sweep_rates(
    target: AsyncTarget,
    prompts: Sequence[str],
    rates: Sequence[float],
    *,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    seed: int = 0,
    warmup: int = 1,
    progress: bool = False,
) -> list[RunResult]:
    """One open-loop run per request rate (req/s; ``math.inf`` sends everything at once)."""
    _check_points("rates", rates)
    runs = []
    for rate in tqdm(rates, desc="sweep", unit="run", disable=not progress):
        runs.append(
            await run_open_loop(
                target,
                prompts,
                rate=rate,
                burstiness=burstiness,
                max_concurrency=max_concurrency,
                seed=seed,
                warmup=warmup,
                progress=progress,
            )
        )
    return runs


def sweep_concurrency_processes(
    target_factory: TargetFactory,
    prompts: Sequence[str],
    concurrencies: Sequence[int],
    *,
    processes: int,
    warmup: int | None = None,
    engine: Engine = "local",
    ray_address: str | None = None,
    progress: bool = False,
) -> list[RunResult]:
    """:func:`sweep_concurrency` with each run sent from ``processes`` load processes.

    Each concurrency is the total in flight, split over the processes; each run starts its own
    processes (a few seconds of start-up each, not counted). ``engine``/``ray_address``: local
    processes or Ray actors (:func:`~helpers.bench.multiproc.run_closed_loop_processes`).
    """
    _check_points("concurrencies", concurrencies)
    return [
        run_closed_loop_processes(
            target_factory,
            prompts,
            concurrency=concurrency,
            processes=processes,
            warmup=concurrency if warmup is None else warmup,
            engine=engine,
            ray_address=ray_address,
        )
        for concurrency in tqdm(concurrencies, desc="sweep", unit="run", disable=not progress)
    ]


def sweep_rates_processes(
    target_factory: TargetFactory,
    prompts: Sequence[str],
    rates: Sequence[float],
    *,
    processes: int,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    seed: int = 0,
    warmup: int | None = None,
    engine: Engine = "local",
    ray_address: str | None = None,
    progress: bool = False,
) -> list[RunResult]:
    """:func:`sweep_rates` with each run sent from ``processes`` load processes (arrival ``k`` from
    process ``k % processes``; ``warmup`` defaults to one per process)."""
    _check_points("rates", rates)
    return [
        run_open_loop_processes(
            target_factory,
            prompts,
            rate=rate,
            processes=processes,
            burstiness=burstiness,
            max_concurrency=max_concurrency,
            seed=seed,
            warmup=processes if warmup is None else warmup,
            engine=engine,
            ray_address=ray_address,
        )
        for rate in tqdm(rates, desc="sweep", unit="run", disable=not progress)
    ]


def ideal_frame(
    profile: str,
    concurrencies: Sequence[int],
    *,
    prompt_tokens: int,
    output_tokens: int,
    time_scale: float = 1.0,
    max_num_seqs: int | None = None,
) -> pd.DataFrame:
    """The simulator's own prediction at each concurrency (``helpers.sim.predict``), for plots.

    Columns: ``concurrency``, ``request_throughput``, ``output_throughput``, ``ttft_ms``,
    ``itl_ms``, ``tpot_ms``, ``e2el_ms`` — what a client with no overhead would measure.
    """
    from helpers.sim import predict

    rows = []
    for concurrency in concurrencies:
        prediction = predict(
            profile=profile,
            concurrency=concurrency,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            time_scale=time_scale,
            max_num_seqs=max_num_seqs,
        )
        rows.append(
            {
                "concurrency": concurrency,
                "request_throughput": prediction.request_throughput,
                "output_throughput": prediction.output_throughput,
                "ttft_ms": 1000 * prediction.ttft_s,
                "itl_ms": 1000 * prediction.itl_s,
                "tpot_ms": 1000 * prediction.itl_s,
                "e2el_ms": 1000 * prediction.e2e_s,
            }
        )
    return pd.DataFrame(rows)


def _check_points(name: str, points: Sequence[float]) -> None:
    if isinstance(points, (int, float)) or not len(points):
        raise ValueError(f"{name} must be a non-empty list, e.g. [1, 4, 16]")
