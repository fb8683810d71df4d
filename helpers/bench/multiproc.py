"""Load from several client processes, merged into one run on one clock.

One Python process reads at most one core's worth of SSE chunks; past that the client, not the
server, is what a benchmark measures. :func:`run_closed_loop_processes` and
:func:`run_open_loop_processes` start ``processes`` local processes (``multiprocessing``, spawn),
each with its own event loop and its own target built by ``target_factory`` in the child, and merge
their records into one :class:`RunResult` as if one client had sent them.

* **Target**: ``target_factory`` is a picklable zero-argument callable returning an async target,
  e.g. ``functools.partial(LeanClient, base_url, model, max_tokens=128)`` or
  ``functools.partial(langchain_target, base_url, model, stream=True)``.
* **Closed loop**: the concurrency is split ``C // N`` per process, the remainder one each to the
  first processes; prompts are dealt out in proportion to each process's concurrency, interleaved
  (equal shares: prompt ``k`` goes to process ``k % N``).
* **Open loop**: the one-process arrival schedule (:func:`~helpers.bench.load.arrival_offsets`
  with the same rate, burstiness and seed) is dealt out: arrival ``k`` goes to process ``k % N``
  at its original offset, so the merged arrivals are the one-process schedule. A
  ``max_concurrency`` cap is split like the closed loop's concurrency, i.e. it caps each process,
  not the whole (one process may queue while another has a free slot).
* **One clock**: each child warms up (``warmup`` split like the concurrency), then waits at a
  barrier; the parent sends one start time and every child starts sending at it. Records use
  ``time.perf_counter()``, which on Linux is ``CLOCK_MONOTONIC``, one clock for every process on
  the machine, so the merged times need no alignment. Times are shifted to that shared start.
* **Merged**: records come back in prompt order, each with its original index; ``cpu_s`` is the
  sum of the children's CPU over the run; ``settings`` say ``processes=N``.
* **Errors**: a target turns a failed request into a record (``ok=False``), so a child only fails
  on a bug (a factory that raises, an import error, a crash). Then the run fails: the other
  children are stopped and :class:`LoadProcessError` carries the child's number, its exit code
  and its traceback. A run with a dead load process measured less load than it says, so no
  partial result is returned.
* **Cancellation**: Ctrl-C (or any exception in the parent) terminates the children and waits for
  them; children ignore SIGINT so that the parent decides, and each exits by itself if the parent
  dies without cleaning up (parent-pid poll), so none is left behind.

``engine="ray"`` runs each load process as a Ray actor instead, on this machine or on a cluster's
(:mod:`helpers.bench.ray_load`: one wall-clock start, accurate across machines to their NTP skew).

Example::

    from functools import partial
    from helpers.bench import LeanClient, summarize
    from helpers.bench.multiproc import run_closed_loop_processes

    factory = partial(LeanClient, server.base_url, server.model, max_tokens=128)
    run = run_closed_loop_processes(factory, prompts, concurrency=64, processes=2)
    summarize(run)["output_throughput"]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from helpers.bench.load import arrival_offsets
from helpers.bench.records import RequestRecord, RunResult, describe_settings
from helpers.bench.shares import LoadProcessError, Share, ShareRun, TargetFactory, prepare_share, send_share
from helpers.bench.targets import AsyncTarget

Engine = Literal["local", "ray"]
ENGINES = ("local", "ray")
START_MARGIN_S = 0.05  # the shared start is this far after the last child is ready
STOP_TIMEOUT_S = 5.0


def langchain_target(
    base_url: str, model: str, *, api_key: str | None = None, stream: bool = True, **model_options: Any
) -> AsyncTarget:
    """A :class:`~helpers.bench.targets.LangChainTarget` on ``make_chat_model``, built in the child.

    ``model_options`` go to ``make_chat_model`` (``thinking``, ``max_tokens``, ``max_retries``...).
    Use it through ``functools.partial(langchain_target, base_url, model, ...)``.
    """
    from helpers.bench.targets import LangChainTarget
    from helpers.chat import make_chat_model
    from helpers.endpoint import Endpoint

    endpoint = Endpoint(base_url, model, **({"api_key": api_key} if api_key else {}))
    return LangChainTarget(make_chat_model(endpoint=endpoint, **model_options), stream=stream)


def run_closed_loop_processes(
    target_factory: TargetFactory,
    prompts: Sequence[str],
    *,
    concurrency: int,
    processes: int,
    warmup: int = 0,
    engine: Engine = "local",
    ray_address: str | None = None,
) -> RunResult:
    """:func:`~helpers.bench.load.run_closed_loop` from ``processes`` processes, merged.

    ``concurrency`` is the total in flight (at least one per process); ``warmup`` the total of
    uncounted requests, split like the concurrency. ``engine="ray"``: each load process is a Ray
    actor (on the cluster at ``ray_address``, else a local Ray), see :mod:`helpers.bench.ray_load`.
    """
    _check(prompts, processes, warmup, engine)
    if concurrency < processes:
        raise ValueError(
            f"concurrency {concurrency} < processes {processes}: every process needs at least one "
            "request in flight; use fewer processes"
        )
    slots = split_evenly(concurrency, processes)
    owners = deal(len(prompts), slots)
    warmups = split_evenly(warmup, processes)
    shares = [
        Share(list(owners[i]), [prompts[k] for k in owners[i]], warmups[i], slots[i])
        for i in range(processes)
    ]
    settings = {"generator": "closed", "concurrency": concurrency}
    return _run(target_factory, shares, settings, len(prompts), warmup, engine, ray_address)


def run_open_loop_processes(
    target_factory: TargetFactory,
    prompts: Sequence[str],
    *,
    rate: float,
    processes: int,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    seed: int = 0,
    warmup: int = 0,
    engine: Engine = "local",
    ray_address: str | None = None,
) -> RunResult:
    """:func:`~helpers.bench.load.run_open_loop` from ``processes`` processes, merged.

    The arrivals are the one-process schedule of ``rate``/``burstiness``/``seed``, arrival ``k``
    sent by process ``k % processes``; ``max_concurrency`` caps each process at its share;
    ``engine`` and ``ray_address`` as in :func:`run_closed_loop_processes`.
    """
    _check(prompts, processes, warmup, engine)
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests/s (or math.inf), got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    caps: list[int | None] = [None] * processes
    if max_concurrency is not None:
        if max_concurrency < processes:
            raise ValueError(
                f"max_concurrency {max_concurrency} < processes {processes}: each process needs a slot"
            )
        caps = list(split_evenly(max_concurrency, processes))
    offsets = arrival_offsets(len(prompts), rate, burstiness, seed)
    warmups = split_evenly(warmup, processes)
    shares = []
    for i in range(processes):
        mine = list(range(i, len(prompts), processes))
        shares.append(
            Share(mine, [prompts[k] for k in mine], warmups[i], caps[i], [float(offsets[k]) for k in mine])
        )
    settings: dict[str, Any] = {"generator": "open", "rate": rate, "burstiness": burstiness, "seed": seed}
    if max_concurrency is not None:
        settings["concurrency"] = max_concurrency
    return _run(target_factory, shares, settings, len(prompts), warmup, engine, ray_address)


def split_evenly(total: int, parts: int) -> list[int]:
    """``total // parts`` each, the remainder one each to the first parts.

    >>> split_evenly(7, 3)
    [3, 2, 2]
    """
    return [total // parts + (i < total % parts) for i in range(parts)]


def deal(count: int, weights: Sequence[int]) -> list[list[int]]:
    """Deal ``count`` items to parts in proportion to ``weights``, interleaved.

    Each item goes to the part that would then have the fewest items per unit of weight (the
    first on ties).

    >>> deal(5, [1, 1])
    [[0, 2, 4], [1, 3]]
    >>> deal(5, [2, 1])
    [[0, 1, 3, 4], [2]]
    """
    owners: list[list[int]] = [[] for _ in weights]
    for k in range(count):
        part = min(range(len(weights)), key=lambda i: ((len(owners[i]) + 1) / weights[i], i))
        owners[part].append(k)
    return owners


def _check(prompts: Sequence[str], processes: int, warmup: int, engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string: pass [prompt]")
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if len(prompts) < processes:
        raise ValueError(f"{len(prompts)} prompts for {processes} processes: give at least one prompt each")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def _check_picklable(factory: TargetFactory) -> None:
    try:
        pickle.dumps(factory)
    except Exception as error:
        raise TypeError(
            f"target_factory must be picklable to reach the load processes ({error}): use "
            "functools.partial(LeanClient, base_url, model, ...) or a module-level function, "
            "not a lambda or a local function"
        ) from None


def _run(
    factory: TargetFactory,
    shares: list[Share],
    load: dict[str, Any],
    requests: int,
    warmup: int,
    engine: Engine,
    ray_address: str | None,
) -> RunResult:
    _check_picklable(factory)
    if engine == "ray":
        from helpers.bench.ray_load import run_on_ray

        runs = run_on_ray(factory, shares, ray_address)
    else:
        runs = _run_local(factory, shares)
    return _merge(runs, shares, {**load, "engine": engine}, requests, warmup)


def _run_local(factory: TargetFactory, shares: list[Share]) -> list[ShareRun]:
    """Each share in a spawned process; one start on the machine's CLOCK_MONOTONIC."""
    children = _start_children(factory, shares)
    try:
        for i, (process, conn) in enumerate(children):
            _expect(process, conn, i, "ready")
        start = time.perf_counter() + START_MARGIN_S
        for _, conn in children:
            conn.send(("go", start))
        runs: list[ShareRun] = [None] * len(children)  # type: ignore[list-item]
        waiting = {conn: i for i, (_, conn) in enumerate(children)}
        while waiting:
            for conn in wait(list(waiting)):
                i = waiting.pop(conn)  # type: ignore[call-overload]
                runs[i] = _expect(children[i][0], conn, i, "done")
    finally:
        _stop(children)
    return runs


def _start_children(
    factory: TargetFactory, shares: list[Share]
) -> list[tuple[multiprocessing.process.BaseProcess, Connection]]:
    context = multiprocessing.get_context("spawn")
    children = []
    try:
        for share in shares:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_child_main,
                args=(child_end, factory, share, os.getpid()),
                name=f"bench-load-{len(children)}",
                daemon=True,
            )
            process.start()
            child_end.close()
            children.append((process, parent_end))
    except BaseException:
        _stop(children)
        raise
    return children


def _expect(child: multiprocessing.process.BaseProcess, conn: Connection, number: int, kind: str) -> Any:
    """The next message of a child, which must be ``kind``; its error or death raises."""
    try:
        message = conn.recv()
    except EOFError:
        raise LoadProcessError(number, _death(child)) from None
    if message[0] == "error":
        raise LoadProcessError(number, message[1])
    if message[0] != kind:
        raise LoadProcessError(number, f"sent {message[0]!r} instead of {kind!r}")
    return message[1]


def _death(child: multiprocessing.process.BaseProcess) -> str:
    """Why a child that closed its pipe without a word is gone."""
    child.join(STOP_TIMEOUT_S)
    code = child.exitcode
    if code is not None and code < 0:
        return f"it was killed by {signal.Signals(-code).name}, without a word"
    return (
        f"it exited without a word (exit code {code}; its traceback, if any, is on stderr; a "
        'script that starts load processes without an `if __name__ == "__main__":` guard ends so)'
    )


def _stop(children: list[tuple[multiprocessing.process.BaseProcess, Connection]]) -> None:
    """Terminate the children still running (SIGTERM, then SIGKILL) and wait for each."""
    for process, conn in children:
        conn.close()
        if process.is_alive():
            process.terminate()
    for process, _ in children:
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()


def _merge(
    runs: list[ShareRun], shares: list[Share], load: dict[str, Any], requests: int, warmup: int
) -> RunResult:
    merged: list[RequestRecord | None] = [None] * requests
    for run, share in zip(runs, shares, strict=True):
        for index, record in zip(share.indices, run.records, strict=True):
            merged[index] = replace(record, index=index)
    settings = {
        "generator": load["generator"],
        "path": runs[0].path,
        "stream": runs[0].stream,
        "requests": requests,
        "warmup": warmup,
        **{k: v for k, v in load.items() if k not in ("generator", "engine")},
        "processes": len(runs),
        "engine": load["engine"],
        "process_concurrency": ",".join(str(s.concurrency) for s in shares if s.concurrency is not None),
    }
    if not settings["process_concurrency"]:
        del settings["process_concurrency"]
    return RunResult(
        merged,  # type: ignore[arg-type]  # every index is in exactly one share
        duration_s=max(run.end_s for run in runs),
        cpu_s=sum(run.cpu_s for run in runs),
        settings=settings,
        label=f"{describe_settings(settings)}, {len(runs)} processes",
    )


def _child_main(conn: Connection, factory: TargetFactory, share: Share, parent_pid: int) -> None:
    """A load process: build the target, warm up, wait for the start, send, report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    _exit_with_parent(parent_pid)
    try:
        run = asyncio.run(_child_load(conn, factory, share))
        conn.send(("done", run))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


async def _child_load(conn: Connection, factory: TargetFactory, share: Share) -> ShareRun:
    target = await prepare_share(factory, share)
    conn.send(("ready", None))
    message = await asyncio.to_thread(conn.recv)
    if message[0] != "go":
        raise RuntimeError(f"expected 'go' from the parent, got {message[0]!r}")
    return await send_share(target, share, message[1])


def _exit_with_parent(parent_pid: int) -> None:
    """Exit as soon as the parent is gone, even if it was killed before it could stop us."""

    def poll() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=poll, name="bench-parent-watch", daemon=True).start()


__all__ = [
    "LoadProcessError",
    "deal",
    "langchain_target",
    "run_closed_loop_processes",
    "run_open_loop_processes",
    "split_evenly",
]
