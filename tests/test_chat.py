"""helpers.chat against the real vLLM 0.32 transcripts (replayed) and against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI
from langchain_openai._compat import httpx
from pydantic import BaseModel
from support import load_transcript, replay_transport, replayed_model

from helpers.chat import make_chat_model, thinking_extra_body
from helpers.endpoint import DEFAULT_MODEL, Endpoint
from helpers.reasoning import REASONING_KEY
from helpers.sim import serve

MOCK = Endpoint("http://vllm.test/v1", "Qwen-0.6B", api_key="sk-test-123")


def plain_replayed(name: str) -> ChatOpenAI:
    return ChatOpenAI(
        model="Qwen-0.6B",
        base_url=MOCK.base_url,
        api_key="EMPTY",
        http_client=httpx.Client(transport=replay_transport(name)),
        http_async_client=httpx.AsyncClient(transport=replay_transport(name)),
        max_retries=0,
    )


def transcript_message(name: str) -> dict:
    return load_transcript(name).json()["choices"][0]["message"]


# --- what the notebooks teach: plain ChatOpenAI drops the reasoning, ours keeps it --------------


def test_plain_chatopenai_drops_the_reasoning() -> None:
    expected = transcript_message("qwen3-parser-chat-thinking")["reasoning"]
    reply = plain_replayed("qwen3-parser-chat-thinking").invoke("你是谁?")
    assert expected not in str(reply.additional_kwargs)
    assert "reasoning_content" not in reply.additional_kwargs
    chunks = list(plain_replayed("qwen3-parser-stream-thinking-usage").stream("你是谁?"))
    assert not any(chunk.additional_kwargs for chunk in chunks)


def test_ours_keeps_the_reasoning() -> None:
    message = transcript_message("qwen3-parser-chat-thinking")
    reply = replayed_model("qwen3-parser-chat-thinking").invoke("你是谁?")
    assert reply.additional_kwargs[REASONING_KEY] == message["reasoning"]
    assert reply.content == message["content"]
    assert reply.usage_metadata["output_token_details"] == {"reasoning": 13}


@pytest.mark.parametrize("parser", ["qwen3-parser", "deepseek-r1-parser"])
async def test_every_call_style_keeps_the_reasoning(parser: str) -> None:
    message = transcript_message(f"{parser}-chat-thinking")
    model = replayed_model(f"{parser}-chat-thinking")
    replies = [
        model.invoke("q"),
        await model.ainvoke("q"),
        *model.batch(["q", "q"]),
        *(await model.abatch(["q", "q"], config={"max_concurrency": 2})),
    ]
    for reply in replies:
        assert isinstance(reply, AIMessage)
        assert reply.additional_kwargs[REASONING_KEY] == message["reasoning"]
        assert reply.content == message["content"]


@pytest.mark.parametrize("parser", ["qwen3-parser", "deepseek-r1-parser"])
async def test_every_streamed_chunk_carries_reasoning_content(parser: str) -> None:
    events = load_transcript(f"{parser}-stream-thinking-usage").sse_events()
    deltas = [c["delta"] for e in events for c in e.get("choices", [])]
    reasoning = "".join(d.get("reasoning") or "" for d in deltas)
    answer = "".join(d.get("content") or "" for d in deltas)
    model = replayed_model(f"{parser}-stream-thinking-usage")
    for chunks in (list(model.stream("q")), [c async for c in model.astream("q")]):
        assert all(REASONING_KEY in chunk.additional_kwargs for chunk in chunks)
        merged = sum(chunks[1:], chunks[0])
        assert isinstance(merged, AIMessageChunk)
        assert merged.additional_kwargs[REASONING_KEY] == reasoning
        assert merged.content == answer
        assert merged.usage_metadata["output_tokens"] == 40


async def test_streaming_true_makes_invoke_stream_and_still_split() -> None:
    seen: list[dict] = []
    model = replayed_model("qwen3-parser-stream-thinking-usage", seen, streaming=True)
    reply = await model.ainvoke("q")
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}
    assert reply.additional_kwargs[REASONING_KEY] == " learnsN��edick�}�~本�"
    assert reply.usage_metadata["total_tokens"] == 58


def test_inline_think_block_of_a_server_without_parser() -> None:
    body = load_transcript("no-parser-stream-thinking-usage").sse_events()
    # put the opening tag where real Qwen3 writes it, split across two chunks
    body[1]["choices"][0]["delta"]["content"] = "<th"
    body[2]["choices"][0]["delta"]["content"] = "ink>\n"
    sse = "".join(f"data: {__import__('json').dumps(e)}\n\n" for e in body) + "data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse)

    model = make_chat_model(endpoint=MOCK, http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    chunks = list(model.stream("q"))
    merged = sum(chunks[1:], chunks[0])
    assert merged.additional_kwargs[REASONING_KEY] == "\n learnsN��edick�}�~本�"
    assert merged.content.startswith("-��\t什")
    assert "<think>" not in merged.content and "<th" not in merged.additional_kwargs[REASONING_KEY]


def test_cut_inside_thinking_gives_empty_content() -> None:
    reply = replayed_model("qwen3-parser-chat-seed-style-extra-body").invoke("q")
    assert reply.content == ""
    assert reply.additional_kwargs[REASONING_KEY]
    assert reply.response_metadata["finish_reason"] == "length"


# --- the request: thinking switch, sampling, key -------------------------------------------------


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [(True, {"enable_thinking": True}), (False, {"enable_thinking": False}), (None, None)],
)
def test_thinking_switch_is_chat_template_kwargs(thinking: bool | None, expected) -> None:
    seen: list[dict] = []
    replayed_model("qwen3-parser-chat-no-thinking", seen, thinking=thinking).invoke("q")
    assert seen[0].get("chat_template_kwargs") == expected
    assert "enable_thinking" not in seen[0]  # never the DashScope-style top-level flag


def test_extra_body_is_merged_not_replaced() -> None:
    body = thinking_extra_body(False, {"top_k": 20, "chat_template_kwargs": {"x": 1}})
    assert body == {"top_k": 20, "chat_template_kwargs": {"x": 1, "enable_thinking": False}}
    seen: list[dict] = []
    replayed_model("qwen3-parser-chat-no-thinking", seen, thinking=False, extra_body={"top_k": 20}).invoke(
        "q"
    )
    assert seen[0]["top_k"] == 20 and seen[0]["chat_template_kwargs"] == {"enable_thinking": False}


def test_recommended_sampling_per_mode_and_overrides() -> None:
    for thinking, (temperature, top_p) in [(True, (0.6, 0.95)), (False, (0.7, 0.8))]:
        seen: list[dict] = []
        replayed_model("qwen3-parser-chat-no-thinking", seen, thinking=thinking).invoke("q")
        assert (seen[0]["temperature"], seen[0]["top_p"]) == (temperature, top_p)
    seen = []
    replayed_model("qwen3-parser-chat-no-thinking", seen, temperature=0.0, max_tokens=8).invoke("q")
    assert seen[0]["temperature"] == 0.0 and seen[0]["max_completion_tokens"] == 8


def test_timeouts_and_retries_reach_the_client() -> None:
    model = make_chat_model(endpoint=MOCK, timeout=30, max_retries=5)
    assert model.root_client.max_retries == 5
    assert model.root_client.timeout.read == 30 and model.root_client.timeout.connect == 10
    assert model.stream_usage is True


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"timeout": 0}, "timeout"), ({"timeout": -1}, "timeout"), ({"max_retries": -1}, "retries")],
)
def test_bad_arguments_are_refused(kwargs: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        make_chat_model(endpoint=MOCK, **kwargs)


def test_api_key_is_sent_but_never_shown() -> None:
    seen_auth: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_auth.append(request.headers["authorization"])
        body = load_transcript("qwen3-parser-chat-no-thinking").body
        return httpx.Response(200, headers={"content-type": "application/json"}, content=body)

    model = make_chat_model(endpoint=MOCK, http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    model.invoke("q")
    assert seen_auth == ["Bearer sk-test-123"]
    assert "sk-test-123" not in repr(model) and "sk-test-123" not in str(model)
    assert "sk-test-123" not in repr(MOCK) and "sk-test-123" not in str(MOCK)


def test_loop_local_client_outside_a_loop_is_the_template() -> None:
    model = make_chat_model(endpoint=MOCK)
    assert "per event loop" in repr(model.root_async_client)
    assert model.root_async_client.base_url == model.root_client.base_url

    async def client_in_loop():
        return model.root_async_client.current()

    first, second = asyncio.run(client_in_loop()), asyncio.run(client_in_loop())
    assert first is not second  # each loop gets its own client


# --- against the simulator, in every server mode -------------------------------------------------

MODES = [
    (parser, field)
    for parser in ("qwen3", "deepseek_r1", "none")
    for field in ("reasoning", "reasoning_content")
]


@pytest.fixture(scope="module", params=MODES, ids=lambda mode: "-".join(mode))
def sim_endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    parser, field = request.param
    with serve(
        profile="instant",
        reasoning_parser=parser,
        reasoning_field=field,
        think_tokens_mean=40,
        answer_tokens_mean=20,
    ) as server:
        yield Endpoint(server.base_url, DEFAULT_MODEL)


def has_tags(text: str) -> bool:
    return "<think>" in text or "</think>" in text


@pytest.mark.parametrize("thinking", [True, None, False])
@pytest.mark.server
async def test_every_mode_splits_reasoning_from_answer(sim_endpoint: Endpoint, thinking: bool | None) -> None:
    model = make_chat_model(thinking, sim_endpoint)
    replies = [model.invoke("你是谁?"), await model.ainvoke("你是谁?")]
    streamed = [list(model.stream("你是谁?")), [c async for c in model.astream("你是谁?")]]
    for chunks in streamed:
        assert all(REASONING_KEY in chunk.additional_kwargs for chunk in chunks)
        replies.append(sum(chunks[1:], chunks[0]))
    for reply in replies:
        reasoning, answer = reply.additional_kwargs[REASONING_KEY], reply.content
        assert answer and "模拟" in answer  # the simulator says it is one
        assert not has_tags(answer) and not has_tags(reasoning)
        assert bool(reasoning) is (thinking is not False)
        assert (reasoning, answer) == (
            replies[0].additional_kwargs[REASONING_KEY],
            replies[0].content,
        )  # streamed and not, sync and async: the same split
        assert reply.usage_metadata["output_tokens"] > 0


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.server
async def test_every_mode_returns_structured_output(sim_endpoint: Endpoint, thinking: bool | None) -> None:
    """``with_structured_output`` (json_schema) parses the answer whichever field the server filed it
    in: with thinking off, ``--reasoning-parser deepseek_r1`` files the whole reply as reasoning."""
    chain = make_chat_model(thinking, sim_endpoint, max_tokens=400).with_structured_output(Person)
    with_raw = make_chat_model(thinking, sim_endpoint, max_tokens=400).with_structured_output(
        Person, include_raw=True
    )
    for person in (chain.invoke("Invent a person."), await chain.ainvoke("Invent a person.")):
        assert isinstance(person, Person)
    reply = await with_raw.ainvoke("Invent a person.")
    assert reply["parsing_error"] is None and isinstance(reply["parsed"], Person)
    assert Person.model_validate_json(reply["raw"].content) == reply["parsed"]


@pytest.mark.server
def test_every_mode_decodes_the_wire_exactly(sim_endpoint: Endpoint) -> None:
    model = make_chat_model(True, sim_endpoint)
    payload = model._get_request_payload([HumanMessage("Why is the sky blue?")])
    raw = httpx.post(f"{sim_endpoint.base_url}/chat/completions", json=payload, timeout=30)
    message = raw.json()["choices"][0]["message"]
    reply = model.invoke("Why is the sky blue?")
    reasoning, answer = reply.additional_kwargs[REASONING_KEY], reply.content
    field = message.get("reasoning_content", message.get("reasoning"))
    if field is not None:  # a parser ran: the field and content, untouched
        assert (reasoning, answer) == (field, message["content"])
    else:  # no parser: content is "<think>" + reasoning + "</think>" + whitespace + answer
        before, after = message["content"].split("</think>")
        assert before == "<think>" + reasoning
        assert after.lstrip() == answer and after.strip()


@pytest.mark.server
async def test_cut_inside_thinking(sim_endpoint: Endpoint) -> None:
    model = make_chat_model(True, sim_endpoint, max_tokens=5)
    for reply in (await model.ainvoke("你是谁?"), model.invoke("你是谁?", stream=True)):
        assert reply.content == ""
        assert reply.additional_kwargs[REASONING_KEY]
        assert reply.response_metadata["finish_reason"] == "length"


@pytest.mark.server
def test_plain_chatopenai_drops_reasoning_on_the_simulator(sim_endpoint: Endpoint) -> None:
    same_sampling = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 2048}
    plain = ChatOpenAI(model=DEFAULT_MODEL, base_url=sim_endpoint.base_url, api_key="EMPTY", **same_sampling)
    reply = plain.invoke("你是谁?")
    assert REASONING_KEY not in reply.additional_kwargs
    ours = make_chat_model(None, sim_endpoint).invoke("你是谁?")
    assert ours.additional_kwargs[REASONING_KEY]
    if "<think>" in reply.content:  # no parser: plain mixes the reasoning into the answer
        assert reply.content.endswith(ours.content) and ours.content != reply.content
    else:  # a parser: plain has the answer, the reasoning is gone
        assert reply.content == ours.content


@pytest.fixture(scope="module")
def qwen3_sim() -> Iterator[Endpoint]:
    with serve(profile="instant", think_tokens_mean=30, answer_tokens_mean=15) as server:
        yield Endpoint(server.base_url, DEFAULT_MODEL)


@pytest.mark.server
def test_blog_extra_body_is_ignored_by_the_server(qwen3_sim: Endpoint) -> None:
    plain = make_chat_model(None, qwen3_sim).invoke("你是谁?")
    blog = make_chat_model(
        None, qwen3_sim, extra_body={"enable_thinking": True, "return_reasoning": True}
    ).invoke("你是谁?")
    blog_off = make_chat_model(None, qwen3_sim, extra_body={"enable_thinking": False}).invoke("你是谁?")
    vllm_off = make_chat_model(False, qwen3_sim).invoke("你是谁?")
    # the blog's flags change nothing: same reasoning and answer as sending no flag at all...
    for reply in (blog, blog_off):
        assert reply.additional_kwargs[REASONING_KEY] == plain.additional_kwargs[REASONING_KEY]
        assert reply.content == plain.content
    # ...while the chat_template_kwargs switch really turns thinking off
    assert plain.additional_kwargs[REASONING_KEY] and not vllm_off.additional_kwargs[REASONING_KEY]


@pytest.mark.server
def test_three_asyncio_runs_with_one_model(qwen3_sim: Endpoint) -> None:
    model = make_chat_model(False, qwen3_sim, max_tokens=16)
    for _ in range(3):
        reply = asyncio.run(model.ainvoke("你是谁?"))
        assert reply.content
    for _ in range(3):
        chunks = asyncio.run(_collect(model.astream("你是谁?")))
        assert "".join(chunk.content for chunk in chunks)


@pytest.mark.server
def test_plain_chatopenai_fails_on_the_second_asyncio_run(qwen3_sim: Endpoint) -> None:
    # langchain-openai caches one AsyncClient per (base_url, timeout); a timeout no other test
    # uses gives this test a fresh one. Its pooled connection belongs to the first, closed loop.
    plain = ChatOpenAI(model=DEFAULT_MODEL, base_url=qwen3_sim.base_url, api_key="EMPTY", timeout=61.25)
    assert asyncio.run(plain.ainvoke("你是谁?")).content
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        asyncio.run(plain.ainvoke("你是谁?"))


async def _collect(aiterator) -> list:
    return [item async for item in aiterator]


# --- ChatOpenAI-style arguments (issue 10.4) -----------------------------------------------------


@pytest.fixture
def no_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything starts the embedded simulator."""

    def refuse(*args, **kwargs):
        raise AssertionError("the embedded simulator was started")

    monkeypatch.setattr("helpers.endpoint.embedded_simulator_endpoint", refuse)


def test_chatopenai_style_base_url_key_and_model(no_simulator: None) -> None:
    seen_auth: list[str] = []
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_auth.append(f"{request.url} {request.headers['authorization']}")
        seen.append(__import__("json").loads(request.content))
        body = load_transcript("qwen3-parser-chat-no-thinking").body
        return httpx.Response(200, headers={"content-type": "application/json"}, content=body)

    model = make_chat_model(
        base_url="http://gpu-pod:8000/v1",
        api_key="sk-own",
        model="Qwen-0.6B",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    model.invoke("q")
    assert seen_auth == ["http://gpu-pod:8000/v1/chat/completions Bearer sk-own"]
    assert seen[0]["model"] == "Qwen-0.6B"


def test_chatopenai_style_arguments_override_the_endpoint(no_simulator: None) -> None:
    model = make_chat_model(endpoint=MOCK, base_url="http://other:8000/v1", model="other-model")
    assert model.openai_api_base == "http://other:8000/v1" and model.model_name == "other-model"
    assert model.openai_api_key.get_secret_value() == "sk-test-123"  # kept from the endpoint
    keyed = make_chat_model(endpoint=MOCK, api_key="sk-other")
    assert keyed.openai_api_key.get_secret_value() == "sk-other"
    assert keyed.openai_api_base == MOCK.base_url and keyed.model_name == MOCK.model


def test_base_url_alone_reads_key_and_model_from_the_environment(
    no_simulator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QWEN_API_KEY", "sk-env")
    monkeypatch.setenv("QWEN_MODEL", "env-model")
    model = make_chat_model(base_url="http://gpu-pod:8000/v1")
    assert model.openai_api_key.get_secret_value() == "sk-env" and model.model_name == "env-model"


def test_timeout_none_means_no_read_timeout_but_a_connect_timeout() -> None:
    model = make_chat_model(endpoint=MOCK, timeout=None)
    timeout = model.root_client.timeout
    assert timeout.read is None and timeout.write is None and timeout.connect == 10
    assert model.root_async_client.timeout.read is None
    short = make_chat_model(endpoint=MOCK, timeout=3)
    assert short.root_client.timeout.read == 3 and short.root_client.timeout.connect == 3


def test_an_answer_that_is_not_json_gets_langchains_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>nginx</html>")

    model = make_chat_model(endpoint=MOCK, http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(ValueError, match="Unexpected response type from OpenAI-compatible endpoint"):
        model.invoke("q")


# --- replies read as dicts (issue 11): nothing ChatOpenAI reports is lost -------------------------


def _comparable(message: AIMessage) -> dict:
    """Everything but the reasoning split, with None-valued keys dropped: the SDK's models add
    every field they declare (``audio_tokens: None``), the server's JSON only what it sent."""
    data = message.model_dump(exclude={"id", "content", "additional_kwargs"})
    data["response_metadata"].pop("model_provider", None)
    return _drop_none(data)


def _drop_none(value):
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_none(item) for item in value]
    return value


@pytest.mark.parametrize(
    "name", ["qwen3-parser-chat-no-thinking", "hermes-qwen3-tools-auto-parallel", "hermes-qwen3-tools-auto"]
)
async def test_replies_carry_what_plain_chatopenai_reports(name: str) -> None:
    plain, ours = plain_replayed(name), replayed_model(name)
    pairs = [(plain.invoke("q"), ours.invoke("q")), (await plain.ainvoke("q"), await ours.ainvoke("q"))]
    for plain_reply, our_reply in pairs:
        assert _comparable(our_reply) == _comparable(plain_reply)
        assert our_reply.response_metadata["finish_reason"] and our_reply.usage_metadata


def test_streamed_chunks_carry_what_plain_chatopenai_reports() -> None:
    name = "hermes-qwen3-tools-auto-parallel-stream"
    plain_chunks = list(plain_replayed(name).stream("q", stream_usage=True))
    our_chunks = list(replayed_model(name).stream("q"))
    plain_merged, our_merged = sum(plain_chunks[1:], plain_chunks[0]), sum(our_chunks[1:], our_chunks[0])
    assert our_merged.tool_calls == plain_merged.tool_calls and len(our_merged.tool_calls) == 2
    assert our_merged.usage_metadata == plain_merged.usage_metadata
    assert our_merged.response_metadata["finish_reason"] == "tool_calls"


async def test_response_headers_still_reach_the_reply() -> None:
    model = replayed_model("qwen3-parser-chat-no-thinking", include_response_headers=True)
    for reply in (model.invoke("q"), await model.ainvoke("q")):
        assert reply.response_metadata["headers"]["content-type"] == "application/json"
    streamed = replayed_model("qwen3-parser-stream-no-thinking", include_response_headers=True)
    first = next(iter(streamed.stream("q")))
    assert first.response_metadata["headers"]["content-type"] == "text/event-stream; charset=utf-8"


def test_amaps_retry_free_copy_keeps_the_dict_replies_on_its_own_aiohttp_pool() -> None:
    """amap's copy of the model (SDK retries off, its own pool) keeps what makes the kit's model
    cheap: replies as dicts, and the aiohttp pool with httpx's error classes."""
    from helpers.amap_models import retry_free_copy as _retry_free_copy
    from helpers.endpoint import KEEPALIVE_EXPIRY_S
    from helpers.transport import AiohttpTransport

    model = make_chat_model(base_url="http://vllm.test/v1")
    pools: list = []
    copy = _retry_free_copy(model, pools, 8)
    assert copy.max_retries == 0 and copy.root_async_client.max_retries == 0
    assert type(copy.async_client) is type(model.async_client)  # helpers.chat's dict completions
    assert copy.async_client.create.__self__._client() is copy.root_async_client
    (pool,) = pools
    assert isinstance(pool._transport, AiohttpTransport)
    assert pool._transport.limits.keepalive_expiry == KEEPALIVE_EXPIRY_S
    assert pool._transport.limits.max_connections == 8
