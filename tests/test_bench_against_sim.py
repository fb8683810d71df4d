"""Every load generator and both request paths against the simulator (instant profile: fast)."""

from __future__ import annotations

import math

import pytest

from helpers.bench.lean_client import LeanClient
from helpers.bench.load import run_closed_loop, run_open_loop, run_serial, run_threads
from helpers.bench.metrics import SLO, summarize
from helpers.bench.results import collect_metadata
from helpers.bench.sweep import ideal_frame, sweep_concurrency
from helpers.bench.targets import LangChainTarget
from helpers.chat import make_chat_model
from helpers.endpoint import Endpoint
from helpers.sim import serve

PROMPTS = ["你是谁?", "Name three classic books on programming."] * 4
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def sim():
    with serve(profile="instant", think_tokens_mean=24, answer_tokens_mean=16) as server:
        yield server


@pytest.fixture(scope="module")
def faulty_sim():
    with serve(profile="instant", fail_rate=0.5, disconnect_rate=0.25, fault_seed=1) as server:
        yield server


def lean(server, **kwargs) -> LeanClient:
    return LeanClient(server.base_url, server.model, **kwargs)


def model(server, thinking=False, max_tokens=64):
    endpoint = Endpoint(server.base_url, server.model, kind="simulator")
    return make_chat_model(thinking, endpoint, max_tokens=max_tokens, max_retries=0)


@pytest.mark.server
async def test_lean_closed_loop_with_thinking_measures_the_answer_after_the_reasoning(sim):
    run = await run_closed_loop(lean(sim, max_tokens=512), PROMPTS, concurrency=4, warmup=2)
    assert run.completed == len(PROMPTS), [r.error for r in run.records]
    for record in run.records:
        assert record.reasoning_tokens and record.reasoning_tokens > 0
        assert record.output_tokens > record.reasoning_tokens
        assert record.chunks >= record.output_tokens - 2  # about one event per token
        # never before the reasoning; equal when both arrive in one read (a loaded machine, `instant`)
        assert record.ttft_s <= record.ttfa_s <= record.latency_s
    assert summarize(run)["max_concurrent_requests"] <= 4


@pytest.mark.server
async def test_lean_ignore_eos_gives_exactly_max_tokens(sim):
    client = lean(sim, max_tokens=40, extra_body={"ignore_eos": True, **NO_THINKING})
    run = await run_closed_loop(client, PROMPTS, concurrency=8)
    assert {r.output_tokens for r in run.records} == {40}
    assert all(r.ttfa_s == r.ttft_s or r.ttfa_s > r.ttft_s for r in run.records)
    summary = summarize(run, SLO(ttft_s=10, tpot_s=10))
    assert summary["good_requests"] == len(PROMPTS)
    assert summary["total_output_tokens"] == 40 * len(PROMPTS)


@pytest.mark.server
async def test_lean_open_loop_and_non_streamed(sim):
    streamed = await run_open_loop(lean(sim, max_tokens=16), PROMPTS, rate=200.0, seed=2)
    assert streamed.completed == len(PROMPTS) and streamed.settings["rate"] == 200.0
    plain = await run_open_loop(lean(sim, max_tokens=16, stream=False), PROMPTS, rate=math.inf)
    assert plain.completed == len(PROMPTS)
    assert all(r.ttft_s is None and r.output_tokens for r in plain.records)


@pytest.mark.server
def test_langchain_serial_and_threads(sim):
    serial = run_serial(LangChainTarget(model(sim)), PROMPTS[:3], warmup=1)
    assert serial.completed == 3 and summarize(serial)["max_concurrent_requests"] == 1
    threads = run_threads(LangChainTarget(model(sim), stream=True), PROMPTS, max_concurrency=4)
    assert threads.completed == len(PROMPTS)
    assert all(r.ttft_s is not None and r.output_tokens for r in threads.records)


@pytest.mark.server
async def test_langchain_async_stream_with_thinking_finds_the_answer(sim):
    target = LangChainTarget(model(sim, thinking=True, max_tokens=512), stream=True)
    run = await run_closed_loop(target, PROMPTS, concurrency=4)
    assert run.completed == len(PROMPTS), [r.error for r in run.records]
    assert all(r.ttft_s <= r.ttfa_s and r.reasoning_tokens for r in run.records)


@pytest.mark.server
async def test_faults_are_counted_never_dropped(faulty_sim):
    run = await run_closed_loop(lean(faulty_sim, max_tokens=32), ["x"] * 20, concurrency=5)
    assert len(run.records) == 20 and run.failed > 0 and run.completed > 0
    errors = {r.error.split(":")[0] for r in run.records if not r.ok}
    assert errors <= {"HTTP 500", "HTTP 503", "stream ended without [DONE]", "RemoteProtocolError"}
    summary = summarize(run)
    assert summary["completed"] + summary["failed"] == 20
    langchain = await run_closed_loop(LangChainTarget(model(faulty_sim)), ["x"] * 10, concurrency=5)
    assert len(langchain.records) == 10 and langchain.failed > 0


@pytest.mark.server
async def test_sweep_and_metadata_name_the_simulator(sim):
    runs = await sweep_concurrency(lean(sim, max_tokens=8), PROMPTS, [1, 2])
    assert [run.settings["concurrency"] for run in runs] == [1, 2]
    metadata = collect_metadata(sim.base_url, sim.model, sim_profile="instant")
    assert metadata["server_kind"] == "simulator" and "0.32" in metadata["server_version"]


def test_ideal_frame_is_the_simulators_prediction():
    frame = ideal_frame("l4", [1, 32], prompt_tokens=256, output_tokens=128)
    assert list(frame["concurrency"]) == [1, 32]
    assert frame.loc[0, "ttft_ms"] == pytest.approx(27, abs=1)  # the L4 calibration point
    assert frame.loc[1, "output_throughput"] > 10 * frame.loc[0, "output_throughput"]


@pytest.mark.server
async def test_server_metrics_give_the_servers_own_view(sim):
    from helpers.server_metrics import histogram_mean, metrics_delta, scrape_metrics

    before = scrape_metrics(sim.root_url)
    run = await run_closed_loop(lean(sim, max_tokens=8, extra_body=NO_THINKING), PROMPTS, concurrency=4)
    change = metrics_delta(before, scrape_metrics(sim.root_url))
    assert change["vllm:time_to_first_token_seconds_count"] == run.completed == len(PROMPTS)
    assert histogram_mean(change, "vllm:time_to_first_token_seconds") >= 0
    assert math.isnan(histogram_mean(change, "no_such_histogram"))
