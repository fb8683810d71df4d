"""Load generators: how many requests are in flight, when they are sent, warm-up not counted.

The async generators drive the lean client over a mock transport that sleeps like a server and
counts what it receives; the sync and LangChain paths run against the firehose server process.
"""

from __future__ import annotations

import asyncio
import itertools
import math

import httpx
import numpy as np
import orjson
import pytest
from local_http import serve_handler, server_side_tasks

from helpers.bench.lean_client import LeanClient
from helpers.bench.load import (
    arrival_offsets,
    run_closed_loop,
    run_open_loop,
    run_serial,
    run_threads,
)
from helpers.bench.metrics import summarize
from helpers.bench.targets import LangChainTarget
from helpers.chat import make_chat_model
from helpers.endpoint import Endpoint
from kit_tools.firehose import serve_firehose

STREAM = b"".join(
    b"data: " + orjson.dumps({"choices": [{"delta": {"content": text}}]}) + b"\n\n" for text in ["", "a", "b"]
) + (b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3}}\n\ndata: [DONE]\n\n')


class SlowServer:
    """A mock transport: each request takes ``seconds``; tracks the peak in flight and prompts."""

    def __init__(self, seconds: float = 0.05, fail_on: str | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.in_flight = self.peak = 0
        self.prompts: list[str] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        prompt = orjson.loads(request.content)["messages"][0]["content"]
        self.prompts.append(prompt)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight -= 1
        if prompt == self.fail_on:
            return httpx.Response(500, json={"error": {"message": "engine died"}})
        return httpx.Response(200, content=STREAM)

    def client(self) -> LeanClient:
        return LeanClient(serve_handler(self.handler), "m")


async def test_closed_loop_keeps_n_in_flight_and_does_not_count_warmup():
    server = SlowServer(0.05)
    prompts = [f"p{i}" for i in range(12)]
    run = await run_closed_loop(server.client(), prompts, concurrency=4, warmup=3)
    assert server.prompts[:3] == ["p0", "p1", "p2"] and len(server.prompts) == 15
    assert server.peak == 4
    assert [r.index for r in run.records] == list(range(12))
    summary = summarize(run)
    assert summary["completed"] == 12 and summary["max_concurrent_requests"] == 4
    assert min(r.start_s for r in run.records) >= 0
    assert run.duration_s >= 0.15  # 3 waves of 50 ms (no upper bound: the machine may be slow)
    assert summary["output_throughput"] == pytest.approx(36 / run.duration_s)
    assert run.settings == {
        "generator": "closed", "path": "lean", "stream": True, "requests": 12, "warmup": 3,
        "concurrency": 4,
    }  # fmt: skip


async def test_failed_requests_keep_their_place():
    server = SlowServer(0.01, fail_on="p2")
    run = await run_closed_loop(server.client(), ["p0", "p1", "p2", "p3"], concurrency=2)
    assert [r.ok for r in run.records] == [True, True, False, True]
    assert run.records[2].error == "HTTP 500: engine died"
    assert (run.completed, run.failed) == (3, 1)


async def test_open_loop_at_infinite_rate_sends_everything_at_once():
    server = SlowServer(0.1)
    run = await run_open_loop(server.client(), [f"p{i}" for i in range(10)], rate=math.inf)
    assert server.peak == 10 and summarize(run)["max_concurrent_requests"] == 10
    assert max(r.start_s for r in run.records) < min(r.end_s for r in run.records)  # all sent first


async def test_open_loop_follows_the_arrival_schedule_and_its_cap():
    server = SlowServer(0.2)
    rate, count = 40.0, 12
    run = await run_open_loop(server.client(), ["p"] * count, rate=rate, seed=3, max_concurrency=3)
    assert server.peak == 3  # arrivals every ~25 ms, each takes 200 ms: the cap binds
    # the schedule: 6 arrivals 500 ms apart on average; each send is never early and late by
    # less than half a mean gap (what a loaded event loop may add stays far below that)
    slow_rate, sent = 2.0, 6
    uncapped = await run_open_loop(SlowServer(0.01).client(), ["p"] * sent, rate=slow_rate, seed=3)
    offsets = arrival_offsets(sent, slow_rate, seed=3)
    starts = np.array([r.start_s for r in uncapped.records])
    assert np.all(starts >= offsets - 1e-3)
    assert np.all(starts - offsets < 0.5 / slow_rate)
    assert run.settings["rate"] == rate and run.settings["burstiness"] == 1.0


def test_arrival_gaps_are_gamma_with_mean_one_over_rate():
    poisson = np.diff(arrival_offsets(20001, rate=10.0, burstiness=1.0, seed=1))
    assert poisson.mean() == pytest.approx(0.1, rel=0.03)
    assert poisson.std() / poisson.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV 1
    steady = np.diff(arrival_offsets(20001, rate=10.0, burstiness=4.0, seed=1))
    assert steady.mean() == pytest.approx(0.1, rel=0.03)
    assert steady.std() / steady.mean() == pytest.approx(0.5, rel=0.05)  # CV = 1/sqrt(shape)
    assert arrival_offsets(5, rate=2.0)[0] == 0.0


async def test_bad_load_settings_are_clear_errors():
    client = SlowServer().client()
    with pytest.raises(ValueError, match="concurrency must be > 0"):
        await run_closed_loop(client, ["p"], concurrency=0)
    with pytest.raises(ValueError, match="rate must be > 0"):
        await run_open_loop(client, ["p"], rate=0)
    with pytest.raises(TypeError, match="list of strings"):
        await run_closed_loop(client, "one prompt", concurrency=1)
    with pytest.raises(ValueError, match="empty"):
        await run_closed_loop(client, [], concurrency=1)


@pytest.fixture(scope="module")
def firehose():
    with serve_firehose(chunks=20) as server:
        yield server


@pytest.fixture(scope="module")
def firehose_model(firehose):
    return make_chat_model(thinking=False, endpoint=Endpoint(firehose.base_url, "firehose"), max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.server
def test_serial_sends_one_after_another(firehose_model, stream):
    run = run_serial(LangChainTarget(firehose_model, stream=stream), ["a"] * 5, warmup=1)
    records = run.records
    assert all(r.ok for r in records), [r.error for r in records]
    assert all(later.start_s >= earlier.end_s for earlier, later in itertools.pairwise(records))
    assert summarize(run)["max_concurrent_requests"] == 1
    assert all(r.output_tokens == 20 for r in records)
    assert all(r.client_queue_s == pytest.approx(r.start_s) for r in records)  # all there at t=0
    if stream:
        assert all(r.chunks == 21 and r.ttft_s <= r.ttfa_s <= r.latency_s for r in records)
    else:
        assert all(r.ttft_s is None and not r.streamed for r in records)


@pytest.mark.server
def test_threads_batch_records_every_prompt(firehose_model):
    run = run_threads(LangChainTarget(firehose_model), [f"p{i}" for i in range(8)], max_concurrency=4)
    assert [r.index for r in run.records] == list(range(8))
    assert run.completed == 8 and 1 <= summarize(run)["max_concurrent_requests"] <= 4
    assert run.label == "threads c=4"


@pytest.mark.server
async def test_langchain_async_stream_and_lean_client_agree_on_counts(firehose, firehose_model):
    langchain = await run_closed_loop(LangChainTarget(firehose_model, stream=True), ["p"] * 6, concurrency=3)
    lean = await run_closed_loop(LeanClient(firehose.base_url, "firehose"), ["p"] * 6, concurrency=3)
    for run in (langchain, lean):
        assert run.completed == 6
        assert {(r.chunks, r.output_tokens, len(r.itl_s)) for r in run.records} == {
            (21, 20, 20)
        }  # role chunk + 20 tokens


@pytest.mark.server
async def test_langchain_failure_is_a_record(firehose_model):
    broken = make_chat_model(endpoint=Endpoint("http://127.0.0.1:9/v1", "m"), max_retries=0, timeout=5)
    run = await run_closed_loop(LangChainTarget(broken), ["p", "q"], concurrency=2)
    assert run.failed == 2 and all("Connection" in r.error for r in run.records)


@pytest.mark.server
async def test_firehose_has_no_nagle_stall_on_kept_alive_connections(firehose):
    """Regression: with uvicorn's fd= option the accepted sockets kept Nagle on: 40 ms per reply."""
    client = LeanClient(firehose.base_url, "firehose")
    run = await run_closed_loop(client, ["p"] * 21, concurrency=1, warmup=1)
    assert run.completed == 21
    # the stall is a 40 ms timer on every reply; the fastest of 21 replies (a few ms) stays clear of
    # it on a loaded machine
    assert min(r.ttft_s for r in run.records) < 0.030


async def test_closed_loop_records_the_time_each_prompt_waited_for_a_slot():
    """As ``vllm bench serve --max-concurrency`` (rate inf): every prompt arrives at 0."""
    server = SlowServer(0.05)
    run = await run_closed_loop(server.client(), [f"p{i}" for i in range(6)], concurrency=2)
    records = run.records
    assert all(r.client_queue_s == pytest.approx(r.start_s) for r in records)
    first_free = min(r.end_s for r in records[:2])
    assert all(r.client_queue_s >= first_free for r in records[2:])  # waited for a slot
    assert summarize(run)["mean_client_queue_ms"] > 0


async def test_open_loop_queue_time_is_the_wait_for_the_concurrency_cap():
    server = SlowServer(0.05)
    run = await run_open_loop(server.client(), ["p"] * 3, rate=math.inf, max_concurrency=1)
    queued = [r.client_queue_s for r in run.records]
    assert all(0 <= q <= r.start_s + 1e-6 for q, r in zip(queued, run.records, strict=True))
    assert queued[2] >= run.records[0].latency_s  # waited for the two before it
    uncapped = await run_open_loop(SlowServer(0.05).client(), ["p"] * 3, rate=math.inf)
    assert max(r.client_queue_s for r in uncapped.records) < queued[2]


@pytest.mark.parametrize("generator", ["open", "closed"])
async def test_a_cancelled_run_leaves_no_request_running(generator):
    """Cancelled while waiting for the next arrival, the open loop must not orphan sent requests."""
    server = SlowServer(60.0)
    client = server.client()
    await asyncio.sleep(0)  # the local server task starts: not a request
    before = asyncio.all_tasks()
    if generator == "open":  # a mean gap of 1000 s: cancelled in the sleep after the first send
        load = run_open_loop(client, ["p"] * 3, rate=0.001, seed=0)
    else:
        load = run_closed_loop(client, ["p"] * 3, concurrency=2)
    task = asyncio.create_task(load)
    while server.in_flight == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before - server_side_tasks() == set()
    while server.in_flight:  # the server cancels a handler once it sees its client gone
        await asyncio.sleep(0.01)


def test_langchain_stream_without_usage_counts_its_chunks_and_says_so():
    from langchain_core.messages import AIMessageChunk

    from helpers.bench.targets import _StreamTimer

    timer = _StreamTimer(start=0.0)
    for content in ["", "a", "b", "c"]:  # the role chunk, then one chunk per token
        timer.observe(AIMessageChunk(content=content))
    record = timer.record()
    assert record.ok and record.chunks == 4
    assert record.output_tokens == 3 and record.tokens_from_chunks
    timer = _StreamTimer(start=0.0)
    timer.observe(AIMessageChunk(content="a"))
    usage = {"input_tokens": 1, "output_tokens": 7, "total_tokens": 8}
    timer.observe(AIMessageChunk(content="", usage_metadata=usage))
    assert timer.record().output_tokens == 7 and not timer.record().tokens_from_chunks
