"""The lean SSE reader on real vLLM 0.32 transcripts: TTFT, first answer token, ITL, usage, errors.

The client speaks aiohttp over loopback to a local server (``local_http.serve_handler``) that
answers with the recorded bytes, one HTTP chunk per SSE event as vLLM writes them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import struct
import warnings

import aiohttp
import httpx
import orjson
import pytest
from local_http import serve_handler
from support import load_transcript

from helpers.bench import lean_client
from helpers.bench.lean_client import LeanClient
from kit_tools.firehose import serve_firehose


class Ticks:
    """A clock that advances by exactly one second per read: timings become event counts."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return float(self.reads - 1)

    async def reached(self, reads: int, wait_s: float = 30.0) -> None:
        """Wait until the client has read the clock ``reads`` times."""
        for _ in range(int(wait_s / 0.001)):
            if self.reads >= reads:
                return
            await asyncio.sleep(0.001)
        raise AssertionError(f"the client read the clock {self.reads} times, expected {reads}")


def replay(body: bytes, status: int = 200, piece: int | None = None, ticks: Ticks | None = None):
    """A handler answering every POST with ``body``: one HTTP chunk per SSE event, or per ``piece`` bytes.

    With ``ticks``, event k is written only once the client has timed event k - 1 (clock read
    k + 1, read 0 being the send), so each network read carries exactly one event.
    """
    if piece:
        parts = [body[i : i + piece] for i in range(0, len(body), piece)]
    else:
        parts = [event + b"\n\n" for event in body.split(b"\n\n") if event.strip()]

    async def handler(request: httpx.Request) -> httpx.Response:
        handler.bodies.append(orjson.loads(request.content))

        async def stream():
            for k, part in enumerate(parts):
                if ticks is not None:
                    await ticks.reached(k + 1)
                yield part

        return httpx.Response(status, content=stream())

    handler.bodies = []
    return handler


@pytest.fixture
def tick_clock(monkeypatch) -> Ticks:
    """Every clock read advances by exactly one second: timings become event counts."""
    ticks = Ticks()
    monkeypatch.setattr(lean_client, "clock", ticks)
    return ticks


def choice_events(body: bytes) -> list[dict]:
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")]
    return [e for e in events if e.get("choices")]


@pytest.mark.parametrize(
    "name", ["qwen3-parser-stream-thinking-usage", "deepseek-r1-parser-stream-thinking-usage"]
)
async def test_stream_with_reasoning_parser(name, tick_clock):
    body = load_transcript(name).body
    events = choice_events(body)
    first_answer = next(i for i, e in enumerate(events) if e["choices"][0]["delta"].get("content"))
    assert "reasoning" in events[1]["choices"][0]["delta"]  # reasoning precedes the answer
    client = LeanClient(serve_handler(replay(body, ticks=tick_clock)), "Qwen-0.6B", max_tokens=40)
    record = await client.arequest("你是谁?")
    assert record.ok, record.error
    assert record.streamed
    # clock: 0 = send, then one read per event; event k (0-based) is read at time k + 1
    assert record.ttft_s == 1.0
    assert record.ttfa_s == first_answer + 1.0
    assert record.chunks == len(events)
    assert record.itl_s == [1.0] * (len(events) - 1)
    assert record.end_s - record.start_s == len(events)  # last token event, not usage nor [DONE]
    usage = json.loads(body.split(b"data: ")[-2])["usage"]
    assert record.prompt_tokens == usage["prompt_tokens"]
    assert record.output_tokens == usage["completion_tokens"] == 40
    assert record.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"]


async def test_stream_split_at_arbitrary_bytes_gives_the_same_counts(tick_clock):
    body = load_transcript("qwen3-parser-stream-thinking-usage").body  # each read: 7 bytes
    client = LeanClient(serve_handler(replay(body, piece=7, ticks=tick_clock)), "m")
    record = await client.arequest("x")
    assert record.ok and record.chunks == len(choice_events(body)) and record.output_tokens == 40


async def test_stream_without_thinking_answers_from_the_first_content(tick_clock):
    body = load_transcript("no-parser-stream-no-thinking").body
    events = choice_events(body)
    first_answer = next(i for i, e in enumerate(events) if e["choices"][0]["delta"].get("content"))
    record = await LeanClient(serve_handler(replay(body, ticks=tick_clock)), "m").arequest("x")
    assert record.ok and record.ttfa_s == first_answer + 1.0


@pytest.mark.parametrize(
    ("name", "tokens"),
    [
        ("no-parser-stream-no-thinking", 8),
        ("no-parser-stream-no-usage", 8),
        ("qwen3-parser-stream-no-usage", 5),
    ],
)
async def test_a_stream_without_usage_counts_its_chunks_and_says_so(name, tokens):
    """Without usage, output tokens are the events after the role chunk (vLLM: one per step), flagged.

    With no reasoning parser the count is exact (8 events for max_tokens=8, finish_reason
    "length"); the qwen3 parser drops the steps that produced no text, so it undercounts.
    """
    transcript = load_transcript(name)
    assert "stream_options" not in transcript.request
    record = await LeanClient(serve_handler(replay(transcript.body)), "m").arequest("x")
    assert record.ok and record.tokens_from_chunks
    assert record.output_tokens == record.chunks - 1 == tokens <= transcript.request["max_tokens"]
    assert record.tpot_s is not None  # no longer NaN without a word


async def test_a_stream_with_usage_takes_the_servers_count():
    body = load_transcript("qwen3-parser-stream-thinking-usage").body
    record = await LeanClient(serve_handler(replay(body)), "m").arequest("x")
    assert record.output_tokens == 40 and not record.tokens_from_chunks


async def test_inline_think_block_delays_the_first_answer(tick_clock):
    def event(content):
        return b"data: " + orjson.dumps({"choices": [{"delta": {"content": content}}]}) + b"\n\n"

    body = (
        b"".join([event(""), event("<think>"), event("\nhmm"), event("</think>"), event("\n\n"), event("Hi")])
        + b"data: [DONE]\n\n"
    )
    record = await LeanClient(serve_handler(replay(body, ticks=tick_clock)), "m").arequest("x")
    assert record.ok and record.ttft_s == 1.0 and record.ttfa_s == 6.0


async def test_request_body_asks_for_usage_and_merges_extra_body():
    handler = replay(load_transcript("qwen3-parser-stream-thinking-usage").body)
    client = LeanClient(
        serve_handler(handler) + "/",
        "Qwen-0.6B",
        max_tokens=40,
        extra_body={"temperature": 0, "chat_template_kwargs": {"enable_thinking": False}},
    )
    await client.arequest("你是谁?")
    sent = handler.bodies[0]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "你是谁?"}]
    assert sent["temperature"] == 0 and sent["max_tokens"] == 40
    assert client.url.endswith("/v1/chat/completions") and "//chat" not in client.url


async def test_non_streamed_reply_gives_latency_and_usage():
    body = load_transcript("qwen3-parser-chat-thinking").body
    client = LeanClient(serve_handler(replay(body, piece=10_000)), "m", stream=False)
    record = await client.arequest("x")
    usage = json.loads(body)["usage"]
    assert record.ok and not record.streamed and record.ttft_s is None
    assert record.output_tokens == usage["completion_tokens"] and record.latency_s > 0


@pytest.mark.parametrize("stream", [True, False])
async def test_http_error_is_a_failed_record_with_the_server_message(stream):
    body = load_transcript("qwen3-parser-error-stream-bad-temperature").body
    client = LeanClient(serve_handler(replay(body, 400, 10_000)), "m", stream=stream)
    record = await client.arequest("x")
    assert not record.ok
    assert record.error.startswith("HTTP 400: temperature must be non-negative")


async def test_broken_stream_and_refused_connection_are_failed_records():
    body = load_transcript("qwen3-parser-stream-thinking-usage").body
    truncated = body[: body.index(b"data: [DONE]")]
    record = await LeanClient(serve_handler(replay(truncated)), "m").arequest("x")
    assert not record.ok and "without [DONE]" in record.error and record.ttft_s is not None
    refused = await LeanClient("http://127.0.0.1:9/v1", "m", timeout=5).arequest("x")
    assert not refused.ok
    assert refused.error.startswith("ConnectError: Cannot connect to host 127.0.0.1:9")
    assert refused.error.endswith("(aiohttp ClientConnectorError)")


async def test_a_reply_that_never_comes_is_a_read_timeout():
    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)  # cancelled with the loop at the end of the test
        raise AssertionError("unreachable")

    record = await LeanClient(serve_handler(silent), "m", timeout=0.2).arequest("x")
    assert not record.ok and record.error.startswith("ReadTimeout: ")
    assert "(aiohttp SocketTimeoutError)" in record.error


def test_a_connect_timeout_is_named_as_one():
    """A connect timeout needs an address that drops packets; the naming is checked directly."""
    error = aiohttp.ConnectionTimeoutError("Connection timeout to host http://10.255.255.1:80")
    assert lean_client._transport_error(error).startswith("ConnectTimeout: Connection timeout")


async def test_the_proxy_from_the_environment_is_used(monkeypatch):
    """As httpx (the previous transport) and ``vllm bench serve`` do: HTTP_PROXY, NO_PROXY apply."""
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    handler = replay(load_transcript("qwen3-parser-stream-thinking-usage").body)
    monkeypatch.setenv("HTTP_PROXY", serve_handler(handler).removesuffix("/v1"))
    record = await LeanClient("http://gpu-pod.invalid:8000/v1", "m").arequest("x")  # only a proxy reaches it
    assert record.ok, record.error
    assert len(handler.bodies) == 1
    monkeypatch.setenv("NO_PROXY", "gpu-pod.invalid")
    direct = await LeanClient("http://gpu-pod.invalid:8000/v1", "m").arequest("x")
    assert direct.error.startswith("ConnectError: Cannot connect to host gpu-pod.invalid:8000")
    assert len(handler.bodies) == 1


def test_bad_max_tokens_is_a_clear_error():
    with pytest.raises(ValueError, match="max_tokens"):
        LeanClient("http://x/v1", "m", max_tokens=0)


@pytest.mark.server
async def test_new_connections_do_not_each_load_the_ca_bundle(monkeypatch):
    """Loading certifi's CA bundle costs ~20 ms of CPU: once per client at most, not per connection."""
    import ssl

    from helpers.bench.load import run_closed_loop
    from helpers.sim import serve

    loaded = []
    create = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: loaded.append(1) or create(*a, **k))
    with serve(profile="instant") as server:
        client = LeanClient(server.base_url, server.model, max_tokens=4)
        run = await run_closed_loop(client, ["hi"] * 16, concurrency=8)
        await client.aclose()
    assert run.completed == 16
    assert len(loaded) <= 1


# --- kept-alive connections the server closes (vLLM closes them after 5 s idle) -------------------

SSE_REPLY = (
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    b"data: [DONE]\n\n"
)


class ClosingServer:
    """An HTTP/1.1 server that answers ``answers`` requests per connection, then closes it.

    The next request on that connection is read and then dropped unanswered, with a reset
    (``reset=True``, a ``ReadError`` for the client) or a plain close (``RemoteProtocolError``):
    exactly what a client meets when it reuses a connection just as the server's keep-alive timer
    closes it, made deterministic.
    """

    def __init__(self, answers: int = 1, reset: bool = True) -> None:
        self.answers = answers
        self.reset = reset
        self.connections = 0
        self.requests = 0
        self.dropped = 0

    async def __aenter__(self) -> ClosingServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                self.requests += 1
                if answered == self.answers:
                    self.dropped += 1
                    if self.reset:
                        linger = struct.pack("ii", 1, 0)  # close with RST, as a reset socket does
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    writer.transport.abort()
                    return
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    + f"content-length: {len(SSE_REPLY)}\r\n\r\n".encode()
                    + SSE_REPLY
                )
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


class CuttingServer:
    """Answers with the HTTP head and ``events`` SSE events, then closes (or resets) the connection."""

    def __init__(self, events: int, reset: bool) -> None:
        self.events = events
        self.reset = reset

    async def __aenter__(self) -> CuttingServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(re.search(rb"(?i)content-length: *(\d+)", head).group(1)))
        event = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + (b"%x\r\n%s\r\n" % (len(event), event)) * self.events
        )
        await writer.drain()
        await asyncio.sleep(0.05)  # the client reads the events before the cut
        if self.reset:
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            writer.transport.abort()
        else:
            writer.close()


@pytest.mark.parametrize(
    ("reset", "kind"), [(False, "RemoteProtocolError"), (True, "ReadError")], ids=["closed", "reset"]
)
async def test_a_stream_cut_in_the_middle_is_a_failed_record_that_says_how(reset, kind):
    async with CuttingServer(events=3, reset=reset) as server, LeanClient(server.base_url, "m") as client:
        record = await client.arequest("x")
    assert not record.ok and record.attempts == 1
    assert record.error.startswith(f"{kind}: Response payload is not completed")
    assert "(aiohttp ClientPayloadError)" in record.error
    assert ("Connection reset by peer" in record.error) == reset


@pytest.mark.server
def test_connections_left_open_are_closed_when_asyncio_run_ends():
    """Without ``aclose``: each loop's session is closed at its shutdown, none left to the GC."""

    async def one(client: LeanClient) -> bool:
        return (await client.arequest("x")).ok

    async def one_and_drop(base_url: str) -> bool:
        ok = (await LeanClient(base_url, "firehose").arequest("x")).ok
        gc.collect()  # the client is garbage now, and its loop ends right after
        return ok

    with serve_firehose(chunks=4) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = LeanClient(server.base_url, "firehose")
        assert asyncio.run(one(client)) and asyncio.run(one(client))  # two loops, one client
        assert asyncio.run(one_and_drop(server.base_url))
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
    assert unclosed == []


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
async def test_a_reused_connection_the_server_closed_is_retried_once_and_counted(reset):
    """The c=512 failures of notebook 04: a kept-alive connection closed as the request arrives."""
    async with ClosingServer(answers=1, reset=reset) as server, LeanClient(server.base_url, "m") as client:
        first = await client.arequest("a")
        second = await client.arequest("b")  # same connection: the server drops it
    assert first.ok and first.attempts == 1
    assert second.ok, second.error
    assert second.attempts == 2  # counted, not hidden
    assert server.dropped == 1 and server.requests == 3 and server.connections == 2
    assert second.start_s <= second.end_s and second.as_row()["attempts"] == 2


async def test_a_fresh_connection_failing_before_the_reply_is_not_retried():
    """Only a reused connection can have been closed under us; a new one failing is a real error."""
    async with ClosingServer(answers=0) as server, LeanClient(server.base_url, "m") as client:
        record = await client.arequest("a")
    assert not record.ok and "ReadError" in record.error
    assert record.attempts == 1 and server.requests == 1


async def test_a_connection_idle_longer_than_keepalive_expiry_is_not_reused():
    async with (
        ClosingServer(answers=10) as server,
        LeanClient(server.base_url, "m", keepalive_expiry=0.2) as client,
    ):
        first = await client.arequest("a")
        await asyncio.sleep(0.3)  # idle longer than the expiry (a slow machine only adds to it)
        second = await client.arequest("b")
    assert first.ok and second.ok and second.attempts == 1
    assert server.connections == 2


def test_idle_connections_expire_before_vllms_keep_alive_closes_them():
    """vLLM closes idle connections after VLLM_HTTP_TIMEOUT_KEEP_ALIVE = 5 s; httpx's default is 5 s too."""
    assert lean_client.DEFAULT_KEEPALIVE_EXPIRY_S < 5.0
    with pytest.raises(ValueError, match="keepalive_expiry"):
        LeanClient("http://x/v1", "m", keepalive_expiry=0)
