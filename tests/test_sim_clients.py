"""The simulator through the clients the notebooks use: the openai SDK and LangChain."""

from __future__ import annotations

import asyncio
import json
from typing import TypedDict

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from helpers.chat import make_chat_model
from helpers.endpoint import Endpoint
from helpers.sim import serve

pytestmark = pytest.mark.server

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server():
    with serve(profile="instant", api_key="sk-sim") as running:
        yield running


def test_openai_sync_non_streamed(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-sim")
    completion = client.chat.completions.create(model="Qwen-0.6B", messages=MESSAGES)
    choice = completion.choices[0]
    assert completion.model == "Qwen/Qwen3-0.6B"
    assert choice.finish_reason == "stop"
    assert "simulat" in choice.message.content
    assert choice.message.model_extra["reasoning"]
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


def test_openai_sync_streamed(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-sim")
    chunks = list(
        client.chat.completions.create(
            model="Qwen-0.6B",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    # role chunk + one chunk per token except <think> and </think> (no delta) + usage chunk
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "simulat" in content


async def test_openai_async_non_streamed_and_streamed(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-sim")
    completions = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="Qwen-0.6B",
                messages=[{"role": "user", "content": f"question {i}"}],
                max_tokens=20,
            )
            for i in range(8)
        )
    )
    assert [c.usage.completion_tokens for c in completions] == [20] * 8
    stream = await client.chat.completions.create(
        model="Qwen-0.6B", messages=MESSAGES, stream=True, max_tokens=12
    )
    pieces = [chunk async for chunk in stream]
    assert pieces[-1].choices[0].finish_reason == "length"
    await client.close()


def test_openai_raises_typed_errors(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-sim", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="Qwen-0.6B", messages=MESSAGES, temperature=-1)
    assert "temperature must be non-negative" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    wrong_key = openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_key.chat.completions.create(model="Qwen-0.6B", messages=MESSAGES)


def llm(server, **kwargs) -> ChatOpenAI:
    # A fresh async HTTP client per model: langchain-openai otherwise caches one client bound to
    # the first event loop, and each pytest-asyncio test runs its own loop ("Event loop is closed").
    return ChatOpenAI(
        model="Qwen-0.6B",
        base_url=server.base_url,
        api_key="sk-sim",
        max_retries=0,
        http_async_client=httpx2.AsyncClient(),
        **kwargs,
    )


def test_langchain_invoke(server):
    message = llm(server).invoke("Say hello.")
    assert isinstance(message, AIMessage) and "simulat" in message.content
    assert message.usage_metadata["output_tokens"] > 0


async def test_langchain_ainvoke_and_astream(server):
    message = await llm(server).ainvoke("Say hello.")
    assert "simulat" in message.content
    chunks = [c async for c in llm(server, stream_usage=True).astream("Say hello.")]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "simulat" in "".join(c.content for c in chunks)
    assert sum((c.usage_metadata or {}).get("output_tokens", 0) for c in chunks) > 0


async def test_langchain_abatch_keeps_order():
    # Without a reasoning parser the think block, which quotes the question, is in `content`.
    with serve(profile="instant", reasoning_parser="none", api_key="sk-sim") as plain:
        prompts = [f"Question number {i}" for i in range(6)]
        results = await llm(plain, max_tokens=40).abatch(prompts, config={"max_concurrency": 3})
    assert len(results) == 6
    for prompt, result in zip(prompts, results, strict=True):
        assert isinstance(result, AIMessage)
        assert f'"{prompt}"' in result.content


def test_langchain_with_thinking_disabled(server):
    model = llm(server, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    message = model.invoke("Say hello.")
    assert message.content.startswith("This is a simulated answer")
    details = message.response_metadata["token_usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] == 0


# --- tools and structured output through the clients ---------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "北京今天天气怎么样?"}]


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"{city}: 晴, 21°C"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="the person's name")
    age: int
    skills: list[str]


class PersonDict(TypedDict):
    """A person mentioned in the text."""

    name: str
    age: int
    skills: list[str]


PERSON_SCHEMA = {
    "title": "Person",
    "description": "A person mentioned in the text.",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "skills": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "skills"],
}
PERSON_TEXT = "张三, 28 岁, 会 Python 和 SQL。提取成 JSON。"


@pytest.fixture(scope="module")
def tool_server():
    with serve(profile="instant", enable_auto_tool_choice=True, tool_call_parser="hermes") as running:
        yield running


def kit_model(server, thinking: bool | None = False, **kwargs) -> ChatOpenAI:
    return make_chat_model(thinking, endpoint=Endpoint(server.base_url, "Qwen-0.6B"), max_retries=0, **kwargs)


def test_openai_tool_call_sync_and_streamed(tool_server):
    client = openai.OpenAI(base_url=tool_server.base_url, api_key="x")
    completion = client.chat.completions.create(
        model="Qwen-0.6B", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "北京"}
    assert choice.message.model_extra["reasoning"]
    stream = client.chat.completions.create(
        model="Qwen-0.6B", messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], stream=True
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or ():
            entry = calls.setdefault(delta_call.index, {"name": "", "arguments": ""})
            entry["name"] += delta_call.function.name or ""
            entry["arguments"] += delta_call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls == {0: {"name": "get_weather", "arguments": '{"city": "北京"}'}}


async def test_openai_async_structured_output(tool_server):
    client = openai.AsyncOpenAI(base_url=tool_server.base_url, api_key="x")
    completion = await client.chat.completions.parse(
        model="Qwen-0.6B",
        messages=[{"role": "user", "content": PERSON_TEXT}],
        response_format=Person,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert completion.choices[0].message.parsed == Person(name="张三", age=28, skills=["Python", "SQL"])
    await client.close()


def test_openai_bad_tool_input_raises_bad_request_with_vllms_message(tool_server):
    client = openai.OpenAI(base_url=tool_server.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="does not match any of the specified `tools`"):
        client.chat.completions.create(
            model="Qwen-0.6B",
            messages=WEATHER_QUESTION,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    with pytest.raises(openai.BadRequestError, match="Grammar error: Invalid type: nonsense"):
        client.chat.completions.create(
            model="Qwen-0.6B",
            messages=WEATHER_QUESTION,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "X", "schema": {"type": "nonsense"}},
            },
        )


def test_langchain_without_tool_flags_gets_vllms_400(server):
    model = llm(server).bind_tools([get_weather])
    with pytest.raises(
        openai.BadRequestError, match="requires --enable-auto-tool-choice and --tool-call-parser"
    ):
        model.invoke("北京今天天气怎么样?")


@pytest.mark.parametrize("tool_choice", [None, "auto", "any", "required", "get_weather", True])
@pytest.mark.parametrize("make", ["kit", "plain"])
def test_langchain_bind_tools_with_every_tool_choice(tool_server, tool_choice, make):
    model = kit_model(tool_server) if make == "kit" else llm(tool_server)
    bound = model.bind_tools([get_weather, add], tool_choice=tool_choice)
    message = bound.invoke("北京今天天气怎么样?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "北京"})]
    # A named tool (True with several tools means "required" in LangChain) finishes with "stop".
    named = tool_choice == "get_weather"
    assert message.response_metadata["finish_reason"] == ("stop" if named else "tool_calls")


def test_langchain_tool_loop_ends_with_a_text_answer(tool_server):
    model = kit_model(tool_server).bind_tools([get_weather])
    messages = [HumanMessage("北京今天天气怎么样?")]
    for _ in range(3):
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            messages.append(ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"]))
    assert not messages[-1].tool_calls
    assert "21" in messages[-1].content


def test_langchain_keeps_the_reasoning_next_to_tool_calls(tool_server):
    message = kit_model(tool_server, thinking=True).bind_tools([get_weather]).invoke("北京今天天气怎么样?")
    assert message.tool_calls and message.additional_kwargs["reasoning_content"]
    chunks = list(
        kit_model(tool_server, thinking=True).bind_tools([get_weather]).stream("北京今天天气怎么样?")
    )
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [c["name"] for c in merged.tool_calls] == ["get_weather"]
    assert merged.tool_calls[0]["args"] == {"city": "北京"}
    assert merged.additional_kwargs["reasoning_content"]


async def test_langchain_async_streamed_tool_calls(tool_server):
    model = kit_model(tool_server).bind_tools([get_weather, add], tool_choice="required")
    merged = None
    async for chunk in model.astream("北京今天天气怎么样?"):
        merged = chunk if merged is None else merged + chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("get_weather", {"city": "北京"})]
    message = await model.ainvoke("北京今天天气怎么样?")
    assert message.tool_calls[0]["args"] == {"city": "北京"}


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize("schema", [Person, PersonDict, PERSON_SCHEMA], ids=["pydantic", "typeddict", "json"])
def test_langchain_structured_output_every_method_and_schema(tool_server, method, schema):
    if method == "json_mode":
        # JSON mode only promises a JSON object: the schema reaches the model through the prompt.
        structured = kit_model(tool_server).with_structured_output(schema, method=method, include_raw=True)
        result = structured.invoke(PERSON_TEXT + ' Keys: "name", "age", "skills".')
        assert set(json.loads(result["raw"].content)) == {"name", "age", "skills"}
        assert result["raw"].response_metadata["finish_reason"] == "stop"
        return
    result = kit_model(tool_server).with_structured_output(schema, method=method).invoke(PERSON_TEXT)
    if schema is Person:
        assert result == Person(name="张三", age=28, skills=["Python", "SQL"])
    else:
        assert result == {"name": "张三", "age": 28, "skills": ["Python", "SQL"]}


async def test_langchain_structured_output_async_and_streamed(tool_server):
    structured = kit_model(tool_server, thinking=True).with_structured_output(Person, include_raw=True)
    result = await structured.ainvoke(PERSON_TEXT)
    assert result["parsed"] == Person(name="张三", age=28, skills=["Python", "SQL"])
    assert result["raw"].additional_kwargs["reasoning_content"]
    streamed = [
        chunk
        async for chunk in kit_model(tool_server).with_structured_output(PersonDict).astream(PERSON_TEXT)
    ]
    assert streamed[-1] == {"name": "张三", "age": 28, "skills": ["Python", "SQL"]}
