"""Several tool calls in one turn when the question asks for several (one per city, per pair of
numbers, ...), as Qwen3 writes them (one <tool_call> each) and vLLM's hermes parser returns them."""

from __future__ import annotations

import json
import random
import re

import orjson
import pytest
from support import load_transcript, tool_simulator_client

from helpers.sim.tool_calls import PlannedCall, plan_tool_calls

WEATHER, ADD = load_transcript("hermes-qwen3-tools-auto-wellformed").request["tools"]
TOOL_ID = re.compile(r"chatcmpl-tool-[0-9a-f]{16}")


def _plan(content: str, tools: list[dict], tool_choice: str | dict | None = "auto", parallel=None) -> list:
    return plan_tool_calls(
        [{"role": "user", "content": content}], tools, tool_choice, parallel, random.Random(0)
    )


@pytest.mark.parametrize(
    ("prompt", "cities"),
    [
        ("北京和上海今天天气怎么样?", ["北京", "上海"]),
        ("北京、上海和广州的天气", ["北京", "上海", "广州"]),
        ("What is the weather in Paris and London?", ["Paris", "London"]),
    ],
)
def test_one_call_per_city(prompt, cities):
    assert _plan(prompt, [WEATHER, ADD]) == [PlannedCall("get_weather", {"city": c}) for c in cities]


def test_one_call_per_pair_of_numbers():
    assert _plan("计算 2+3 和 4+5", [WEATHER, ADD]) == [
        PlannedCall("add", {"a": 2, "b": 3}),
        PlannedCall("add", {"a": 4, "b": 5}),
    ]


def test_a_single_item_still_gives_a_single_call():
    location = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
    weather_at = {"type": "function", "function": {"name": "get_weather", "parameters": location}}
    assert len(_plan("What's the weather in San Francisco, CA?", [weather_at])) == 1
    assert _plan("北京今天天气怎么样?", [WEATHER, ADD]) == [PlannedCall("get_weather", {"city": "北京"})]
    assert _plan("2 加 3 等于几?", [WEATHER, ADD]) == [PlannedCall("add", {"a": 2, "b": 3})]


def test_parallel_tool_calls_false_keeps_only_the_first():
    assert _plan("北京和上海今天天气怎么样?", [WEATHER], parallel=False) == [
        PlannedCall("get_weather", {"city": "北京"})
    ]


def test_a_named_tool_choice_makes_one_call():
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert len(_plan("北京和上海今天天气怎么样?", [WEATHER], named)) == 1


@pytest.fixture(scope="module")
def client():
    with tool_simulator_client() as http:
        yield http


QUESTION = [{"role": "user", "content": "北京和上海今天天气怎么样?"}]
BODY = {"messages": QUESTION, "tools": [WEATHER, ADD], "chat_template_kwargs": {"enable_thinking": False}}


def test_the_server_returns_one_tool_call_per_city(client):
    message = client.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]
    calls = message["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "北京"}, {"city": "上海"}]
    assert all(TOOL_ID.fullmatch(c["id"]) for c in calls) and len({c["id"] for c in calls}) == 2


def test_streamed_calls_have_indices_0_and_1(client):
    text = client.post("/v1/chat/completions", json={**BODY, "stream": True}).text
    deltas = [
        call
        for line in text.splitlines()
        if line.startswith("data: {")
        for choice in orjson.loads(line[6:])["choices"]
        for call in choice["delta"].get("tool_calls") or []
    ]
    heads = [d for d in deltas if "id" in d]
    assert [d["index"] for d in heads] == [0, 1] and all(TOOL_ID.fullmatch(d["id"]) for d in heads)
    arguments = {0: "", 1: ""}
    for delta in deltas:
        arguments[delta["index"]] += delta["function"].get("arguments") or ""
    assert [json.loads(arguments[i]) for i in (0, 1)] == [{"city": "北京"}, {"city": "上海"}]


def test_a_multi_turn_tool_conversation_ends_with_an_answer_quoting_both_results(client):
    message = client.post("/v1/chat/completions", json=BODY).json()["choices"][0]["message"]
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": weather}
        for call, weather in zip(message["tool_calls"], ("晴, 21°C", "小雨, 18°C"), strict=True)
    ]
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
        *results,
    ]
    answer = client.post("/v1/chat/completions", json={**BODY, "messages": history}).json()["choices"][0]
    assert answer["finish_reason"] == "stop" and not answer["message"].get("tool_calls")
    assert "晴, 21°C" in answer["message"]["content"] and "小雨, 18°C" in answer["message"]["content"]
    # next question in the same conversation: a new call
    follow_up = [*history, answer["message"], {"role": "user", "content": "那广州呢? 广州的天气"}]
    again = client.post("/v1/chat/completions", json={**BODY, "messages": follow_up}).json()["choices"][0]
    assert [json.loads(c["function"]["arguments"]) for c in again["message"]["tool_calls"]] == [
        {"city": "广州"}
    ]
