"""helpers.concurrency.amap: first with a scripted LangChain chat model (exact control over every
attempt), then against the simulator over real HTTP with injected faults.

The same properties through the kit's model, larger and with latency spikes, are in
tests/test_resilience_*.py (fault matrix, server gone, kernel interrupt, checkpoint resume, soak);
the simulator tests here keep what plain ChatOpenAI adds (its SDK retries turned off by amap, its
error types) and what the scripted model cannot show (real sockets, pools, timeouts on HTTP).
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import psutil
import pytest
from comparisons import abatch_as_completed_progress, abatch_limited
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field

from helpers.chat import make_chat_model
from helpers.concurrency import BatchCancelled, amap, map_prompts
from helpers.endpoint import Endpoint
from helpers.outcomes import Outcome, outcomes_to_frame
from helpers.outcomes import summarize_outcomes as summarize
from helpers.retry import Backoff
from helpers.sim import SimServer, serve

FAST = Backoff(base_s=0.001, max_s=0.01, seed=0)
REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


def http_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers or {}, request=REQUEST)
    client = openai.AsyncOpenAI(api_key="EMPTY", base_url="http://127.0.0.1:1/v1")
    return client._make_status_error(f"Error code: {status}", body=None, response=response)


class ScriptedModel(BaseChatModel):
    """Answers ``prompt.upper()``; ``script[prompt]`` lists what the next attempts do first.

    An item is an exception to raise, ``"hang"`` (sleep far beyond any timeout) or ``"cut"``
    (stream two chunks, then end without a finish_reason). ``delays[prompt]`` delays the answer;
    ``gates[prompt]`` (an ``asyncio.Event``) holds it until the test sets the event.
    """

    script: dict[str, list[Any]] = Field(default_factory=dict)
    delays: dict[str, float] = Field(default_factory=dict)
    gates: dict[str, Any] = Field(default_factory=dict)
    calls: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("async only")

    async def _next_action(self, prompt: str) -> Any:
        self.calls.append(prompt)
        steps = self.script.get(prompt) or []
        action = steps.pop(0) if steps else None
        if action == "hang":
            await asyncio.sleep(3600)
        if isinstance(action, BaseException):
            raise action
        await asyncio.sleep(self.delays.get(prompt, 0.0))
        if prompt in self.gates:
            await self.gates[prompt].wait()
        return action

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        await self._next_action(prompt)
        message = AIMessage(
            content=prompt.upper(),
            additional_kwargs={"reasoning_content": f"thinking about {prompt}"},
            response_metadata={"finish_reason": "stop"},
            usage_metadata={
                "input_tokens": 5,
                "output_tokens": 7,
                "total_tokens": 12,
                "output_token_details": {"reasoning": 3},
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        prompt = str(messages[-1].content)
        action = await self._next_action(prompt)
        yield ChatGenerationChunk(message=AIMessageChunk(content=prompt[:1].upper()))
        yield ChatGenerationChunk(message=AIMessageChunk(content=prompt[1:].upper()))
        if action != "cut":
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})
            )


def scripted(**script: list[Any]) -> ScriptedModel:
    return ScriptedModel(script=script)


PROMPTS = ["alpha", "beta", "gamma", "delta"]


async def test_one_outcome_per_prompt_in_input_order_whatever_finishes_first() -> None:
    model = scripted()
    model.delays = {"alpha": 0.05, "beta": 0.03, "gamma": 0.01, "delta": 0.0}
    outcomes = await amap(model, PROMPTS, concurrency=4, progress=False)
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.prompt for o in outcomes] == PROMPTS
    assert [o.answer for o in outcomes] == [p.upper() for p in PROMPTS]
    assert all(o.ok and o.attempts == 1 and o.finish_reason == "stop" for o in outcomes)


async def test_reasoning_usage_and_latency_are_read_from_the_message() -> None:
    [outcome] = await amap(scripted(), ["alpha"], progress=False)
    assert outcome.reasoning == "thinking about alpha"
    assert outcome.usage == {"prompt_tokens": 5, "completion_tokens": 7, "reasoning_tokens": 3}
    assert outcome.latency_s > 0


class BlocksModel(ScriptedModel):
    """Replies with content blocks, as providers that return reasoning blocks do."""

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        blocks = [{"type": "reasoning", "reasoning": "2+2"}, {"type": "text", "text": "4"}, "!"]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=blocks))])


async def test_content_blocks_give_the_text_as_answer_and_the_reasoning_apart() -> None:
    [outcome] = await amap(BlocksModel(), ["2+2?"], progress=False)
    assert outcome.ok and type(outcome.answer) is str
    assert (outcome.answer, outcome.reasoning) == ("4!", "2+2")


async def test_transient_errors_are_retried_and_counted() -> None:
    model = scripted(
        beta=[ConnectionResetError(104, "Connection reset by peer"), http_error(503)],
        gamma=[http_error(429, {"retry-after": "0"})],
    )
    outcomes = await amap(model, PROMPTS, retries=3, backoff=FAST, progress=False)
    assert all(o.ok for o in outcomes)
    assert [o.attempts for o in outcomes] == [1, 3, 2, 1]
    assert outcomes[1].retried == ["ConnectionResetError", "InternalServerError"]
    assert outcomes[2].retried == ["RateLimitError"]
    assert len(model.calls) == 7


async def test_a_prompt_that_keeps_failing_ends_as_an_error_with_its_cause() -> None:
    model = scripted(beta=[http_error(503)] * 5)
    outcomes = await amap(model, PROMPTS, retries=2, backoff=FAST, progress=False)
    failed = outcomes[1]
    assert not failed.ok and failed.answer is None
    assert failed.error_type == "InternalServerError"
    assert "503" in failed.error
    assert failed.attempts == 3 and len(failed.retried) == 2
    assert [o.ok for o in outcomes] == [True, False, True, True]


async def test_client_errors_are_not_retried() -> None:
    model = scripted(alpha=[http_error(400)], beta=[http_error(404)], gamma=[ValueError("bug")])
    outcomes = await amap(model, PROMPTS, retries=3, backoff=FAST, progress=False)
    assert [o.error_type for o in outcomes] == [
        "BadRequestError",
        "NotFoundError",
        "ValueError",
        None,
    ]
    assert [o.attempts for o in outcomes] == [1, 1, 1, 1]
    assert model.calls.count("alpha") == 1


async def test_with_retries_off_every_fault_is_a_per_item_error() -> None:
    model = scripted(alpha=[http_error(500)], beta=[ConnectionRefusedError(111, "refused")], gamma=["cut"])
    outcomes = await amap(model, PROMPTS, retries=0, stream=True, progress=False)
    assert [o.error_type for o in outcomes] == [
        "InternalServerError",
        "ConnectionRefusedError",
        "IncompleteStream",
        None,
    ]
    assert all(o.attempts == 1 for o in outcomes)


async def test_a_cut_stream_is_never_an_answer_and_is_retried() -> None:
    model = scripted(alpha=["cut", "cut"])
    outcomes = await amap(model, ["alpha"], stream=True, retries=1, backoff=FAST, progress=False)
    [outcome] = outcomes
    assert not outcome.ok and outcome.answer is None
    assert outcome.error_type == "IncompleteStream" and outcome.attempts == 2
    assert "without a finish_reason" in outcome.error

    model = scripted(alpha=["cut"])
    [outcome] = await amap(model, ["alpha"], stream=True, backoff=FAST, progress=False)
    assert outcome.ok and outcome.answer == "ALPHA" and outcome.retried == ["IncompleteStream"]


async def test_per_request_timeout_is_a_retried_error() -> None:
    model = scripted(alpha=["hang", "hang"], beta=["hang"])
    outcomes = await amap(model, ["alpha", "beta"], timeout=0.5, retries=1, backoff=FAST, progress=False)
    assert outcomes[0].error_type == "RequestTimeout" and outcomes[0].attempts == 2
    assert "0.5 s" in outcomes[0].error
    assert outcomes[1].ok and outcomes[1].retried == ["RequestTimeout"]


async def test_retry_after_is_honoured() -> None:
    model = scripted(alpha=[http_error(429, {"retry-after": "0.3"})])
    [outcome] = await amap(model, ["alpha"], backoff=FAST, progress=False)
    assert outcome.ok and outcome.latency_s >= 0.3


async def test_concurrency_bounds_the_requests_in_flight() -> None:
    in_flight = peak = 0

    class Counting(ScriptedModel):
        async def _next_action(self, prompt: str) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1

    model = Counting()
    outcomes = await amap(model, [f"p{i}" for i in range(30)], concurrency=3, progress=False)
    assert all(o.ok for o in outcomes)
    assert peak == 3


async def test_cancelling_keeps_finished_outcomes_and_leaves_no_task() -> None:
    model = scripted()
    prompts = [f"p{i}" for i in range(12)]
    model.delays = {prompt: 0.02 if i < 4 else 30.0 for i, prompt in enumerate(prompts)}
    before = asyncio.all_tasks()
    task = asyncio.create_task(amap(model, prompts, concurrency=4, progress=False))
    while len(model.calls) < 8:  # the first 4 finished, the next 4 are in flight
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(BatchCancelled) as info:
        await task
    assert task.cancelled()
    outcomes = info.value.outcomes
    assert [o.ok for o in outcomes[:4]] == [True] * 4
    assert all(o.cancelled for o in outcomes[4:])
    assert [o.attempts for o in outcomes[4:]] == [1] * 4 + [0] * 4
    assert "4 of 12 prompts finished" in str(info.value)
    assert asyncio.all_tasks() == before


def test_map_prompts_is_the_sync_version() -> None:
    outcomes = map_prompts(scripted(), PROMPTS, progress=False)
    assert [o.answer for o in outcomes] == [p.upper() for p in PROMPTS]


async def test_map_prompts_works_inside_a_running_loop() -> None:
    outcomes = map_prompts(scripted(), PROMPTS, progress=False)
    assert all(o.ok for o in outcomes)


async def test_on_outcome_gets_each_final_outcome_in_completion_order(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    model = scripted(beta=[http_error(400)], gamma=[http_error(503)])
    model.gates = {prompt: asyncio.Event() for prompt in ("alpha", "gamma", "delta")}
    seen: list[Outcome] = []
    lines_when_called: list[int] = []

    def record(outcome: Outcome) -> None:
        seen.append(outcome)
        lines_when_called.append(len(path.read_text().splitlines()))

    async def until_seen(count: int) -> None:
        while len(seen) < count:
            await asyncio.sleep(0.005)

    task = asyncio.create_task(
        amap(model, PROMPTS, concurrency=4, backoff=FAST, checkpoint=path, on_outcome=record, progress=False)
    )
    await until_seen(1)  # beta is refused at once
    for count, prompt in enumerate(("delta", "gamma", "alpha"), start=2):  # then released in turn
        model.gates[prompt].set()
        await until_seen(count)
    outcomes = await task
    assert [o.index for o in seen] == [1, 3, 2, 0]
    assert sorted(seen, key=lambda o: o.index) == outcomes  # the final outcomes, failures included
    assert outcomes[2].attempts == 2  # called once per prompt (gamma was retried), not per attempt
    assert lines_when_called == [1, 2, 3, 4]  # already in the checkpoint when it is called


async def test_on_outcome_that_raises_loses_nothing_and_warns_once_then_counts() -> None:
    calls: list[int] = []

    def broken(outcome: Outcome) -> None:
        calls.append(outcome.index)
        raise ZeroDivisionError("division by zero")

    with pytest.warns(UserWarning) as caught:
        outcomes = await amap(scripted(), PROMPTS, on_outcome=broken, progress=False)
    assert [o.answer for o in outcomes] == [p.upper() for p in PROMPTS]
    assert sorted(calls) == [0, 1, 2, 3]  # still called for every outcome
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "on_outcome raised ZeroDivisionError: division by zero" in messages[0]
    assert "the outcome is kept" in messages[0]
    assert "on_outcome raised for 4 of 4 outcomes" in messages[1]


async def test_on_outcome_is_not_called_for_checkpointed_or_cancelled_prompts(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await amap(scripted(), PROMPTS[:2], checkpoint=path, progress=False)
    seen: list[int] = []
    again = await amap(
        scripted(), PROMPTS, checkpoint=path, on_outcome=lambda o: seen.append(o.index), progress=False
    )
    assert [o.from_checkpoint for o in again] == [True, True, False, False]
    assert sorted(seen) == [2, 3]

    model = scripted()
    prompts = [f"p{i}" for i in range(8)]
    model.delays = {prompt: 0.01 if i < 2 else 30.0 for i, prompt in enumerate(prompts)}
    seen.clear()
    task = asyncio.create_task(
        amap(model, prompts, concurrency=4, on_outcome=lambda o: seen.append(o.index), progress=False)
    )
    while len(model.calls) < 6:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(BatchCancelled) as info:
        await task
    finished = [o.index for o in info.value.outcomes if not o.cancelled]
    assert sorted(seen) == finished == [0, 1]


def test_map_prompts_passes_on_outcome_through() -> None:
    seen: list[int] = []
    outcomes = map_prompts(scripted(), PROMPTS, on_outcome=lambda o: seen.append(o.index), progress=False)
    assert sorted(seen) == [o.index for o in outcomes] == [0, 1, 2, 3]


async def _async_callback(outcome: Outcome) -> None:
    pass


async def test_empty_list_returns_empty_list_without_calling_the_model() -> None:
    model = scripted()
    assert await amap(model, []) == []
    assert model.calls == []


@pytest.mark.parametrize(
    ("prompts", "settings", "error", "message"),
    [
        (["ok", 42], {}, TypeError, r"prompts\[1\] is int"),
        (["ok", None], {}, TypeError, r"prompts\[1\] is NoneType"),
        ("one prompt", {}, TypeError, r"amap\(model, \[prompt\]\)"),
        (["ok", "  "], {}, ValueError, r"prompts\[1\] is empty"),
        (["ok"], {"concurrency": 0}, ValueError, "concurrency must be >= 1"),
        (["ok"], {"concurrency": 2.5}, TypeError, "concurrency must be an int"),
        (["ok"], {"timeout": -1}, ValueError, "timeout must be > 0"),
        (["ok"], {"timeout": 0}, ValueError, "timeout must be > 0"),
        (["ok"], {"retries": -1}, ValueError, "retries must be >= 0"),
        (["ok"], {"checkpoint": "data/run.csv"}, ValueError, r"\.jsonl"),
        (["ok"], {"on_outcome": "print"}, TypeError, "on_outcome must be a function"),
        (["ok"], {"on_outcome": _async_callback}, TypeError, "plain function"),
    ],
)
async def test_bad_input_is_refused_before_any_request(
    prompts: Any, settings: dict, error: type[Exception], message: str
) -> None:
    model = scripted()
    with pytest.raises(error, match=message):
        await amap(model, prompts, progress=False, **settings)
    with pytest.raises(error, match=message):
        map_prompts(model, prompts, progress=False, **settings)
    assert model.calls == []


@pytest.mark.parametrize(
    ("model", "message"),
    [(ScriptedModel, "got the class ScriptedModel"), ("gpt", "LangChain chat model")],
)
async def test_something_that_is_not_a_model_instance_is_refused(model: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        await amap(model, ["a"], progress=False)
    with pytest.raises(TypeError, match=message):
        map_prompts(model, ["a"], progress=False)


async def test_a_model_with_hidden_retries_gets_a_warning() -> None:
    class RetryingModel(ScriptedModel):
        max_retries: int = 2

    with pytest.warns(UserWarning, match="max_retries=0"):
        await amap(RetryingModel(), ["a"], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await amap(RetryingModel(max_retries=0), ["a"], progress=False)


async def test_progress_bar_shows_ok_failed_and_retries(capsys: pytest.CaptureFixture) -> None:
    model = scripted(alpha=[http_error(503)], beta=[http_error(400)])
    await amap(model, PROMPTS, backoff=FAST, progress=True)
    bar = capsys.readouterr().err.strip().split("\r")[-1]
    assert "4/4" in bar and "ok=3, failed=1, retries=1" in bar


async def test_summary_and_frame() -> None:
    model = scripted(beta=[http_error(400)], gamma=[http_error(503)])
    outcomes = await amap(model, PROMPTS, backoff=FAST, progress=False)
    line = summarize(outcomes)
    assert line.startswith("4 prompts: 3 ok, 1 failed (BadRequestError x1), 1 retries, 5 requests")
    frame = outcomes_to_frame(outcomes)
    assert list(frame["index"]) == [0, 1, 2, 3]
    assert list(frame["retries"]) == [0, 0, 1, 0]
    assert frame.loc[0, "completion_tokens"] == 7 and frame.loc[0, "reasoning_tokens"] == 3


async def test_abatch_limited_keeps_order_and_returns_exceptions_in_place() -> None:
    model = scripted(beta=[ValueError("bad")])
    model.delays = {"alpha": 0.03}
    results = await abatch_limited(model, PROMPTS, max_concurrency=2)
    assert isinstance(results[1], ValueError)
    assert [r.content for i, r in enumerate(results) if i != 1] == ["ALPHA", "GAMMA", "DELTA"]


async def test_abatch_as_completed_progress_puts_results_back_in_order(
    capsys: pytest.CaptureFixture,
) -> None:
    model = scripted(gamma=[ValueError("bad")])
    model.delays = {"alpha": 0.05, "beta": 0.02}
    results = await abatch_as_completed_progress(model, PROMPTS, max_concurrency=4)
    assert results[0].content == "ALPHA" and results[3].content == "DELTA"
    assert isinstance(results[2], ValueError)
    assert "4/4" in capsys.readouterr().err


async def test_comparison_helpers_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        await abatch_limited(scripted(), PROMPTS, max_concurrency=0)
    with pytest.raises(TypeError, match=r"prompts\[1\] is int"):
        await abatch_as_completed_progress(scripted(), ["a", 1])


# --- Against the simulator (real HTTP, injected faults) -------------------------------------

NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
SHORT = {"think_tokens_mean": 8, "answer_tokens_mean": 8}
SIM_FAST = Backoff(base_s=0.01, max_s=0.05, seed=0)


def plain_chat_openai(server: SimServer, **kwargs: Any) -> ChatOpenAI:
    """Plain LangChain ChatOpenAI, default SDK retries (max_retries=2) left on purpose."""
    return ChatOpenAI(base_url=server.base_url, api_key="EMPTY", model="Qwen/Qwen3-0.6B", **kwargs)


def requests_seen(server: SimServer) -> int:
    """Requests the simulator received: finished (any reason, cuts included) plus refused."""
    text = httpx2.get(f"{server.root_url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:request_success_total":
                total += sample.value
            if sample.name == "vllm_sim:injected_faults_total" and sample.labels["kind"] in (
                "500",
                "503",
                "429",
            ):
                total += sample.value
    return int(total)


def sockets_to(server: SimServer) -> int:
    return sum(
        1
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == server.port
    )


TRANSIENT_TYPES = {"OpenAIConnectionError", "OpenAIAPIError", "OpenAIRateLimitError"}


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.server
def test_sim_faults_nothing_lost_order_kept_every_attempt_counted(stream: bool) -> None:
    with serve(
        profile="instant", fail_rate=0.1, rate_limit_rate=0.05, disconnect_rate=0.1, **SHORT
    ) as server:
        model = plain_chat_openai(server, max_tokens=256)
        prompts = [f"question {i}" for i in range(40)]
        outcomes = asyncio.run(
            amap(model, prompts, concurrency=16, retries=8, stream=stream, backoff=SIM_FAST)
        )
        sent = requests_seen(server)
    assert [(o.index, o.prompt) for o in outcomes] == list(enumerate(prompts))
    assert all(o.ok and o.answer and o.finish_reason for o in outcomes), summarize(outcomes)
    attempts = sum(o.attempts for o in outcomes)
    assert attempts == sent  # the SDK's own retries are off: every request is counted here
    assert attempts - len(prompts) == sum(len(o.retried) for o in outcomes) > 0
    assert {kind for o in outcomes for kind in o.retried} <= TRANSIENT_TYPES


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.server
def test_sim_with_retries_off_every_fault_is_a_per_item_error(stream: bool) -> None:
    with serve(
        profile="instant", fail_rate=0.15, rate_limit_rate=0.1, disconnect_rate=0.15, **SHORT
    ) as server:
        model = plain_chat_openai(server, max_tokens=256)
        outcomes = asyncio.run(
            amap(model, [f"q{i}" for i in range(60)], retries=0, stream=stream, progress=False)
        )
        faults = _injected_faults(server)
    failed = [o for o in outcomes if not o.ok]
    assert len(outcomes) == 60 and all(o.attempts == 1 for o in outcomes)
    assert len(failed) == faults > 0
    assert {o.error_type for o in failed} <= TRANSIENT_TYPES
    assert all(o.error and o.answer is None for o in failed)
    cuts = [o for o in failed if o.error_type == "OpenAIConnectionError"]
    assert cuts and all("RemoteProtocolError" in o.error for o in cuts)


def _injected_faults(server: SimServer) -> int:
    text = httpx2.get(f"{server.root_url}/metrics").text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "vllm_sim:injected_faults_total"
            and sample.labels["kind"] in ("500", "503", "429", "disconnect")
        )
    )


@pytest.mark.server
def test_sim_client_errors_are_not_retried() -> None:
    with serve(profile="instant", max_model_len=512, **SHORT) as server:
        too_long = "word " * 2000
        outcomes = asyncio.run(
            amap(plain_chat_openai(server, max_tokens=200), ["hello", too_long], progress=False)
        )
        wrong_model = ChatOpenAI(base_url=server.base_url, api_key="EMPTY", model="no-such-model")
        [missing] = asyncio.run(amap(wrong_model, ["hello"], progress=False))
        sent = requests_seen(server)
    assert outcomes[0].ok
    assert outcomes[1].error_type in {"OpenAIInvalidRequestError", "OpenAIContextOverflowError"}
    assert outcomes[1].attempts == 1 and "maximum context length is 512" in outcomes[1].error
    assert missing.error_type == "OpenAIModelNotFoundError" and missing.attempts == 1
    assert "no-such-model" in missing.error
    assert sent == 1  # the two refused requests were not retried (refusals are not counted)


@pytest.mark.server
def test_sim_rate_limit_honours_retry_after(shared_sim: Any) -> None:
    server = shared_sim(profile="instant", rate_limit_rate=1.0, **SHORT)
    [outcome] = asyncio.run(
        amap(plain_chat_openai(server), ["hello"], retries=1, backoff=SIM_FAST, progress=False)
    )
    assert outcome.error_type == "OpenAIRateLimitError" and outcome.attempts == 2
    assert outcome.latency_s >= 1.0  # the simulator sends Retry-After: 1


@pytest.mark.server
def test_sim_sdk_retries_are_off_also_for_a_bound_model(shared_sim: Any) -> None:
    server = shared_sim(profile="instant", rate_limit_rate=1.0, **SHORT)
    before = requests_seen(server)
    bound = plain_chat_openai(server).bind(stop=["###"])  # ChatOpenAI's max_retries: 2
    [outcome] = asyncio.run(amap(bound, ["hello"], retries=0, progress=False))
    assert outcome.error_type == "OpenAIRateLimitError" and outcome.attempts == 1
    assert requests_seen(server) - before == 1


@pytest.mark.server
def test_sim_per_request_timeout() -> None:
    with serve(profile="l4", answer_tokens_mean=2000) as server:  # ~10 s per reply
        model = plain_chat_openai(server, max_tokens=2000, extra_body=NO_THINKING)
        [outcome] = asyncio.run(
            amap(model, ["hello"], timeout=0.2, retries=1, backoff=SIM_FAST, progress=False)
        )
    assert outcome.error_type == "RequestTimeout" and outcome.attempts == 2
    assert outcome.retried == ["RequestTimeout"]


@pytest.mark.server
def test_sim_cancel_keeps_finished_leaves_no_task_or_socket(tmp_path: Path) -> None:
    """Cancel mid-batch: prompt return, finished outcomes kept, nothing pending, no socket open."""
    path = tmp_path / "run.jsonl"
    with serve(profile="l4", answer_tokens_mean=100) as server:
        model = plain_chat_openai(server, max_tokens=400, extra_body=NO_THINKING)

        async def cancel_mid_batch() -> tuple[BatchCancelled, float, int, int]:
            before = asyncio.all_tasks()
            task = asyncio.create_task(
                amap(model, [f"q{i}" for i in range(24)], concurrency=4, checkpoint=path)
            )
            while not path.exists() or len(path.read_text().splitlines()) < 4:
                await asyncio.sleep(0.01)
            in_flight = sockets_to(server)
            task.cancel()
            started = time.perf_counter()
            try:
                await task
            except BatchCancelled as cancelled:
                took = time.perf_counter() - started
                pending = len(asyncio.all_tasks() - before)
                return cancelled, took, pending, in_flight
            raise AssertionError("amap finished before it was cancelled")

        cancelled, took, pending, in_flight = asyncio.run(cancel_mid_batch())
        open_after = sockets_to(server)
    outcomes = cancelled.outcomes
    finished = [o for o in outcomes if not o.cancelled]
    assert in_flight >= 1
    assert took < min(o.latency_s for o in finished)  # returned before any request could finish
    assert pending == 0 and open_after == 0
    assert len(outcomes) == 24 and 4 <= len(finished) < 24
    assert all(o.ok for o in finished)
    assert any(o.cancelled and o.attempts == 1 for o in outcomes)  # stopped while in flight


@pytest.mark.server
def test_sim_checkpoint_resume_sends_nothing_for_finished_prompts(tmp_path: Path, shared_sim: Any) -> None:
    path = tmp_path / "run.jsonl"
    prompts = [f"q{i}" for i in range(12)]
    server = shared_sim(profile="instant", **SHORT)
    model = plain_chat_openai(server, max_tokens=256)
    before = requests_seen(server)
    first = asyncio.run(amap(model, prompts, checkpoint=path, progress=False))
    sent_first = requests_seen(server) - before
    again = asyncio.run(amap(model, prompts, checkpoint=path, progress=False))
    sent_again = requests_seen(server) - before
    assert sent_first == 12 and sent_again == 12
    assert all(o.from_checkpoint for o in again)
    assert [o.answer for o in again] == [o.answer for o in first]


@pytest.mark.server
def test_sim_one_plain_chat_openai_across_three_asyncio_runs(shared_sim: Any) -> None:
    model = plain_chat_openai(shared_sim(profile="instant", **SHORT), max_tokens=256)
    for _ in range(3):
        outcomes = asyncio.run(amap(model, ["a", "b", "c"], progress=False))
        assert all(o.ok for o in outcomes), summarize(outcomes)


@pytest.mark.server
def test_sim_reasoning_from_the_kits_chat_model_and_map_prompts(shared_sim: Any) -> None:
    server = shared_sim(profile="instant", **SHORT)
    model = make_chat_model(thinking=True, endpoint=Endpoint(server.base_url), max_tokens=200)
    for stream in (False, True):
        outcomes = map_prompts(model, ["1+1=?", "你好"], stream=stream, progress=False)
        assert all(o.ok and o.reasoning and o.answer for o in outcomes), outcomes
        assert all(o.usage and o.usage["reasoning_tokens"] > 0 for o in outcomes)


@pytest.mark.server
def test_sim_langchain_comparison_helpers() -> None:
    with serve(profile="instant", fail_rate=0.3, **SHORT) as server:
        model = plain_chat_openai(server, max_tokens=32, max_retries=0)
        prompts = [f"q{i}" for i in range(20)]

        async def both() -> tuple[list, list]:  # one loop: plain ChatOpenAI's client is loop-bound
            limited = await abatch_limited(model, prompts, max_concurrency=4)
            completed = await abatch_as_completed_progress(model, prompts, max_concurrency=4, progress=False)
            return limited, completed

        limited, completed = asyncio.run(both())
    for results in (limited, completed):
        assert len(results) == 20
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors and all(isinstance(e, openai.InternalServerError) for e in errors)
        assert all(isinstance(r, AIMessage) for r in results if r not in errors)


def local_ports_to(server: SimServer) -> set[int]:
    """This process's local ports of its open connections to ``server`` (one per connection)."""
    return {
        connection.laddr.port
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == server.port
    }


def tasks_of_batches() -> set[asyncio.Task]:
    """The running loop's tasks, less the kit model's per-loop pool closer (one per loop)."""
    return {task for task in asyncio.all_tasks() if not task.get_name().startswith("helpers.chat:")}


@pytest.mark.parametrize("kind", ["kit", "plain"])
@pytest.mark.server
def test_sim_amap_calls_on_one_loop_reuse_connections_closed_when_the_loop_ends(kind: str) -> None:
    """A pool made anew for every batch opened all its connections again on every call (64
    connects per amap in bench_client part 1); amap keeps its pool on the loop between batches
    and closes it when the loop shuts down, leaving no task of its own pending in the loop."""
    process = psutil.Process()
    with serve(profile="instant", **SHORT) as server:
        model = (
            make_chat_model(False, Endpoint(server.base_url), max_tokens=64)
            if kind == "kit"
            else plain_chat_openai(server, max_tokens=64)
        )

        async def two_batches() -> tuple[set[int], set[int], int]:
            before = tasks_of_batches()
            ports = []
            for _ in range(2):
                outcomes = await amap(model, [f"q{i}" for i in range(8)], concurrency=4, progress=False)
                assert all(o.ok for o in outcomes), summarize(outcomes)
                ports.append(local_ports_to(server))
            return ports[0], ports[1], len(tasks_of_batches() - before)

        gc.collect()
        fds_before = process.num_fds()
        first, second, tasks_left = asyncio.run(two_batches())
        gc.collect()
        assert first and second == first  # the second batch went out on the first one's connections
        assert tasks_left == 0
        # none left open by the batches (<=: other fds of this worker process may close meanwhile)
        assert local_ports_to(server) == set() and process.num_fds() <= fds_before


@pytest.mark.server
def test_sim_a_batch_cancelled_after_one_that_finished_leaves_no_socket_in_its_loop(tmp_path: Path) -> None:
    """The kept pool is not kept by a cancelled batch: its connections are closed at once."""
    path = tmp_path / "run.jsonl"
    with serve(profile="l4", answer_tokens_mean=100) as server:
        model = make_chat_model(False, Endpoint(server.base_url), max_tokens=400)

        async def finish_then_cancel() -> tuple[int, int, int]:
            await amap(model, ["warm up"] * 4, concurrency=4, progress=False)
            kept = len(local_ports_to(server))
            task = asyncio.create_task(
                amap(model, [f"q{i}" for i in range(24)], concurrency=4, checkpoint=path, progress=False)
            )
            while not path.exists() or len(path.read_text().splitlines()) < 4:
                await asyncio.sleep(0.01)
            in_flight = len(local_ports_to(server))
            task.cancel()
            with pytest.raises(BatchCancelled):
                await task
            return kept, in_flight, len(local_ports_to(server))

        kept, in_flight, left = asyncio.run(finish_then_cancel())
    assert kept >= 1 and in_flight >= 1
    assert left == 0


@pytest.mark.server
def test_sim_cancelling_one_of_two_concurrent_batches_leaves_the_other_whole() -> None:
    """Batches running at once on one loop never share a pool: one cancelled (its pool closed)
    does not break the other's requests."""
    with serve(profile="l4", answer_tokens_mean=60) as server:
        model = make_chat_model(False, Endpoint(server.base_url), max_tokens=400)

        async def one_cancelled() -> list[Outcome]:
            await amap(model, ["warm up"] * 4, concurrency=4, progress=False)  # a pool kept on the loop
            first_outcome = asyncio.Event()
            cancelled = asyncio.create_task(
                amap(
                    model,
                    [f"b{i}" for i in range(12)],
                    concurrency=4,
                    progress=False,
                    on_outcome=lambda outcome: first_outcome.set(),
                )
            )
            others = [f"a{i}" for i in range(12)]
            kept = asyncio.create_task(amap(model, others, concurrency=4, progress=False))
            await first_outcome.wait()
            cancelled.cancel()
            with pytest.raises(BatchCancelled):
                await cancelled
            return await kept

        outcomes = asyncio.run(one_cancelled())
    assert len(outcomes) == 12 and all(o.ok for o in outcomes), summarize(outcomes)


@pytest.mark.server
def test_sim_amaps_pool_expires_idle_connections_before_vllms_keep_alive(shared_sim: Any) -> None:
    """vLLM closes idle connections after 5 s; a pool keeping them as long reuses one just as the
    server closes it (ReadError, issue seen with the lean client at high concurrency)."""
    from comparisons import kept_pools as _kept_pools

    server = shared_sim(profile="instant", **SHORT)
    model = make_chat_model(False, Endpoint(server.base_url), max_tokens=64)

    async def pools_after_a_batch() -> list[Any]:
        await amap(model, ["q"], concurrency=8, progress=False)
        return _kept_pools()

    pools = asyncio.run(pools_after_a_batch())
    assert pools and all(pool._transport.limits.keepalive_expiry < 5.0 for pool in pools)
