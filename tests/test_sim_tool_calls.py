"""helpers.sim.tool_calls: the decision rule, arguments, Hermes text as the transcripts spell it,
malformed calls, and the answer after tool results."""

from __future__ import annotations

import json
import random
import re

import jsonschema
import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from helpers.sim.text import _EN_ANSWER_FIRST, _ZH_ANSWER_FIRST
from helpers.sim.tool_calls import (
    PlannedCall,
    arguments_for,
    hermes_text,
    malformed_hermes_text,
    plan_tool_calls,
    tool_result_answer,
)
from tests.support import FIXTURES, load_transcript

WELLFORMED = load_transcript("hermes-qwen3-tools-auto-wellformed")
WEATHER, ADD = WELLFORMED.request["tools"]  # get_weather(city, unit?), add(a, b)


def _response(name: str) -> dict:
    """The response body of a transcript. The forced-output transcripts were saved with LF line
    ends, which `load_transcript` (it splits the response head on CRLF) reads as an empty body."""
    transcript = load_transcript(name)
    if transcript.body:
        return transcript.json()
    response = (FIXTURES / f"{name}.http").read_bytes().split(b"\n\n", 2)[2]
    return json.loads(response)


def _tool(name: str, description: str, properties: dict | None = None, required: tuple = ()) -> dict:
    parameters = {"type": "object", "properties": properties or {}, "required": list(required)}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


MAGIC = _tool(
    "magic_function", "Applies a magic function to an input.", {"input": {"type": "integer"}}, ("input",)
)
MAGIC_NO_ARGS = _tool("magic_function_no_args", "Calculates a magic function.")
LOCATION_WEATHER = _tool(
    "get_weather", "Get the weather at a location.", {"location": {"type": "string"}}, ("location",)
)


def _plan(
    content: str | list[dict],
    tools: list[dict],
    tool_choice: str | dict | None = "auto",
    parallel: bool | None = None,
) -> list[PlannedCall]:
    messages = [{"role": "user", "content": content}] if isinstance(content, str) else content
    return plan_tool_calls(messages, tools, tool_choice, parallel, random.Random(0))


def test_matching_tool_is_called_with_arguments_from_a_chinese_prompt() -> None:
    assert _plan("北京今天天气怎么样?", [WEATHER, ADD]) == [PlannedCall("get_weather", {"city": "北京"})]
    assert _plan("2 加 3 等于几?", [WEATHER, ADD]) == [PlannedCall("add", {"a": 2, "b": 3})]


def test_english_prompts_match_by_words_and_symbols() -> None:
    assert _plan("What's the weather in San Francisco, CA?", [LOCATION_WEATHER]) == [
        PlannedCall("get_weather", {"location": "San Francisco"})
    ]
    assert _plan("What is 3 + 2?", [WEATHER, ADD]) == [PlannedCall("add", {"a": 3, "b": 2})]


def test_no_matching_tool_means_no_call() -> None:
    assert _plan("Tell me a joke about cats", [WEATHER, ADD]) == []
    assert _plan("你好，你是谁？", [WEATHER, ADD]) == []


def test_an_explicit_mention_of_the_tool_name_calls_it() -> None:
    prompt = "What is the value of magic_function(3)? Use the tool."
    assert _plan(prompt, [WEATHER, MAGIC]) == [PlannedCall("magic_function", {"input": 3})]
    prompt = "What is the value of magic_function_no_args()? Use the tool."
    assert _plan(prompt, [MAGIC, MAGIC_NO_ARGS]) == [PlannedCall("magic_function_no_args", {})]
    assert [call.name for call in _plan("Use the add tool for the weather", [WEATHER, ADD])] == ["add"]


def test_unicode_names_are_copied_from_the_prompt() -> None:
    customer = _tool(
        "unicode_customer",
        "Tool for creating a customer with Unicode name.",
        {"customer_name": {"type": "string"}, "description": {"type": "string"}},
        ("customer_name", "description"),
    )
    prompt = "Create a customer named '你好啊集团' (Hello Group) - a Chinese technology company"
    [call] = _plan(prompt, [customer])
    assert call.name == "unicode_customer"
    assert call.arguments["customer_name"] == "你好啊集团"
    assert "你好啊集团" in hermes_text([call])  # written as is, not \u-escaped


def test_several_matching_tools_are_called_unless_parallel_calls_are_off() -> None:
    prompt = "北京天气怎么样？再算一下 2 加 3"
    assert [call.name for call in _plan(prompt, [WEATHER, ADD])] == ["get_weather", "add"]
    assert [call.name for call in _plan(prompt, [WEATHER, ADD], parallel=False)] == ["get_weather"]
    assert [call.name for call in _plan(prompt, [WEATHER, ADD], parallel=True)] == ["get_weather", "add"]


def _result_turn() -> list[dict]:
    return load_transcript("hermes-qwen3-tools-result-turn").request["messages"]


def test_after_a_tool_result_the_model_answers_in_text() -> None:
    assert _plan(_result_turn(), [WEATHER, ADD]) == []


def test_after_one_result_another_matching_tool_is_still_called() -> None:
    messages = _result_turn()
    messages[0] = {"role": "user", "content": "北京天气怎么样？再算一下 2 加 3"}
    assert _plan(messages, [WEATHER, ADD]) == [PlannedCall("add", {"a": 2, "b": 3})]


def test_a_new_user_turn_can_call_the_same_tool_again() -> None:
    messages = [
        *_result_turn(),
        {"role": "assistant", "content": "晴"},
        {"role": "user", "content": "上海天气呢?"},
    ]
    assert _plan(messages, [WEATHER]) == [PlannedCall("get_weather", {"city": "上海"})]


def test_tool_choice_none_required_and_named() -> None:
    assert _plan("北京今天天气怎么样?", [WEATHER, ADD], "none") == []
    assert _plan("北京今天天气怎么样?", [WEATHER, ADD], "required") == [
        PlannedCall("get_weather", {"city": "北京"})
    ]
    assert [call.name for call in _plan("Tell me a joke", [WEATHER, ADD], "required")] == ["get_weather"]
    assert [call.name for call in _plan(_result_turn(), [WEATHER, ADD], "required")] == ["get_weather"]
    named = {"type": "function", "function": {"name": "add"}}
    assert _plan("北京今天天气怎么样?", [WEATHER, ADD], named) == [PlannedCall("add", {"a": 1, "b": 1})]


def test_arguments_keep_required_keys_and_only_prompted_optional_ones() -> None:
    parameters = WEATHER["function"]["parameters"]
    assert arguments_for(parameters, "北京今天天气怎么样?", random.Random(0)) == {"city": "北京"}
    assert arguments_for(parameters, "北京今天多少华氏度?", random.Random(0)) == {
        "city": "北京",
        "unit": "fahrenheit",
    }
    assert arguments_for(None, "anything", random.Random(0)) == {}
    assert arguments_for({"type": "object", "properties": {}}, "anything", random.Random(0)) == {}
    impossible = {"properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}, "required": ["n"]}
    assert arguments_for(impossible, "3", random.Random(0)) == {}


class SearchArgs(BaseModel):
    """Search the web."""

    query: str = Field(description="What to search for")
    limit: int = Field(default=5, ge=1, le=20)
    lang: str | None = None


def multiply(a: int, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@pytest.mark.parametrize(
    "tool", [convert_to_openai_tool(SearchArgs), convert_to_openai_tool(multiply), WEATHER, ADD]
)
@pytest.mark.parametrize(
    "prompt", ["北京今天天气怎么样?", "搜索 Python 教程, 前 30 条", "multiply 6 by 7", ""]
)
def test_arguments_validate_against_the_tool_schema(tool: dict, prompt: str) -> None:
    parameters = tool["function"]["parameters"]
    arguments = arguments_for(parameters, prompt, random.Random(0))
    jsonschema.validate(arguments, parameters)
    assert set(parameters.get("required", [])) <= set(arguments)


def test_hermes_text_is_what_the_transcripts_force() -> None:
    for name in ("hermes-qwen3-tools-auto-wellformed", "hermes-qwen3-tools-auto-parallel"):
        transcript = load_transcript(name)
        tool_calls = _response(name)["choices"][0]["message"]["tool_calls"]
        calls = [
            PlannedCall(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tool_calls
        ]
        assert re.fullmatch(transcript.request["structured_outputs"]["regex"], hermes_text(calls))
        assert [json.dumps(call.arguments, ensure_ascii=False) for call in calls] == [
            c["function"]["arguments"] for c in tool_calls
        ]


def test_planned_call_for_the_transcript_prompt_writes_the_transcript_text() -> None:
    calls = _plan(WELLFORMED.request["messages"][0]["content"], WELLFORMED.request["tools"])
    assert re.fullmatch(WELLFORMED.request["structured_outputs"]["regex"], hermes_text(calls))


def _inner(text: str) -> str:
    return text.split("<tool_call>\n", 1)[1].split("\n</tool_call>", 1)[0]


def test_malformed_text_never_parses_and_varies() -> None:
    calls = [PlannedCall("get_weather", {"city": "北京"}), PlannedCall("add", {"a": 2, "b": 3})]
    texts = {malformed_hermes_text(calls, random.Random(seed)) for seed in range(40)}
    assert len(texts) == 4
    for text in texts:
        assert text.startswith("<tool_call>\n") and "</tool_call>" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(_inner(text))


def test_malformed_text_includes_the_transcript_breakage() -> None:
    content = _response("hermes-qwen3-tools-auto-malformed")["choices"][0]["message"]["content"]
    calls = [PlannedCall("get_weather", {"city": "北京"})]
    assert content in {malformed_hermes_text(calls, random.Random(seed)) for seed in range(40)}


def test_malformed_text_is_deterministic() -> None:
    calls = [PlannedCall("add", {"a": 2, "b": 3})]
    assert malformed_hermes_text(calls, random.Random(5)) == malformed_hermes_text(calls, random.Random(5))


def test_tool_result_answer_quotes_the_result_in_the_users_language() -> None:
    answer = tool_result_answer(_result_turn())
    assert answer == _ZH_ANSWER_FIRST + "根据 get_weather 的结果：晴, 21°C。"
    messages = _result_turn()
    messages[0] = {"role": "user", "content": "What's the weather in Beijing?"}
    messages[-1] = {**messages[-1], "content": "sunny, 21°C"}
    assert tool_result_answer(messages) == _EN_ANSWER_FIRST + " According to get_weather: sunny, 21°C."


def test_tool_result_answer_covers_every_result_and_needs_one() -> None:
    messages = [
        {"role": "user", "content": "What is 2 + 3 and the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
    ]
    assert tool_result_answer(messages).endswith("According to add: 5. According to get_weather: rain.")
    assert tool_result_answer(messages[:2]) is None
    assert tool_result_answer([{"role": "user", "content": "hi"}]) is None
