"""Load from several processes (``helpers.bench.multiproc``): one run, one clock, nothing left behind.

The load processes are real (spawned) and send to the simulator; what each one sent is noted by
the target itself (:class:`LoggedClient`, a file per process), so the merge is checked against
what really happened. The failure tests use a target that never answers: a run that did not stop
its other processes would hang until the test times out.
"""

from __future__ import annotations

import asyncio
import doctest
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest

from helpers.bench import multiproc
from helpers.bench.lean_client import LeanClient
from helpers.bench.load import arrival_offsets
from helpers.bench.metrics import summarize
from helpers.bench.multiproc import LoadProcessError, run_closed_loop_processes, run_open_loop_processes
from helpers.bench.records import RequestRecord
from helpers.sim import serve

NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


class LoggedClient(LeanClient):
    """The lean client, appending each prompt it sends to ``log_dir/<its pid>``."""

    def __init__(self, log_dir: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log = Path(log_dir) / str(os.getpid())

    async def arequest(self, prompt: str) -> RequestRecord:
        with self.log.open("a") as log:
            log.write(prompt + "\n")
        return await super().arequest(prompt)


class NeverAnswers:
    """A target whose requests take ten minutes; logs its prompts like :class:`LoggedClient`."""

    path = "never"

    def __init__(self, log_dir: str) -> None:
        self.log = Path(log_dir) / str(os.getpid())

    async def arequest(self, prompt: str) -> RequestRecord:
        with self.log.open("a") as log:
            log.write(prompt + "\n")
        await asyncio.sleep(600)
        raise AssertionError("unreachable: the test stops this process first")


def broken_factory() -> LeanClient:
    raise RuntimeError("no target in this process")


def sent(log_dir: Path) -> dict[int, list[str]]:
    """What each load process sent, by pid, in order.

    A process that has opened its log but not yet written its first line is left out: the file
    exists (empty) between the ``open`` and the write.
    """
    logs = {int(path.name): path.read_text().splitlines() for path in log_dir.iterdir()}
    return {pid: prompts_sent for pid, prompts_sent in logs.items() if prompts_sent}


def load_processes() -> list[psutil.Process]:
    """Spawned multiprocessing children of this process still alive (not the resource tracker)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def words(count: int) -> str:
    """A prompt ``count`` words long: each prompt has its own prompt-token count."""
    return " ".join(["word"] * count)


@pytest.fixture(scope="module")
def sim():
    with serve(profile="l4", time_scale=5.0) as server:
        yield server


def logged(sim, log_dir: Path, **options) -> partial:
    options = {"max_tokens": 16, "extra_body": NO_THINKING, **options}
    return partial(LoggedClient, str(log_dir), sim.base_url, sim.model, **options)


@pytest.mark.server
def test_closed_loop_from_two_processes_is_one_run_on_one_clock(sim, tmp_path):
    prompts = [words(k + 1) for k in range(12)]
    run = run_closed_loop_processes(logged(sim, tmp_path), prompts, concurrency=4, processes=2, warmup=2)
    records = run.records
    assert [r.index for r in records] == list(range(12))
    assert all(r.ok for r in records), [r.error for r in records]
    tokens = [r.prompt_tokens for r in records]
    assert tokens == sorted(set(tokens)), "record k must be prompt k's (prompt tokens grow with k)"
    by_process = sent(tmp_path)
    assert len(by_process) == 2 and os.getpid() not in by_process
    everything = [prompt for prompts_sent in by_process.values() for prompt in prompts_sent]
    assert Counter(everything) == Counter(prompts) + Counter(prompts[:2])  # + one warm-up each
    # one clock: every process starts at the shared start, times from it, and they overlap
    spans = []
    for prompts_sent in by_process.values():
        mine = [records[prompts.index(p)] for p in prompts_sent[1:]]  # the first was the warm-up
        spans.append((min(r.start_s for r in mine), max(r.end_s for r in mine)))
    assert all(start >= 0 for start, _ in spans)
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, f"the processes ran one after the other: {spans}"
    assert run.duration_s >= max(r.end_s for r in records)
    assert run.cpu_s > 0
    assert summarize(run)["completed"] == 12
    assert run.settings == {
        "generator": "closed", "path": "lean", "stream": True, "requests": 12, "warmup": 2,
        "concurrency": 4, "processes": 2, "engine": "local", "process_concurrency": "2,2",
    }  # fmt: skip
    assert run.label == "closed c=4, 2 processes"


@pytest.mark.server
def test_open_loop_from_two_processes_keeps_the_one_process_schedule(sim, tmp_path):
    rate, count = 2.5, 8
    prompts = [words(k + 1) for k in range(count)]
    run = run_open_loop_processes(logged(sim, tmp_path), prompts, rate=rate, seed=3, processes=2)
    records = run.records
    assert all(r.ok for r in records), [r.error for r in records]
    by_process = sorted(sent(tmp_path).values(), key=lambda prompts_sent: prompts.index(prompts_sent[0]))
    assert by_process == [prompts[0::2], prompts[1::2]]  # arrival k from process k % 2
    offsets = arrival_offsets(count, rate, seed=3)
    arrivals = np.array([r.start_s - r.client_queue_s for r in records])
    starts = np.array([r.start_s for r in records])
    assert np.all(arrivals >= offsets - 1e-3)  # never early, late by less than half a mean gap
    assert np.all(arrivals - offsets < 0.5 / rate)
    assert np.all(starts >= arrivals) and np.all(starts >= offsets - 1e-3)
    assert run.settings["processes"] == 2 and "process_concurrency" not in run.settings
    assert (run.settings["rate"], run.settings["seed"], run.settings["generator"]) == (rate, 3, "open")


@pytest.mark.server
def test_open_loop_cap_is_split_over_the_processes(sim, tmp_path):
    prompts = [words(k + 1) for k in range(6)]
    run = run_open_loop_processes(
        logged(sim, tmp_path), prompts, rate=float("inf"), max_concurrency=2, processes=2
    )
    assert run.completed == 6
    assert summarize(run)["max_concurrent_requests"] <= 2
    assert run.settings["concurrency"] == 2 and run.settings["process_concurrency"] == "1,1"


@pytest.mark.server
def test_a_factory_that_raises_fails_the_run_with_its_traceback_and_stops_every_process():
    with pytest.raises(LoadProcessError, match="load process 0 failed") as failure:
        run_closed_loop_processes(broken_factory, ["p"] * 4, concurrency=2, processes=2)
    assert failure.value.process == 0
    assert "Traceback" in str(failure.value) and "no target in this process" in str(failure.value)
    assert load_processes() == []


@pytest.mark.server
def test_a_load_process_killed_mid_run_fails_the_run_and_the_others_are_stopped(tmp_path):
    prompts = ["p0", "p1", "p2", "p3"]
    factory = partial(NeverAnswers, str(tmp_path))
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_closed_loop_processes, factory, prompts, concurrency=2, processes=2)
        try:
            deadline = time.monotonic() + 120
            while len(sent(tmp_path)) < 2 and not run.done():  # both processes are sending
                assert time.monotonic() < deadline, "the load processes never started sending"
                time.sleep(0.05)
            senders = {prompts_sent[0]: pid for pid, prompts_sent in sent(tmp_path).items()}
            os.kill(senders["p1"], signal.SIGKILL)
            with pytest.raises(LoadProcessError, match=r"load process 1 failed.*killed by SIGKILL"):
                run.result(timeout=120)
            assert load_processes() == []  # process 0, mid-request, was stopped too
        finally:  # if a check above failed, the run waits on requests that never end: end it
            for process in load_processes():
                process.kill()


def test_sent_leaves_out_a_log_opened_but_not_yet_written(tmp_path):
    # the CI race of 2026-12-02: a process's log existed, empty, and the killed-mid-run test read
    # its first prompt from it (IndexError), then hung on a run nobody stopped
    (tmp_path / "101").write_text("p0\n")
    (tmp_path / "102").touch()
    assert sent(tmp_path) == {101: ["p0"]}


def test_bad_arguments_are_clear_errors():
    factory = partial(LeanClient, "http://127.0.0.1:9/v1", "m")
    with pytest.raises(ValueError, match="concurrency 1 < processes 2"):
        run_closed_loop_processes(factory, ["p"] * 4, concurrency=1, processes=2)
    with pytest.raises(ValueError, match="1 prompts for 2 processes"):
        run_closed_loop_processes(factory, ["p"], concurrency=2, processes=2)
    with pytest.raises(TypeError, match="list of strings"):
        run_closed_loop_processes(factory, "one prompt", concurrency=2, processes=2)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        run_closed_loop_processes(factory, ["p"], concurrency=2, processes=0)
    with pytest.raises(ValueError, match="rate must be > 0"):
        run_open_loop_processes(factory, ["p"] * 2, rate=0, processes=2)
    with pytest.raises(ValueError, match="max_concurrency 1 < processes 2"):
        run_open_loop_processes(factory, ["p"] * 2, rate=1.0, max_concurrency=1, processes=2)
    with pytest.raises(TypeError, match=r"picklable.*functools\.partial"):
        run_closed_loop_processes(lambda: factory(), ["p"] * 2, concurrency=2, processes=2)
    assert load_processes() == []


def test_the_doctests_of_the_splits_run():
    results = doctest.testmod(multiproc)
    assert results.attempted >= 3 and results.failed == 0


def test_an_unknown_engine_is_a_clear_error():
    factory = partial(LeanClient, "http://127.0.0.1:9/v1", "m")
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray'"):
        run_closed_loop_processes(factory, ["p"] * 2, concurrency=2, processes=2, engine="dask")
