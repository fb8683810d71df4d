"""The Ray engines against one local Ray: batch jobs (``helpers.batch``), load from Ray actors
(``helpers.bench.multiproc`` and the ``python -m helpers.bench`` command line).

Ray takes 10-15 s to start: every test that needs it is in this file, which pytest-xdist keeps on
one worker (``--dist loadfile``), so it starts once per run and stops when the file is done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers.batch import arun_batch, read_output
from helpers.bench.cli import main
from helpers.bench.lean_client import LeanClient
from helpers.bench.load import arrival_offsets
from helpers.bench.multiproc import LoadProcessError, run_closed_loop_processes, run_open_loop_processes
from helpers.endpoint import Endpoint
from helpers.ray_start import start_ray

pytestmark = [pytest.mark.server, pytest.mark.slow]

NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray with 2 CPUs, started as the kit's engines start one (they reuse a running one)."""
    pytest.importorskip("ray")
    ray = start_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def batch_line(custom_id: str, content: str, **params: Any) -> str:
    body = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": content}], **params}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def words(count: int) -> str:
    """A prompt ``count`` words long: each prompt has its own prompt-token count."""
    return " ".join(["word"] * count)


async def test_batch_ray_engine_with_two_local_workers(tmp_path: Path, local_ray: Any, shared_sim: Any):
    server = shared_sim(profile="instant", answer_tokens_mean=24, think_tokens_mean=16)
    endpoint = Endpoint(server.base_url, server.model, kind="simulator")
    lines = [batch_line(f"y{i}", f"ray item {i}", max_tokens=200, **NO_THINKING) for i in range(12)]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    summary = await arun_batch(inputs, output, engine="ray", workers=2, endpoint=endpoint, progress=False)
    records = read_output(output)
    assert set(records) == {f"y{i}" for i in range(12)} and summary.ok == 12 and summary.engine == "ray"
    assert all(r["response"]["status_code"] == 200 for r in records.values())


def test_load_ray_engine_runs_each_share_in_an_actor_on_one_clock(local_ray: Any, shared_sim: Any) -> None:
    sim = shared_sim(profile="l4", time_scale=5.0)
    factory = partial(LeanClient, sim.base_url, sim.model, max_tokens=16, extra_body=NO_THINKING)
    prompts = [words(k + 1) for k in range(8)]
    run = run_closed_loop_processes(factory, prompts, concurrency=4, processes=2, warmup=2, engine="ray")
    records = run.records
    assert [r.index for r in records] == list(range(8)) and run.completed == 8
    tokens = [r.prompt_tokens for r in records]
    assert tokens == sorted(set(tokens))
    spans = [
        (min(r.start_s for r in mine), max(r.end_s for r in mine)) for mine in (records[0::2], records[1::2])
    ]
    assert all(start >= 0 for start, _ in spans)
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, f"the actors ran one after the other: {spans}"
    assert run.duration_s >= max(r.end_s for r in records)
    assert (run.settings["engine"], run.settings["processes"]) == ("ray", 2)
    rate = 2.5
    run = run_open_loop_processes(factory, prompts, rate=rate, seed=3, processes=2, engine="ray")
    offsets = arrival_offsets(len(prompts), rate, seed=3)
    arrivals = np.array([r.start_s - r.client_queue_s for r in run.records])
    assert run.completed == 8
    assert np.all(arrivals >= offsets - 1e-3) and np.all(arrivals - offsets < 0.5 / rate)


def test_load_ray_engine_failure_names_the_process_and_frees_the_actors(local_ray: Any) -> None:
    factory = partial(LeanClient, "http://127.0.0.1:9/v1", "m", max_tokens=0)  # raises in both actors
    with pytest.raises(LoadProcessError, match=r"load process [01] failed(.|\n)*max_tokens must be >= 1"):
        run_closed_loop_processes(factory, ["p"] * 2, concurrency=2, processes=2, engine="ray")
    deadline = time.monotonic() + 60
    while local_ray.available_resources().get("CPU", 0) < 2:  # the actors were killed: their CPUs free
        assert time.monotonic() < deadline, local_ray.available_resources()
        time.sleep(0.1)


def test_cli_engine_ray_sends_from_ray_actors(
    tmp_path: Path, capsys: pytest.CaptureFixture, local_ray: Any
) -> None:
    code = main(
        ["--sim", "instant", "--engine", "ray", "--processes", "2", "--concurrency", "2", "--num-prompts",
         "4", "--max-tokens", "8", "--ignore-eos", "--name", "ray", "--results-dir", str(tmp_path),
         "--no-progress"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    summary = pd.read_csv(tmp_path / "ray_summary.csv")
    assert summary["engine"].tolist() == ["ray"] and summary["processes"].tolist() == [2]
    assert summary["completed"].tolist() == [4] and summary["total_output_tokens"].tolist() == [32]
