"""LangChain's client cache (``langchain_core.caches.InMemoryCache``) with the kit's chat model.

A repeated identical request is answered from the cache and never reaches the server; a request
that differs in its messages or its parameters does. Requests that reached the server are counted
by the simulator's own ``vllm:request_success_total``.
"""

from __future__ import annotations

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.messages import HumanMessage, SystemMessage

from helpers.chat import make_chat_model
from helpers.concurrency import amap
from helpers.server_metrics import scrape_metrics
from helpers.sim import serve


@pytest.fixture(scope="module")
def server():
    with serve("instant") as running:
        yield running


def served(server) -> float:
    """Requests the server has answered so far."""
    return scrape_metrics(server.root_url)["vllm:request_success_total"]


def cached_model(server, cache, **kwargs):
    return make_chat_model(thinking=False, base_url=server.base_url, max_tokens=64, cache=cache, **kwargs)


async def test_a_repeated_async_request_never_reaches_the_server(server):
    model = cached_model(server, InMemoryCache())
    before = served(server)
    replies = [await model.ainvoke("What does a KV cache hold?") for _ in range(3)]
    assert served(server) - before == 1
    assert len({reply.content for reply in replies}) == 1
    assert replies[0].content


def test_a_repeated_sync_request_never_reaches_the_server(server):
    model = cached_model(server, InMemoryCache())
    before = served(server)
    first, second = model.invoke("Name one prime number."), model.invoke("Name one prime number.")
    assert served(server) - before == 1
    assert second.content == first.content


async def test_the_reasoning_comes_back_from_the_cache(server):
    model = make_chat_model(thinking=True, base_url=server.base_url, max_tokens=512, cache=InMemoryCache())
    first = await model.ainvoke("Why is the sky blue?")
    before = served(server)
    second = await model.ainvoke("Why is the sky blue?")
    assert served(server) == before
    assert second.additional_kwargs["reasoning_content"] == first.additional_kwargs["reasoning_content"]
    assert second.additional_kwargs["reasoning_content"]


async def test_different_messages_or_parameters_miss(server):
    cache = InMemoryCache()
    model = cached_model(server, cache)
    question = [SystemMessage("Be brief."), HumanMessage("What is 2+2?")]
    await model.ainvoke(question)
    before = served(server)
    await model.ainvoke([SystemMessage("Be very brief."), HumanMessage("What is 2+2?")])  # messages
    await model.ainvoke(question, temperature=0.1)  # a call parameter
    await cached_model(server, cache, seed=7).ainvoke(question)  # a model parameter
    thinking = make_chat_model(thinking=True, base_url=server.base_url, max_tokens=64, cache=cache)
    await thinking.ainvoke(question)  # thinking on
    assert served(server) - before == 4


async def test_the_global_cache_serves_a_model_built_without_one(server):
    previous = get_llm_cache()
    set_llm_cache(InMemoryCache())
    try:
        model = make_chat_model(thinking=False, base_url=server.base_url, max_tokens=64)
        before = served(server)
        await model.ainvoke("Say hello.")
        await make_chat_model(thinking=False, base_url=server.base_url, max_tokens=64).ainvoke("Say hello.")
        assert served(server) - before == 1
        uncached = make_chat_model(thinking=False, base_url=server.base_url, max_tokens=64, cache=False)
        await uncached.ainvoke("Say hello.")
        assert served(server) - before == 2
    finally:
        set_llm_cache(previous)


async def test_amap_answers_repeated_prompts_from_the_cache(server):
    model = cached_model(server, InMemoryCache())
    prompts = ["Count to three.", "Name a colour.", "Count to three."]
    first = await amap(model, prompts[:2], concurrency=2, progress=False)
    before = served(server)
    again = await amap(model, prompts, concurrency=3, progress=False)
    assert served(server) == before
    assert [o.answer for o in again] == [first[0].answer, first[1].answer, first[0].answer]


async def test_a_stream_is_never_answered_from_the_cache(server):
    """LangChain looks the cache up for invoke/ainvoke (and streaming=True under the hood), not
    for astream: a streamed request always reaches the server."""
    model = cached_model(server, InMemoryCache())
    await model.ainvoke("Tell me a fact.")
    before = served(server)
    chunks = [chunk async for chunk in model.astream("Tell me a fact.")]
    assert chunks
    assert served(server) - before == 1
    streaming_model = cached_model(server, InMemoryCache(), streaming=True)
    await streaming_model.ainvoke("Tell me another fact.")
    await streaming_model.ainvoke("Tell me another fact.")
    assert served(server) - before == 2
