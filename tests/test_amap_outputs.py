"""amap's reading of replies: cut by max_tokens (Truncated), structured output (parsed), replies
that do not parse (InvalidOutput) and malformed tool calls (MalformedToolCall).

A small canned LangChain chat model gives exact control over each reply; the chains around it
are LangChain's own (``with_structured_output``, ``bind_tools``, output parsers).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableLambda
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field
from support import FIXTURES

from helpers.concurrency import amap
from helpers.outcomes import Outcome
from helpers.outcomes import summarize_outcomes as summarize
from helpers.retry import Backoff

FAST = Backoff(base_s=0.001, max_s=0.01, seed=0)


class Person(BaseModel):
    name: str
    age: int


def reply(
    content: str = "",
    *,
    reasoning: str | None = None,
    finish: str | None = "stop",
    tokens: int = 7,
    **fields: Any,
) -> AIMessage:
    """An AIMessage as ChatOpenAI (and the kit's model) builds it from a vLLM reply."""
    return AIMessage(
        content=content,
        additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
        response_metadata={"finish_reason": finish} if finish else {},
        usage_metadata={"input_tokens": 5, "output_tokens": tokens, "total_tokens": 5 + tokens},
        **fields,
    )


class Canned(BaseChatModel):
    """Replies with the next of ``replies`` (the last one repeats); streams it word by word.

    ``received`` keeps the messages of every call. ``bind_tools`` binds OpenAI-format tools, as
    ChatOpenAI does, so LangChain's ``with_structured_output`` works on it.
    """

    replies: list[AIMessage]
    received: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "canned"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        self.received.append(messages)
        return self.replies[min(len(self.received), len(self.replies)) - 1].model_copy(deep=True)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("async only")

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        message = self._next(messages)
        reasoning = message.additional_kwargs.get("reasoning_content")
        if reasoning:
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", additional_kwargs={"reasoning_content": reasoning})
            )
        for word in str(message.content).split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata=message.response_metadata,
                usage_metadata=message.usage_metadata,
            )
        )


def canned(*replies: AIMessage) -> Canned:
    return Canned(replies=list(replies))


async def run(model: Any, prompts: list[Any], **settings: Any) -> list[Outcome]:
    return await amap(model, prompts, backoff=FAST, progress=False, **settings)


# --- Cut by max_tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
async def test_a_reply_cut_by_max_tokens_is_truncated_not_ok(stream: bool) -> None:
    model = canned(reply("Paris is the", reasoning="capital of France", finish="length", tokens=2048))
    [outcome] = await run(model, ["capital of France?"], retries=3, stream=stream)
    assert not outcome.ok and outcome.error_type == "Truncated"
    assert outcome.answer.strip() == "Paris is the" and outcome.reasoning == "capital of France"
    assert outcome.finish_reason == "length" and outcome.usage["completion_tokens"] == 2048
    assert outcome.attempts == 1 and len(model.received) == 1  # not retried: it would be cut again
    for advice in ("max_tokens", "after 2048 tokens", "thinking=False", "accept_truncated=True"):
        assert advice in outcome.error


async def test_a_cut_inside_the_thinking_says_no_answer_was_written() -> None:
    model = canned(reply("", reasoning="Let me think step by step", finish="length"))
    [outcome] = await run(model, ["why?"])
    assert outcome.error_type == "Truncated" and outcome.answer == ""
    assert "inside the thinking: no answer was written" in outcome.error


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
async def test_accept_truncated_keeps_a_cut_reply_as_ok(stream: bool) -> None:
    model = canned(reply("Paris is the", finish="length"))
    [outcome] = await run(model, ["capital?"], accept_truncated=True, stream=stream)
    assert outcome.ok and outcome.error_type is None
    assert outcome.answer.strip() == "Paris is the" and outcome.finish_reason == "length"
    assert outcome.truncated
    assert "1 ok (1 cut by max_tokens, accepted)" in summarize([outcome])


async def test_retry_invalid_retries_a_cut_reply() -> None:
    model = canned(reply("Paris is", finish="length"), reply("Paris."))
    [outcome] = await run(model, ["capital?"], retry_invalid=True)
    assert outcome.ok and outcome.answer == "Paris." and outcome.retried == ["Truncated"]


async def test_summarize_counts_truncated_apart_from_failures() -> None:
    outcomes = [
        Outcome(0, "a", ok=True, attempts=1, finish_reason="stop"),
        Outcome(1, "b", ok=False, error_type="Truncated", attempts=1, finish_reason="length"),
        Outcome(2, "c", ok=False, error_type="Truncated", attempts=1, finish_reason="length"),
        Outcome(3, "d", ok=False, error_type="BadRequestError", attempts=1),
    ]
    assert summarize(outcomes).startswith(
        "4 prompts: 1 ok, 2 truncated, 1 failed (BadRequestError x1), 0 retries, 4 requests sent"
    )


async def test_the_progress_bar_counts_truncated(capsys: pytest.CaptureFixture) -> None:
    await amap(canned(reply("cut", finish="length")), ["a", "b"], progress=True)
    bar = capsys.readouterr().err.strip().split("\r")[-1]
    assert "ok=0, truncated=2, failed=0" in bar


async def test_a_truncated_outcome_is_not_resumed_from_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await run(canned(reply("cut", finish="length")), ["a", "b"], checkpoint=path)
    model = canned(reply("whole"))
    again = await run(model, ["a", "b"], checkpoint=path)
    assert len(model.received) == 2 and [o.answer for o in again] == ["whole", "whole"]

    path = tmp_path / "accepted.jsonl"
    await run(canned(reply("cut", finish="length")), ["a"], checkpoint=path, accept_truncated=True)
    model = canned(reply("whole"))
    [resumed] = await run(model, ["a"], checkpoint=path, accept_truncated=True)
    assert resumed.from_checkpoint and resumed.answer == "cut" and model.received == []
    [strict] = await run(model, ["a"], checkpoint=path)  # this run does not accept cut replies
    assert not strict.from_checkpoint and strict.answer == "whole" and len(model.received) == 1


# --- Structured output ----------------------------------------------------------------------


def person_call(args: dict[str, Any]) -> AIMessage:
    return reply("", tool_calls=[{"name": "Person", "args": args, "id": "call_1"}], finish="tool_calls")


async def test_a_structured_chain_gives_the_parsed_object_and_its_json_text(tmp_path: Path) -> None:
    model = canned(person_call({"name": "张三", "age": 28}))
    chain = model.with_structured_output(Person)
    path = tmp_path / "people.jsonl"
    [outcome] = await run(chain, ["张三, 28 岁"], checkpoint=path)
    assert outcome.ok and outcome.parsed == Person(name="张三", age=28)
    assert json.loads(outcome.answer) == {"name": "张三", "age": 28}
    assert outcome.to_json_dict()["parsed"] == {"name": "张三", "age": 28}
    [reloaded] = await run(chain, ["张三, 28 岁"], checkpoint=path)
    assert reloaded.from_checkpoint and reloaded.parsed == {"name": "张三", "age": 28}  # a dict now
    assert len(model.received) == 1


async def test_include_raw_gives_the_parsed_object_and_sees_a_cut() -> None:
    chain = canned(person_call({"name": "Li", "age": 3})).with_structured_output(Person, include_raw=True)
    [outcome] = await run(chain, ["Li, 3"])
    assert outcome.ok and outcome.parsed == Person(name="Li", age=3)
    assert outcome.finish_reason == "tool_calls" and outcome.usage["completion_tokens"] == 7

    cut = reply(
        "", finish="length", invalid_tool_calls=[{"name": "Person", "args": '{"name": "L', "id": "c"}]
    )
    [outcome] = await run(canned(cut).with_structured_output(Person, include_raw=True), ["Li, 3"])
    assert outcome.error_type == "Truncated" and "structured reply is incomplete" in outcome.error


@pytest.mark.parametrize("include_raw", [False, True])
async def test_a_structured_chain_that_returns_nothing_is_invalid_output(include_raw: bool) -> None:
    model = canned(reply("I think the person is 28."))  # text instead of the tool call
    [outcome] = await run(model.with_structured_output(Person, include_raw=include_raw), ["张三"])
    assert not outcome.ok and outcome.error_type == "InvalidOutput"
    assert "I think the person is 28." in outcome.error and outcome.attempts == 1


async def test_a_reply_that_does_not_parse_is_invalid_output_retried_on_request() -> None:
    chain = canned(reply('{"name": "Li", "age": "three"}'), reply('{"name": "Li", "age": 3}'))
    parsed_chain = chain | PydanticOutputParser(pydantic_object=Person)
    [outcome] = await run(parsed_chain, ["Li, 3"], retries=3)
    assert outcome.error_type == "InvalidOutput" and outcome.attempts == 1
    assert "OutputParserException" in outcome.error and '\'{"name": "Li", "age": "three"}\'' in outcome.error
    assert "retry_invalid=True" in outcome.error

    chain = canned(reply('{"name": "Li", "age": "three"}'), reply('{"name": "Li", "age": 3}'))
    parsed_chain = chain | PydanticOutputParser(pydantic_object=Person)
    [outcome] = await run(parsed_chain, ["Li, 3"], retry_invalid=True)
    assert outcome.ok and outcome.parsed == Person(name="Li", age=3) and outcome.retried == ["InvalidOutput"]


@pytest.mark.parametrize(
    ("parse", "error"),
    [
        (lambda message: Person.model_validate_json(message.content), "ValidationError"),
        (lambda message: json.loads(message.content), "JSONDecodeError"),
    ],
    ids=["pydantic", "json"],
)
async def test_pydantic_and_json_errors_are_invalid_output(parse: Any, error: str) -> None:
    chain = canned(reply('{"name": "Li", "age": ')) | RunnableLambda(parse)
    [outcome] = await run(chain, ["Li, 3"])
    assert outcome.error_type == "InvalidOutput" and error in outcome.error


async def test_a_cut_structured_reply_is_truncated_not_a_json_error() -> None:
    chain = canned(reply('{"name": "Li", "a', finish="length")) | PydanticOutputParser(pydantic_object=Person)
    [outcome] = await run(chain, ["Li, 3"])
    assert outcome.error_type == "Truncated" and "structured reply is incomplete" in outcome.error
    assert outcome.answer == '{"name": "Li", "a'

    [outcome] = await run(chain, ["Li, 3"], accept_truncated=True)  # still cannot parse
    assert outcome.error_type == "InvalidOutput" and "cut by max_tokens" in outcome.error


# --- Tool calls -----------------------------------------------------------------------------


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return "sunny"


async def test_tool_calls_are_the_parsed_value_of_a_plain_message() -> None:
    call = {"name": "get_weather", "args": {"city": "北京"}, "id": "chatcmpl-tool-1", "type": "tool_call"}
    model = canned(reply("我来查一下。", tool_calls=[call], finish="tool_calls"))
    [outcome] = await run(model.bind_tools([get_weather]), ["北京今天天气怎么样?"])
    assert outcome.ok and outcome.answer == "我来查一下。"
    assert outcome.parsed == [call] and outcome.to_json_dict()["parsed"] == [call]


def malformed_content() -> str:
    """``content`` of a real vLLM 0.32 reply whose malformed call the hermes parser gave up on.

    (The hermes transcripts end lines with LF only, which ``support.load_transcript`` does not
    split yet: the body is the text after the last blank line.)
    """
    raw = (FIXTURES / "hermes-qwen3-tools-auto-malformed.http").read_text(encoding="utf-8")
    return json.loads(raw.rsplit("\n\n", 1)[-1])["choices"][0]["message"]["content"]


async def test_a_raw_tool_call_in_content_is_a_malformed_tool_call() -> None:
    raw = malformed_content()
    assert raw.startswith("<tool_call>")
    model = canned(reply(raw))
    [outcome] = await run(model.bind_tools([get_weather]), ["北京今天天气怎么样?"], retries=3)
    assert not outcome.ok and outcome.error_type == "MalformedToolCall" and outcome.attempts == 1
    assert outcome.answer == raw and "<tool_call>" in outcome.error
    assert "retry_invalid=True" in outcome.error and "tool_choice" in outcome.error

    [outcome] = await run(canned(reply(raw)), ["explain the format"])  # no tools bound: just text
    assert outcome.ok and outcome.answer == raw


async def test_arguments_langchain_cannot_read_are_a_malformed_tool_call() -> None:
    bad = [{"name": "get_weather", "args": '{"city": "北京"', "id": "c1", "error": None}]
    [outcome] = await run(canned(reply("", invalid_tool_calls=bad)).bind_tools([get_weather]), ["天气?"])
    assert outcome.error_type == "MalformedToolCall" and "'get_weather'" in outcome.error

    good = {"name": "get_weather", "args": {"city": "北京"}, "id": "c2", "type": "tool_call"}
    model = canned(reply("", invalid_tool_calls=bad), reply("", tool_calls=[good]))
    [outcome] = await run(model.bind_tools([get_weather]), ["天气?"], retry_invalid=True)
    assert outcome.ok and outcome.parsed == [good] and outcome.retried == ["MalformedToolCall"]


async def test_streamed_structured_chains_give_the_last_object_or_say_why_not() -> None:
    json_reply = reply('{"name": "Li", "age": 3}')
    chain = canned(json_reply) | PydanticOutputParser(pydantic_object=Person)
    [outcome] = await run(chain, ["Li, 3"], stream=True)
    assert outcome.ok and outcome.parsed == Person(name="Li", age=3) and outcome.finish_reason == "stop"

    cut = canned(reply('{"name": "Li", "a', finish="length")) | PydanticOutputParser(pydantic_object=Person)
    [outcome] = await run(cut, ["Li, 3"], stream=True)
    assert outcome.error_type == "Truncated"

    text_only = canned(reply("Li is three.")).with_structured_output(Person, include_raw=True)
    [outcome] = await run(text_only, ["Li, 3"], stream=True)  # streamed: no "parsed" key at all
    assert outcome.error_type == "InvalidOutput" and "returned None" in outcome.error


class ParsingModel(Canned):
    """Validates its reply against Person inside the model call, as the openai SDK's parse() does."""

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        Person.model_validate_json(str(self._next(messages).content))
        raise AssertionError("unreachable: the canned replies are not valid Person JSON")


async def test_a_validation_error_inside_the_model_call_shows_the_raw_text() -> None:
    [outcome] = await run(ParsingModel(replies=[reply("这是模拟器生成的回答")]), ["张三"])
    assert outcome.error_type == "InvalidOutput" and "ValidationError" in outcome.error
    assert outcome.answer == "这是模拟器生成的回答" and "'这是模拟器生成的回答'" in outcome.error
