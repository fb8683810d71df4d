"""LangChain agents (``create_agent``) with the kit's chat model against the simulator, and the
middleware of ``helpers.agents`` for the two pitfalls of a small Qwen3: unreadable tool calls
(langchain-ai/langchain#33504) and forced tool choice with thinking on (#35539)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.errors import GraphRecursionError
from pydantic import BaseModel

from helpers.agents import (
    MalformedToolCallError,
    ModelCallLog,
    RetryMalformedToolCalls,
    ThinkingOffWhenToolChoiceForced,
    tool_call_problem,
    without_thinking,
)
from helpers.chat import make_chat_model
from helpers.concurrency import amap
from helpers.server_metrics import scrape_metrics
from helpers.sim import serve

TOOL_FLAGS = {"enable_auto_tool_choice": True, "tool_call_parser": "hermes"}
ROOT = Path(__file__).resolve().parents[1]


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    summary: str


@pytest.fixture(scope="module")
def server():
    with serve("instant", **TOOL_FLAGS) as running:
        yield running


@pytest.fixture(scope="module")
def broken_calls_server():
    """Every reply that calls a tool writes a call vLLM's hermes parser cannot read."""
    with serve("instant", tool_call_error_rate=1.0, **TOOL_FLAGS) as running:
        yield running


def served(server) -> float:
    return scrape_metrics(server.root_url)["vllm:request_success_total"]


def ask(question: str) -> dict:
    return {"messages": [("user", question)]}


@tool
async def get_weather(city: str) -> str:
    """Current weather for a city"""
    return f"{city}: sunny, 21 C"


def test_the_module_names_the_extra_when_langchain_is_missing():
    code = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'langchain' or name.startswith('langchain.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import helpers.agents\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode != 0
    assert "helpers.agents (middleware for create_agent) needs the 'agents' extra" in result.stderr
    assert "pip install" in result.stderr


async def test_the_tool_calls_of_one_step_run_at_the_same_time(server):
    spans: dict[str, tuple[float, float]] = {}

    async def timed(name: str, city: str) -> str:
        started = time.monotonic()
        await asyncio.sleep(0.5)
        spans[name] = (started, time.monotonic())
        return f"{name} for {city}: ok"

    @tool
    async def get_weather(city: str) -> str:
        """Current weather for a city"""
        return await timed("get_weather", city)

    @tool
    async def get_time(city: str) -> str:
        """Current local time in a city"""
        return await timed("get_time", city)

    @tool
    async def get_news(city: str) -> str:
        """Latest news headlines for a city"""
        return await timed("get_news", city)

    model = make_chat_model(thinking=False, base_url=server.base_url, max_tokens=512)
    agent = create_agent(model, tools=[get_weather, get_time, get_news])
    state = await agent.ainvoke(ask("Paris: weather, local time and news headlines?"))
    first_step = next(m for m in state["messages"] if isinstance(m, AIMessage))
    assert sorted(call["name"] for call in first_step.tool_calls) == ["get_news", "get_time", "get_weather"]
    assert len(spans) == 3
    latest_start = max(start for start, _ in spans.values())
    earliest_end = min(end for _, end in spans.values())
    assert latest_start < earliest_end, f"the three calls ran one after another: {spans}"


async def test_amap_runs_agent_sessions_at_most_concurrency_at_a_time(server):
    @tool
    async def get_weather(city: str) -> str:
        """Current weather for a city"""
        await asyncio.sleep(0.2)
        return f"{city}: sunny"

    model = make_chat_model(thinking=False, base_url=server.base_url, max_tokens=512, max_retries=0)
    agent = create_agent(model, tools=[get_weather])
    running, peak = 0, 0

    async def session(question: str, config=None) -> AIMessage:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return (await agent.ainvoke(ask(question), config))["messages"][-1]
        finally:
            running -= 1

    cities = ["Paris", "Berlin", "Tokyo", "Madrid", "Lima", "Oslo"]
    with pytest.warns(UserWarning, match="no chat model inside"):
        questions = [f"What is the weather in {city}?" for city in cities]
        outcomes = await amap(RunnableLambda(session), questions, concurrency=2, progress=False)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [city in o.answer for o, city in zip(outcomes, cities, strict=True)] == [True] * len(cities)
    assert peak == 2


async def test_streamed_agent_steps_keep_the_reasoning(server):
    model = make_chat_model(thinking=True, base_url=server.base_url, max_tokens=1024)
    agent = create_agent(model, tools=[get_weather])
    reasoning, nodes = "", []
    async for chunk, metadata in agent.astream(ask("What is the weather in Paris?"), stream_mode="messages"):
        nodes.append(metadata["langgraph_node"])
        if isinstance(chunk, AIMessageChunk):
            reasoning += chunk.additional_kwargs.get("reasoning_content", "")
    assert {"model", "tools"} <= set(nodes)
    assert reasoning.strip()


class _ToolChoiceSeen(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tool_choices: list = []

    async def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
        self.tool_choices.append(kwargs["invocation_params"].get("tool_choice"))


async def test_a_structured_response_uses_a_forced_tool_call(server):
    """LangChain has no profile for Qwen3: a bare schema becomes ToolStrategy, whose tool_choice
    "any" ChatOpenAI sends as "required"."""
    model = make_chat_model(thinking=False, base_url=server.base_url, max_tokens=512)
    agent = create_agent(model, tools=[get_weather], response_format=Weather)
    seen = _ToolChoiceSeen()
    state = await agent.ainvoke(ask("What is the weather in Paris?"), {"callbacks": [seen]})
    assert isinstance(state["structured_response"], Weather)
    assert seen.tool_choices and set(seen.tool_choices) == {"required"}


def test_tool_call_problem_names_what_is_wrong():
    fine_call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "1"}])
    assert tool_call_problem(fine_call) is None
    assert tool_call_problem(AIMessage("It is sunny.")) is None
    cut = {"name": "get_weather", "args": '{"city": "Par', "id": "1", "error": "bad JSON"}
    invalid = AIMessage("", invalid_tool_calls=[cut])
    assert "get_weather" in tool_call_problem(invalid)
    assert "bad JSON" in tool_call_problem(invalid)
    raw = AIMessage("<tool_call>\n{'name': 'get_weather'}\n</tool_call>")
    assert "could not read" in tool_call_problem(raw)
    assert "empty reply" in tool_call_problem(AIMessage("", response_metadata={"finish_reason": "stop"}))


async def test_without_middleware_an_unreadable_call_ends_the_loop_quietly(broken_calls_server):
    """langchain-ai/langchain#33504 as it meets Qwen3 on vLLM: the raw call text is the answer."""
    model = make_chat_model(thinking=False, base_url=broken_calls_server.base_url, max_tokens=512)
    state = await create_agent(model, tools=[get_weather]).ainvoke(ask("What is the weather in Paris?"))
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    assert "<tool_call>" in last.text and not last.tool_calls


async def test_the_middleware_retries_then_raises_past_a_client_cache(broken_calls_server):
    model = make_chat_model(
        thinking=False, base_url=broken_calls_server.base_url, max_tokens=512, cache=InMemoryCache()
    )
    retry = RetryMalformedToolCalls(max_retries=2)
    agent = create_agent(model, tools=[get_weather], middleware=[retry])
    before = served(broken_calls_server)
    with pytest.raises(MalformedToolCallError, match="could not read"):
        await agent.ainvoke(ask("What is the weather in Paris?"))
    assert served(broken_calls_server) - before == 3
    assert retry.retries == 2


async def test_the_middleware_gets_the_loop_to_an_answer_when_a_retry_is_readable():
    with serve("instant", tool_call_error_rate=0.5, fault_seed=3, **TOOL_FLAGS) as flaky:
        model = make_chat_model(thinking=False, base_url=flaky.base_url, max_tokens=512)
        retry = RetryMalformedToolCalls(max_retries=8)
        agent = create_agent(model, tools=[get_weather], middleware=[retry])
        for city in ["Paris", "Berlin", "Tokyo", "Madrid"]:
            state = await agent.ainvoke(ask(f"What is the weather in {city}?"))
            assert f"{city}: sunny" in state["messages"][-1].text
    assert retry.retries > 0


async def test_forced_tool_choice_with_thinking_cut_by_max_tokens_loops(server):
    """#35539 on vLLM: no 400, but the thinking eats max_tokens, no call comes, and create_agent
    asks again with the identical request until the recursion limit."""
    model = make_chat_model(thinking=True, base_url=server.base_url, max_tokens=100)
    agent = create_agent(model, tools=[], response_format=Weather)
    with pytest.raises(GraphRecursionError):
        await agent.ainvoke(ask("Paris is sunny today: describe its weather."), {"recursion_limit": 4})


async def test_thinking_off_for_forced_calls_gives_the_structured_response(server):
    model = make_chat_model(thinking=True, base_url=server.base_url, max_tokens=100)
    switch = ThinkingOffWhenToolChoiceForced()
    agent = create_agent(model, tools=[], response_format=Weather, middleware=[switch])
    state = await agent.ainvoke(ask("Paris is sunny today: describe its weather."), {"recursion_limit": 4})
    assert isinstance(state["structured_response"], Weather)
    calls = [m for m in state["messages"] if isinstance(m, AIMessage)]
    assert calls[0].usage_metadata["output_token_details"]["reasoning"] == 0
    assert switch.calls_switched == 1


async def test_thinking_stays_on_when_nothing_forces_a_call(server):
    model = make_chat_model(thinking=True, base_url=server.base_url, max_tokens=2048)
    switch = ThinkingOffWhenToolChoiceForced()
    agent = create_agent(model, tools=[get_weather], middleware=[switch])
    state = await agent.ainvoke(ask("What is the weather in Paris?"))
    assert switch.calls_switched == 0
    first = next(m for m in state["messages"] if isinstance(m, AIMessage))
    assert first.additional_kwargs["reasoning_content"]


def test_without_thinking_copies_only_the_switch():
    model = make_chat_model(thinking=True, base_url="http://vllm.test/v1", extra_body={"top_k": 20})
    copy = without_thinking(model)
    assert copy.thinking is False and model.thinking is True
    assert copy.extra_body == {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}
    off = make_chat_model(thinking=False, base_url="http://vllm.test/v1")
    assert without_thinking(off) is off


async def test_the_call_log_records_each_model_call_of_a_run(server):
    model = make_chat_model(thinking=False, base_url=server.base_url, max_tokens=512, streaming=True)
    agent = create_agent(model, tools=[get_weather])
    log = ModelCallLog()
    state = await agent.ainvoke(ask("What is the weather in Paris?"), {"callbacks": [log]})
    replies = [m for m in state["messages"] if isinstance(m, AIMessage)]
    assert len(log.calls) == len(replies) == 2
    assert [call.tool_calls for call in log.calls] == [1, 0]
    assert [call.prompt_tokens for call in log.calls] == [r.usage_metadata["input_tokens"] for r in replies]
    assert all(call.ttft_s is not None and 0 < call.ttft_s <= call.duration_s for call in log.calls)
    assert log.calls[0].started < log.calls[1].started
    assert [call.messages for call in log.calls] == [1, 3]  # the question; then the call and its result
    assert [call.finish_reason for call in log.calls] == ["tool_calls", "stop"]


async def test_a_cached_agent_session_replays_whole_only_from_its_third_run(server):
    """langchain-ai/langchain#35308: a cache hit comes back with ``usage_metadata["total_cost"] = 0``
    added, that message is part of the next call's cache key, so the re-run's second call misses."""
    model = make_chat_model(thinking=False, base_url=server.base_url, max_tokens=512, cache=InMemoryCache())
    agent = create_agent(model, tools=[get_weather])
    sent = []
    for _ in range(3):
        before = served(server)
        await agent.ainvoke(ask("What is the weather in Lima?"))
        sent.append(served(server) - before)
    assert sent == [2, 1, 0]
    one_call = create_agent(model, tools=[])
    sent = []
    for _ in range(2):
        before = served(server)
        await one_call.ainvoke(ask("Say hello to Lima."))
        sent.append(served(server) - before)
    assert sent == [1, 0]


async def test_the_call_log_reads_the_prefix_cache_hits_per_call():
    with serve("instant", enable_prompt_tokens_details=True, **TOOL_FLAGS) as cached:
        model = make_chat_model(thinking=False, base_url=cached.base_url, max_tokens=512, streaming=True)
        agent = create_agent(model, tools=[get_weather], system_prompt="You are a weather assistant. " * 20)
        log = ModelCallLog()
        await agent.ainvoke(ask("What is the weather in Paris?"), {"callbacks": [log]})
        hits = scrape_metrics(cached.root_url)["vllm:prefix_cache_hits_total"]
    assert [call.cached_tokens is not None for call in log.calls] == [True, True]
    assert log.calls[1].cached_tokens > 0  # the second call resends the first call's prompt
    assert sum(call.cached_tokens for call in log.calls) == hits
    assert all(call.cached_tokens % 16 == 0 for call in log.calls)
