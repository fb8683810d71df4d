"""helpers.chat with tools and structured output, against the real vLLM 0.32 transcripts
(``hermes-qwen3-*``: a server started with the tool flags; ``noflags-qwen3-*``: without them)."""

from __future__ import annotations

import json
from typing import Literal, TypedDict

import openai
import pytest
from langchain_core.exceptions import ModelInvalidRequestError
from langchain_core.messages import AIMessageChunk
from pydantic import BaseModel, Field
from support import load_transcript, replayed_model

from helpers.endpoint import Endpoint
from helpers.errors import SERVE_HINT
from helpers.reasoning import REASONING_KEY
from helpers.replies import Truncated
from helpers.retry import classify, describe

MOCK = Endpoint("http://vllm.test/v1", "Qwen-0.6B", api_key="sk-test-123")


def wire_message(name: str) -> dict:
    return load_transcript(name).json()["choices"][0]["message"]


def wire_calls(name: str) -> list[dict]:
    """The tool calls of a transcript as LangChain reports them."""
    transcript = load_transcript(name)
    if "text/event-stream" not in transcript.headers["content-type"]:
        calls = wire_message(name)["tool_calls"]
        return [
            {"name": c["function"]["name"], "args": json.loads(c["function"]["arguments"]), "id": c["id"]}
            for c in calls
        ]
    merged: dict[int, dict] = {}
    for event in transcript.sse_events():
        for call in (event["choices"] or [{}])[0].get("delta", {}).get("tool_calls") or []:
            entry = merged.setdefault(call["index"], {"name": "", "arguments": "", "id": None})
            entry["id"] = call.get("id") or entry["id"]
            entry["name"] += call["function"].get("name") or ""
            entry["arguments"] += call["function"].get("arguments") or ""
    return [
        {"name": e["name"], "args": json.loads(e["arguments"]), "id": e["id"]}
        for _, e in sorted(merged.items())
    ]


def streamed_reasoning(name: str) -> str:
    events = load_transcript(name).sse_events()
    return "".join((e["choices"] or [{}])[0].get("delta", {}).get("reasoning") or "" for e in events)


class GetWeather(BaseModel):
    """Current weather for a city"""

    city: str = Field(description="City name")
    unit: Literal["celsius", "fahrenheit"] | None = None


class Add(BaseModel):
    """Add two integers"""

    a: int
    b: int


TOOLS = [GetWeather, Add]


def calls_of(message) -> list[dict]:
    return [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in message.tool_calls]


# --- bind_tools, non-streamed -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool_choice", "sent"),
    [
        (None, None),
        ("auto", "auto"),
        ("any", "required"),
        ("required", "required"),
        ("GetWeather", {"type": "function", "function": {"name": "GetWeather"}}),
        ("none", "none"),
    ],
)
def test_every_tool_choice_reaches_the_server(tool_choice, sent) -> None:
    seen: list[dict] = []
    model = replayed_model("hermes-qwen3-tools-none", seen).bind_tools(TOOLS, tool_choice=tool_choice)
    model.invoke("北京今天天气怎么样?")
    assert seen[0].get("tool_choice") == sent
    assert [tool["function"]["name"] for tool in seen[0]["tools"]] == ["GetWeather", "Add"]


@pytest.mark.parametrize(
    "name",
    [
        "hermes-qwen3-tools-auto-wellformed",
        "hermes-qwen3-tools-auto-parallel",
        "hermes-qwen3-tools-auto-text-then-call",
        "hermes-qwen3-tools-auto-thinking-wellformed",
    ],
)
async def test_tool_calls_are_parsed_and_content_and_reasoning_kept(name: str) -> None:
    message = wire_message(name)
    model = replayed_model(name).bind_tools(TOOLS)
    for reply in (model.invoke("q"), await model.ainvoke("q")):
        assert calls_of(reply) == wire_calls(name)
        assert reply.content == (message["content"] or "")
        assert reply.additional_kwargs[REASONING_KEY] == (message["reasoning"] or "")
        assert reply.response_metadata["finish_reason"] == "tool_calls"
        assert reply.invalid_tool_calls == []


def test_parallel_calls_are_two_calls() -> None:
    reply = replayed_model("hermes-qwen3-tools-auto-parallel").bind_tools(TOOLS).invoke("q")
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_weather", {"city": "北京"}),
        ("add", {"a": 2, "b": 3}),
    ]


def test_thinking_is_kept_next_to_the_call() -> None:
    reply = replayed_model("hermes-qwen3-tools-auto-thinking-wellformed").bind_tools(TOOLS).invoke("q")
    assert reply.additional_kwargs[REASONING_KEY] == "�NRȇ�ick�}5~�"
    assert reply.tool_calls[0]["args"] == {"city": "北京"}
    assert reply.usage_metadata["output_token_details"] == {"reasoning": 13}


def test_a_malformed_call_lands_as_raw_text_in_content() -> None:
    reply = replayed_model("hermes-qwen3-tools-auto-malformed").bind_tools(TOOLS).invoke("q")
    assert reply.tool_calls == [] and reply.invalid_tool_calls == []
    assert reply.content.startswith("<tool_call>\n{") and reply.content.endswith("</tool_call>")
    assert reply.response_metadata["finish_reason"] == "stop"


@pytest.mark.parametrize("name", ["hermes-qwen3-tools-named", "hermes-qwen3-tools-named-thinking"])
def test_a_named_call_with_arguments_that_are_no_object_is_an_invalid_call(name: str) -> None:
    # the random model wrote `true` as arguments: LangChain's own parser would crash on it
    model = replayed_model(name).bind_tools(TOOLS, tool_choice="get_weather")
    reply = model.invoke("q")
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.tool_calls == []
    (invalid,) = reply.invalid_tool_calls
    assert (invalid["name"], invalid["args"], invalid["id"]) == (
        "get_weather",
        "true",
        wire_message(name)["tool_calls"][0]["id"],
    )
    assert "JSON object" in invalid["error"]
    assert reply.additional_kwargs[REASONING_KEY] == (wire_message(name)["reasoning"] or "")


def test_a_named_call_streamed_finishes_with_stop() -> None:
    chunks = list(
        replayed_model("hermes-qwen3-tools-named-stream")
        .bind_tools(TOOLS, tool_choice="get_weather")
        .stream("q")
    )
    merged = sum(chunks[1:], chunks[0])
    assert merged.response_metadata["finish_reason"] == "stop"
    assert [call["name"] for call in merged.tool_calls + merged.invalid_tool_calls] == ["get_weather"]


# --- streamed tool calls ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "hermes-qwen3-tools-auto-wellformed-stream",
        "hermes-qwen3-tools-auto-parallel-stream",
        "hermes-qwen3-tools-auto-thinking-wellformed-stream",
        "hermes-qwen3-tools-auto-text-then-call-stream",
    ],
)
async def test_streamed_tool_call_chunks_merge_into_tool_calls(name: str) -> None:
    model = replayed_model(name).bind_tools(TOOLS)
    for chunks in (list(model.stream("q")), [c async for c in model.astream("q")]):
        assert all(REASONING_KEY in chunk.additional_kwargs for chunk in chunks)
        assert any(chunk.tool_call_chunks for chunk in chunks)
        merged = sum(chunks[1:], chunks[0])
        assert isinstance(merged, AIMessageChunk)
        assert calls_of(merged) == wire_calls(name)
        assert merged.additional_kwargs[REASONING_KEY] == streamed_reasoning(name)
        assert merged.response_metadata["finish_reason"] == "tool_calls"


def test_streamed_text_before_the_call_stays_in_content() -> None:
    chunks = list(
        replayed_model("hermes-qwen3-tools-auto-text-then-call-stream").bind_tools(TOOLS).stream("q")
    )
    merged = sum(chunks[1:], chunks[0])
    assert merged.content == "我来查一下。\n\n"


async def test_astream_events_carry_tool_call_chunks_and_the_final_message() -> None:
    name = "hermes-qwen3-tools-auto-thinking-wellformed-stream"
    model = replayed_model(name).bind_tools(TOOLS)
    events = [event async for event in model.astream_events("q", version="v2")]
    streamed = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    assert any(chunk.tool_call_chunks for chunk in streamed)
    assert "".join(c.additional_kwargs.get(REASONING_KEY, "") for c in streamed) == streamed_reasoning(name)
    (end,) = [e["data"]["output"] for e in events if e["event"] == "on_chat_model_end"]
    assert calls_of(end) == wire_calls(name)
    assert end.additional_kwargs[REASONING_KEY] == streamed_reasoning(name)


# --- with_structured_output ---------------------------------------------------------------------


class Review(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    stars: int = Field(ge=1, le=5)
    spam: bool


class ReviewDict(TypedDict):
    sentiment: Literal["positive", "negative", "neutral"]
    stars: int
    spam: bool


REVIEW_SCHEMA = {
    "title": "Review",
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "spam": {"type": "boolean"},
    },
    "required": ["sentiment", "stars", "spam"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (Review, Review(sentiment="positive", stars=2, spam=False)),
        (ReviewDict, {"sentiment": "positive", "stars": 2, "spam": False}),
        (REVIEW_SCHEMA, {"sentiment": "positive", "stars": 2, "spam": False}),
    ],
    ids=["pydantic", "typeddict", "json-schema"],
)
@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
async def test_structured_output_parses_the_json_reply(schema, expected, method: str) -> None:
    seen: list[dict] = []
    model = replayed_model("hermes-qwen3-structured-json-schema-enum", seen).with_structured_output(
        schema, method=method
    )
    assert model.invoke("评论: 太好用了, 五星! 输出 JSON。") == expected
    assert await model.ainvoke("q") == expected
    kind = seen[0]["response_format"]["type"]
    assert kind == ("json_schema" if method == "json_schema" else "json_object")
    if method == "json_schema":
        assert seen[0]["response_format"]["json_schema"]["schema"]["required"] == [
            "sentiment",
            "stars",
            "spam",
        ]


def test_structured_output_with_include_raw_keeps_the_reasoning() -> None:
    model = replayed_model("hermes-qwen3-structured-json-schema-enum-thinking").with_structured_output(
        Review, include_raw=True
    )
    result = model.invoke("q")
    assert result["parsed"] == Review(sentiment="positive", stars=2, spam=True)
    assert result["parsing_error"] is None
    assert (
        result["raw"].additional_kwargs[REASONING_KEY]
        == wire_message("hermes-qwen3-structured-json-schema-enum-thinking")["reasoning"]
    )


@pytest.mark.parametrize("schema", [Review, REVIEW_SCHEMA], ids=["pydantic", "json-schema"])
@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_structured_output_cut_by_max_tokens_is_an_error_not_a_result(schema, method: str) -> None:
    # the openai SDK's parse refuses a cut reply; the kit's model names it as the kit's Truncated
    model = replayed_model("hermes-qwen3-structured-json-schema-cut")
    with pytest.raises(Truncated, match="cut by max_tokens"):
        model.with_structured_output(schema, method=method, include_raw=True).invoke("q")
    cut = openai.LengthFinishReasonError(
        completion=_cut_completion("hermes-qwen3-structured-json-schema-cut")
    )
    assert not classify(cut).retryable


def _cut_completion(name: str):
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(load_transcript(name).json())


class get_weather(BaseModel):  # the tool name the transcript's call uses
    """Current weather for a city"""

    city: str


def test_structured_output_by_function_calling_uses_a_named_tool() -> None:
    seen: list[dict] = []
    model = replayed_model("hermes-qwen3-tools-auto-thinking-wellformed", seen).with_structured_output(
        get_weather, method="function_calling", include_raw=True
    )
    result = model.invoke("北京今天天气怎么样?")
    assert seen[0]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert result["parsed"] == get_weather(city="北京")
    assert result["raw"].additional_kwargs[REASONING_KEY] == "�NRȇ�ick�}5~�"


# --- a server without the tool flags: the error says which flags to add ------------------------


@pytest.mark.parametrize(
    ("name", "tool_choice"),
    [
        ("noflags-qwen3-tools-default-choice", None),
        ("noflags-qwen3-tools-auto-error", "auto"),
        ("noflags-qwen3-tools-required", "any"),
        ("noflags-qwen3-tools-named", "get_weather"),
    ],
)
async def test_tools_refused_for_missing_flags_say_which_flags_to_add(name: str, tool_choice) -> None:
    original = load_transcript(name).json()["error"]["message"]
    model = replayed_model(name).bind_tools([get_weather, Add], tool_choice=tool_choice)

    async def first_async_chunk():
        async for chunk in model.astream("q"):
            return chunk

    calls = [
        lambda: model.invoke("q"),
        lambda: next(iter(model.stream("q"))),
    ]
    errors = []
    for call in calls:
        with pytest.raises(openai.BadRequestError) as raised:
            call()
        errors.append(raised.value)
    for coroutine in (model.ainvoke("q"), first_async_chunk()):
        with pytest.raises(openai.BadRequestError) as raised:
            await coroutine
        errors.append(raised.value)
    for error in errors:
        assert isinstance(error, ModelInvalidRequestError)  # LangChain's class, as for any 400
        assert error.status_code == 400
        assert original in str(error) and SERVE_HINT in str(error)
        assert not classify(error).retryable
        assert describe(error).count(SERVE_HINT) == 1


def test_tool_choice_none_works_without_the_flags() -> None:
    reply = replayed_model("noflags-qwen3-tools-none").bind_tools(TOOLS, tool_choice="none").invoke("q")
    assert reply.tool_calls == [] and isinstance(reply.content, str)


def test_other_bad_requests_are_left_alone() -> None:
    model = replayed_model("hermes-qwen3-tools-unknown-named").bind_tools(TOOLS, tool_choice="GetWeather")
    with pytest.raises(openai.BadRequestError) as raised:
        model.invoke("q")
    assert SERVE_HINT not in str(raised.value)


def test_content_blocks_output_keeps_reasoning_on_every_chunk() -> None:
    name = "hermes-qwen3-tools-auto-thinking-wellformed-stream"
    chunks = list(replayed_model(name, output_version="v1").bind_tools(TOOLS).stream("q"))
    assert all(REASONING_KEY in chunk.additional_kwargs for chunk in chunks)
    merged = sum(chunks[1:], chunks[0])
    assert merged.additional_kwargs[REASONING_KEY] == streamed_reasoning(name)
    assert calls_of(merged) == wire_calls(name)
