"""What amap takes: strings, message lists (LangChain or OpenAI-style dicts), prompt values,
template variables for ``prompt | model``, and any Runnable around a chat model, whose
OpenAI-compatible models still lose their hidden SDK retries. Checkpoints resume all of them."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from test_amap_outputs import Canned, canned, reply, run
from test_concurrency import plain_chat_openai, requests_seen

from helpers.chat import make_chat_model
from helpers.concurrency import amap, map_prompts
from helpers.endpoint import Endpoint
from helpers.inputs import as_record
from helpers.runnables import binds_tools, chat_models, starts_with_language_model
from helpers.sim import serve

SHORT = {"think_tokens_mean": 8, "answer_tokens_mean": 8}
TOOL_FLAGS = {"enable_auto_tool_choice": True, "tool_call_parser": "hermes"}  # as vllm serve's
CONVERSATION = [SystemMessage("Answer in one word."), HumanMessage("Capital of France?")]
AS_DICTS = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Capital of France?"},
]


def sent_texts(model: Canned) -> list[list[tuple[str, str]]]:
    return [[(m.type, str(m.content)) for m in messages] for messages in model.received]


async def test_strings_message_lists_dicts_and_prompt_values_are_each_one_request() -> None:
    model = canned(reply("Paris"))
    prompt_value = ChatPromptTemplate.from_messages(CONVERSATION).invoke({})
    items = ["Capital of France?", CONVERSATION, AS_DICTS, prompt_value]
    outcomes = await run(model, items)
    assert all(o.ok and o.answer == "Paris" for o in outcomes)
    conversation = [("system", "Answer in one word."), ("human", "Capital of France?")]
    assert sent_texts(model) == [[("human", "Capital of France?")], conversation, conversation, conversation]
    assert [o.prompt for o in outcomes] == ["Capital of France?", AS_DICTS, AS_DICTS, AS_DICTS]


async def test_a_prompt_template_chain_takes_its_variables() -> None:
    model = canned(reply("Paris"))
    template = ChatPromptTemplate.from_messages(
        [("system", "Answer in {language}."), ("human", "{question}")]
    )
    outcomes = await run(template | model, [{"language": "中文", "question": "法国的首都?"}])
    assert outcomes[0].ok and outcomes[0].prompt == {"language": "中文", "question": "法国的首都?"}
    assert sent_texts(model) == [[("system", "Answer in 中文."), ("human", "法国的首都?")]]


@pytest.mark.parametrize(
    ("prompts", "error", "message"),
    [
        (["ok", []], ValueError, r"prompts\[1\] is an empty message list"),
        (["ok", [{"content": "hi"}]], ValueError, r"prompts\[1\]\[0\] is a dict without 'role'"),
        (["ok", [HumanMessage("hi"), 3]], TypeError, r"prompts\[1\]\[1\] is int"),
        (
            ["ok", [{"role": "robot", "content": "hi"}]],
            ValueError,
            r"prompts\[1\]\[0\] is not a valid message",
        ),
        (["ok", {"role": "user", "content": "hi"}], TypeError, r"prompts\[1\] is a dict .*wrap it"),
        (["ok", {"question": "hi"}], TypeError, r"prompts\[1\] is a dict .*prompt \| model"),
        (["ok", 3.5], TypeError, r"prompts\[1\] is float .*a list of messages"),
        (AS_DICTS[0], TypeError, r"got a single dict; wrap it"),
        (ChatPromptTemplate.from_messages(CONVERSATION).invoke({}), TypeError, "single ChatPromptValue"),
    ],
)
async def test_bad_items_are_refused_per_kind_before_any_request(
    prompts: Any, error: type, message: str
) -> None:
    model = canned(reply("x"))
    with pytest.raises(error, match=message):
        await amap(model, prompts, progress=False)
    with pytest.raises(error, match=message):
        map_prompts(model, prompts, progress=False)
    assert model.received == []


async def test_checkpoint_resume_works_for_message_lists_and_variables(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    items = [CONVERSATION, {"question": "法国的首都?"}, "plain"]

    def chain(model: Canned) -> Any:  # takes all three kinds
        return RunnableLambda(lambda item: item["question"] if isinstance(item, dict) else item) | model

    first = await run(chain(canned(reply("Paris"))), items, checkpoint=path)
    assert all(o.ok for o in first)

    model = canned(reply("again"))
    same = [
        [{"content": m["content"], "role": m["role"]} for m in AS_DICTS],
        {"question": "法国的首都?"},
        "plain",
    ]
    again = await run(chain(model), same, checkpoint=path)  # the same prompts, other key order
    assert [o.from_checkpoint for o in again] == [True, True, True] and model.received == []
    assert again[1].prompt == {"question": "法国的首都?"}

    changed = [[AS_DICTS[0], {"role": "user", "content": "Capital of Spain?"}], *items[1:]]
    again = await run(chain(model), changed, checkpoint=path)
    assert [o.from_checkpoint for o in again] == [False, True, True] and len(model.received) == 1


class Person(BaseModel):
    name: str
    age: int


def test_the_chat_model_is_found_inside_bindings_sequences_and_structured_chains() -> None:
    model = ChatOpenAI(base_url="http://127.0.0.1:1/v1", api_key="EMPTY", model="m")
    template = ChatPromptTemplate.from_messages([("human", "{question}")])
    chains = {
        "bind": model.bind(stop=["###"]),
        "bind_tools": model.bind_tools([Person]),
        "prompt | bind_tools": template | model.bind_tools([Person]),
        "json_schema": model.with_structured_output(Person),
        "include_raw": model.with_structured_output(Person, include_raw=True),
        "function_calling": model.with_structured_output(Person, method="function_calling"),
        "json_mode": model.with_structured_output(Person, method="json_mode"),
    }
    for name, chain in chains.items():
        assert chat_models(chain) == [model], name
    assert binds_tools(chains["bind_tools"]) and binds_tools(chains["prompt | bind_tools"])
    assert binds_tools(chains["function_calling"]) and not binds_tools(chains["json_schema"])
    assert starts_with_language_model(chains["include_raw"])
    assert not starts_with_language_model(chains["prompt | bind_tools"])


async def test_a_runnable_without_a_visible_chat_model_gets_a_warning() -> None:
    hidden = canned(reply("x"))

    async def ask(prompt: str) -> Any:
        return await hidden.ainvoke(prompt)

    with pytest.warns(UserWarning, match="found no chat model inside RunnableLambda"):
        outcomes = await run(RunnableLambda(ask), ["a"])
    assert outcomes[0].ok and outcomes[0].answer == "x"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await run(canned(reply("x")).bind(stop=["#"]) | RunnableLambda(lambda m: m), ["a"])


# --- Against the simulator (real HTTP) -------------------------------------------------------

STRUCTURED = {
    "bind_tools": lambda model: model.bind_tools([Person]),
    "prompt | bind_tools": lambda model: (
        ChatPromptTemplate.from_messages([("human", "{q}")]) | model.bind_tools([Person])
    ),
    "json_schema": lambda model: model.with_structured_output(Person),
    "include_raw": lambda model: model.with_structured_output(Person, include_raw=True),
    "json_mode": lambda model: model.with_structured_output(Person, method="json_mode"),
}


@pytest.mark.parametrize("shape", STRUCTURED)
@pytest.mark.server
def test_sim_sdk_retries_are_off_inside_chains(shape: str) -> None:
    """A plain ChatOpenAI retries 429s twice by itself; inside any chain amap turns that off."""
    with serve(profile="instant", rate_limit_rate=1.0, **TOOL_FLAGS, **SHORT) as server:
        chain = STRUCTURED[shape](plain_chat_openai(server))
        item = {"q": "张三, 28"} if shape.startswith("prompt") else "张三, 28"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            [outcome] = asyncio.run(amap(chain, [item], retries=1, progress=False))
        sent = requests_seen(server)
    assert outcome.error_type == "OpenAIRateLimitError" and outcome.attempts == 2
    assert sent == 2  # one per amap attempt: the SDK's own retries are off


@pytest.mark.server
def test_sim_message_lists_and_prompt_values_through_the_kits_model() -> None:
    with serve(profile="instant", **SHORT) as server:
        model = make_chat_model(
            thinking=True, endpoint=Endpoint(server.base_url, server.model), max_tokens=400
        )
        prompt_value = ChatPromptTemplate.from_messages(CONVERSATION).invoke({})
        for stream in (False, True):
            outcomes = map_prompts(
                model, [CONVERSATION, AS_DICTS, prompt_value], stream=stream, progress=False
            )
            assert all(o.ok and o.answer and o.reasoning for o in outcomes), outcomes
            assert [o.prompt for o in outcomes] == [as_record(CONVERSATION)] * 3


@pytest.mark.server
def test_sim_a_reply_cut_by_max_tokens_is_truncated_with_the_thinking_kept() -> None:
    with serve(profile="instant", think_tokens_mean=200, answer_tokens_mean=50) as server:
        model = make_chat_model(
            thinking=True, endpoint=Endpoint(server.base_url, server.model), max_tokens=20
        )
        for stream in (False, True):
            outcomes = map_prompts(model, ["为什么天空是蓝色的?", "1+1=?"], stream=stream, progress=False)
            assert [o.error_type for o in outcomes] == ["Truncated", "Truncated"], outcomes
            assert all(o.reasoning and not o.answer and o.finish_reason == "length" for o in outcomes)
            assert all("inside the thinking" in o.error for o in outcomes)
            assert all(o.usage["completion_tokens"] == 20 for o in outcomes if o.usage)


# --- Against the simulator with tool calling and structured output (vLLM's tool flags) ------


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return "sunny"


@pytest.mark.server
def test_sim_a_batch_of_extractions_is_one_call() -> None:
    records = ["张三, 28 岁, 会 Python。", "Li Lei is 30 and lives in Beijing.", "王芳今年 45 岁。"]
    with serve(profile="instant", **TOOL_FLAGS, **SHORT) as server:
        model = make_chat_model(
            thinking=False, endpoint=Endpoint(server.base_url, server.model), max_tokens=400
        )
        for method in ("json_schema", "function_calling"):  # the schema guides decoding
            chain = model.with_structured_output(Person, method=method)
            outcomes = map_prompts(chain, records, progress=False)
            assert all(o.ok and isinstance(o.parsed, Person) for o in outcomes), (method, outcomes)
            assert all(Person.model_validate_json(o.answer) == o.parsed for o in outcomes)
        # json_mode only asks for some JSON object: one without "age" is an InvalidOutput
        loose = map_prompts(model.with_structured_output(Person, method="json_mode"), records, progress=False)
        assert all(
            (o.ok and isinstance(o.parsed, Person))
            or (o.error_type == "InvalidOutput" and "validation error for Person" in o.error)
            for o in loose
        ), loose
        cut_model = make_chat_model(
            thinking=False, endpoint=Endpoint(server.base_url, server.model), max_tokens=3
        )
        cut = map_prompts(cut_model.with_structured_output(Person), records, progress=False)
    assert [o.error_type for o in cut] == ["Truncated"] * 3, cut


@pytest.mark.server
def test_sim_tool_calls_and_malformed_ones() -> None:
    prompts = [f"{city}今天天气怎么样?" for city in ("北京", "上海", "广州", "深圳", "杭州", "成都")]
    with serve(profile="instant", tool_call_error_rate=0.5, fault_seed=1, **TOOL_FLAGS, **SHORT) as server:
        model = make_chat_model(
            thinking=False, endpoint=Endpoint(server.base_url, server.model), max_tokens=400
        )
        outcomes = map_prompts(model.bind_tools([get_weather]), prompts, progress=False)
    called = [o for o in outcomes if o.ok]
    malformed = [o for o in outcomes if o.error_type == "MalformedToolCall"]
    assert len(called) + len(malformed) == len(prompts) and called and malformed, outcomes
    assert all(o.parsed and o.parsed[0]["name"] == "get_weather" for o in called)
    assert all("<tool_call>" in o.answer and o.attempts == 1 for o in malformed)
