"""helpers.chat across many event loops: each loop's HTTP client is closed when asyncio.run()
shuts its loop down, so nothing piles up (issue 10.7)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import openai
import psutil
import pytest

from helpers.chat import make_chat_model
from helpers.endpoint import DEFAULT_MODEL, Endpoint
from helpers.sim import serve
from helpers.transport import AiohttpTransport

RUNS = 1000


@pytest.fixture(scope="module")
def instant_sim() -> Iterator[Endpoint]:
    with serve(profile="instant", think_tokens_mean=2, answer_tokens_mean=2) as server:
        yield Endpoint(server.base_url, DEFAULT_MODEL)


def connections_to(endpoint: Endpoint) -> int:
    """This process's TCP connections to the server's port (any state but closed)."""
    port = int(endpoint.base_url.rsplit(":", 1)[1].split("/")[0])
    return sum(
        1
        for connection in psutil.Process().net_connections("tcp")
        if connection.raddr and connection.raddr.port == port
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.server
def test_a_thousand_asyncio_runs_leave_no_connection_open(instant_sim: Endpoint) -> None:
    model = make_chat_model(False, instant_sim, max_tokens=1)
    assert asyncio.run(model.ainvoke("hi")).response_metadata["finish_reason"]  # warm-up
    baseline_fds = open_fds()
    assert connections_to(instant_sim) == 0
    for run in range(RUNS):
        reply = asyncio.run(model.ainvoke("hi") if run % 2 else _last_chunk(model.astream("hi")))
        assert reply is not None
        if run in (30, RUNS - 1):
            assert connections_to(instant_sim) == 0, f"after {run + 1} runs"
            assert open_fds() <= baseline_fds, f"after {run + 1} runs"


@pytest.mark.server
def test_the_loops_client_is_reused_within_the_loop_and_shared_by_models(instant_sim: Endpoint) -> None:
    first, second = make_chat_model(False, instant_sim, max_tokens=1), make_chat_model(True, instant_sim)

    async def clients():
        await first.ainvoke("hi")
        await first.ainvoke("hi")
        return first.root_async_client.current()._client, second.root_async_client.current()._client

    one, other = asyncio.run(clients())
    assert one is other  # one pool per loop and timeout, whatever the number of models
    assert one.is_closed  # closed when asyncio.run shut the loop down


@pytest.mark.server
def test_a_loop_that_keeps_running_keeps_its_client(instant_sim: Endpoint) -> None:
    model = make_chat_model(False, instant_sim, max_tokens=1)
    loop = asyncio.new_event_loop()
    try:
        for _ in range(5):
            loop.run_until_complete(model.ainvoke("hi"))
        assert connections_to(instant_sim) == 1  # kept alive between calls, like Jupyter's loop
    finally:
        loop.run_until_complete(_shutdown(loop))
        loop.close()
    assert connections_to(instant_sim) == 0


async def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncio.run does before closing a loop: cancel the remaining tasks, wait for them, and
    close the async generators still open (where the kit closes the loop's pools)."""
    tasks = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await loop.shutdown_asyncgens()


async def _last_chunk(chunks):
    last = None
    async for chunk in chunks:
        last = chunk
    return last


@pytest.mark.server
async def test_the_loops_pool_expires_idle_connections_before_vllms_keep_alive(instant_sim: Endpoint) -> None:
    """vLLM closes idle connections after 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE); a pool keeping them
    as long reuses one just as the server closes it (issue 10.3)."""
    model = make_chat_model(False, instant_sim, max_tokens=1)
    await model.ainvoke("hi")
    transport = model.root_async_client.current()._client._transport
    assert isinstance(transport, AiohttpTransport)  # its expiry is tested in test_transport.py
    assert transport.limits.keepalive_expiry < 5.0
    assert transport.client.connector._keepalive_timeout < 5.0  # the aiohttp session it made


async def test_a_refused_connection_is_a_connection_error_not_a_timeout() -> None:
    """The SDK's vendored aiohttp transport maps aiohttp's ClientConnectorError to ConnectTimeout, so
    a stopped server read as "Request timed out."; the kit's pools use helpers.transport's map."""
    model = make_chat_model(False, Endpoint("http://127.0.0.1:9/v1"), max_retries=0, timeout=5)
    with pytest.raises(openai.APIConnectionError) as raised:
        await model.ainvoke("hi")
    assert not isinstance(raised.value, openai.APITimeoutError), repr(raised.value)
