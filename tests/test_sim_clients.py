"""The simulator through the clients the notebooks use: the openai SDK and LangChain."""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI

from helpers.sim import serve

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
