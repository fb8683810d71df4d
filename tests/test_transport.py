"""helpers.transport: the aiohttp transport raises the httpx error httpx itself would raise.

Each failure is made by a small TCP server in the test's event loop that misbehaves on purpose
(hangs up, resets, cuts a body, stays silent); the openai SDK on top must call a connection
error a connection error (``APIConnectionError``, not ``APITimeoutError``) and a timeout a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import openai
import pytest
from langchain_openai._compat import httpx

from helpers.errors import connect_failure
from helpers.retry import classify, describe
from helpers.transport import AiohttpTransport, aiohttp_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMITS = httpx.Limits(max_connections=10, keepalive_expiry=4.0)
SHORT = httpx.Timeout(0.5, connect=0.5)


class Server:
    """A TCP server on 127.0.0.1 that runs ``handler`` for every connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            await self.handler(reader, writer)
        finally:
            self.open -= 1
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The request's head and body (by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def response(body: bytes, *, length: int | None = None, content_type: bytes = b"application/json") -> bytes:
    size = len(body) if length is None else length
    head = b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: %d\r\n\r\n" % size
    return head + body


REPLY = b'{"id": "x", "object": "chat.completion", "choices": [], "model": "m"}'


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on the connection (keep-alive) until the client closes it."""
    while True:
        try:
            await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        writer.write(response(REPLY))
        await writer.drain()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    writer.transport.abort()


async def cut_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(response(REPLY[:20], length=len(REPLY)))
    await writer.drain()


SSE_EVENT = b'data: {"id": "x", "object": "chat.completion.chunk", "choices": [], "model": "m"}\n\n'


async def cut_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Two SSE events of a chunked reply, then the connection closes without the last chunk."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(2):
        writer.write(b"%x\r\n%s\r\n" % (len(SSE_EVENT), SSE_EVENT))
    await writer.drain()


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Wait (at most 30 s) for the client to close the connection."""
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(reader.read(), 30)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await until_closed(reader)


async def stall_mid_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    writer.write(b"%x\r\n%s\r\n" % (len(SSE_EVENT), SSE_EVENT))
    await writer.drain()
    await until_closed(reader)


def refused_url() -> str:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def unanswered_url():
    """A listening socket whose accept queue is full: new connections wait for the SYN-ACK."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def post(url: str, *, timeout: httpx.Timeout = SHORT) -> httpx.Response:
    async with aiohttp_client(timeout=timeout, limits=LIMITS) as client:
        reply = await client.post(f"{url}/v1/chat/completions", json={"model": "m"})
        await reply.aread()
        return reply


async def stream(url: str, *, timeout: httpx.Timeout = SHORT) -> list[bytes]:
    async with (
        aiohttp_client(timeout=timeout, limits=LIMITS) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json={"stream": True}) as reply,
    ):
        return [chunk async for chunk in reply.aiter_bytes()]


def sdk(url: str, *, timeout: httpx.Timeout = SHORT) -> openai.AsyncOpenAI:
    http_client = aiohttp_client(timeout=timeout, limits=LIMITS)
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="EMPTY", max_retries=0, http_client=http_client)


# --- httpx level: the error class httpx's own transport raises for the same failure ----------------


async def test_a_refused_connection_is_a_connect_error() -> None:
    with pytest.raises(httpx.ConnectError) as raised:
        await post(refused_url())
    assert connect_failure(raised.value) == "connect"
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)  # as httpx chains it


async def test_a_name_that_does_not_resolve_is_a_connect_error_naming_the_host() -> None:
    with pytest.raises(httpx.ConnectError) as raised:
        await post("http://no-such-host.invalid")
    assert "no-such-host.invalid" in str(raised.value)
    assert connect_failure(raised.value) in ("host", "connect")  # "connect": no DNS at all here


async def test_a_connection_not_accepted_in_time_is_a_connect_timeout() -> None:
    with unanswered_url() as url, pytest.raises(httpx.ConnectTimeout):
        await post(url, timeout=httpx.Timeout(30.0, connect=0.3))


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (hang_up, httpx.RemoteProtocolError),  # httpx: "Server disconnected without sending a response."
        (reset, (httpx.ReadError, httpx.RemoteProtocolError)),
        (cut_body, httpx.RemoteProtocolError),  # httpx: "peer closed connection without ... body"
    ],
    ids=["hang-up", "reset", "cut-body"],
)
async def test_a_server_that_fails_the_reply_is_a_network_or_protocol_error(handler, expected) -> None:
    async with Server(handler).running() as url:
        with pytest.raises(expected) as raised:
            await post(url)
    assert not isinstance(raised.value, httpx.TimeoutException), repr(raised.value)
    assert connect_failure(raised.value) is None  # the request was sent: not "nothing answered"
    assert classify(raised.value).retryable


async def test_a_stream_cut_mid_body_is_a_remote_protocol_error() -> None:
    async with Server(cut_stream).running() as url:
        with pytest.raises(httpx.RemoteProtocolError):
            await stream(url)


async def test_a_silent_server_is_a_read_timeout() -> None:
    async with Server(silent).running() as url:
        with pytest.raises(httpx.ReadTimeout):
            await post(url, timeout=httpx.Timeout(0.3, connect=5.0))


async def test_a_stream_that_stalls_is_a_read_timeout() -> None:
    async with Server(stall_mid_stream).running() as url:
        with pytest.raises(httpx.ReadTimeout):
            await stream(url, timeout=httpx.Timeout(0.3, connect=5.0))


# --- the openai SDK on top: connection errors are not "Request timed out." ------------------------


@pytest.mark.parametrize(
    ("handler", "root_cause"),
    [
        (None, "ConnectionRefusedError"),
        (hang_up, "RemoteProtocolError: Server disconnected"),
        (reset, "ConnectionResetError"),
        (cut_body, "RemoteProtocolError: Response payload is not completed"),
    ],
    ids=["refused", "hang-up", "reset", "cut-body"],
)
async def test_the_sdk_reads_a_connection_failure_as_a_connection_error(handler, root_cause: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        url = refused_url() if handler is None else await stack.enter_async_context(Server(handler).running())
        client = sdk(url)
        stack.push_async_callback(client.close)
        with pytest.raises(openai.APIConnectionError) as raised:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert not isinstance(raised.value, openai.APITimeoutError), describe(raised.value)
    assert f"(caused by {root_cause}" in describe(raised.value)  # what amap's outcomes say


async def test_the_sdk_reads_a_silent_server_as_a_timeout() -> None:
    async with Server(silent).running() as url:
        client = sdk(url, timeout=httpx.Timeout(0.3, connect=5.0))
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        await client.close()


async def test_the_sdk_retries_a_hang_up_on_a_new_connection() -> None:
    """The SDK retries connection errors: the second attempt goes out on a new connection."""
    attempts = []

    async def hang_up_once(reader, writer) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            await read_request(reader)
            return
        await ok(reader, writer)

    server = Server(hang_up_once)
    async with server.running() as url:
        client = sdk(url).with_options(max_retries=1)
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        await client.close()
    assert server.connections == 2


# --- keep-alive, closing, cancellation -------------------------------------------------------------


async def test_idle_connections_are_reused_then_closed_after_keepalive_expiry() -> None:
    server = Server(ok)
    async with server.running() as url:
        limits = httpx.Limits(max_connections=10, keepalive_expiry=0.2)
        async with aiohttp_client(timeout=SHORT, limits=limits) as client:
            for _ in range(3):
                (await client.post(f"{url}/v1/x", json={})).raise_for_status()
            assert server.connections == 1  # one connection, kept alive between requests
            for _ in range(100):  # the client closes it once idle for 0.2 s (allow a slow machine)
                if server.open == 0:
                    break
                await asyncio.sleep(0.1)
            assert server.open == 0
            (await client.post(f"{url}/v1/x", json={})).raise_for_status()
            assert server.connections == 2


async def test_closing_the_client_closes_its_connections() -> None:
    server = Server(ok)
    async with server.running() as url:
        client = aiohttp_client(timeout=SHORT, limits=LIMITS)
        await asyncio.gather(*(client.post(f"{url}/v1/x", json={}) for _ in range(4)))
        assert server.open >= 1
        await client.aclose()
        for _ in range(50):
            if server.open == 0:
                break
            await asyncio.sleep(0.1)
        assert server.open == 0


async def test_a_cancelled_stream_closes_its_connection_and_the_pool_goes_on() -> None:
    server = Server(stall_mid_stream)
    async with server.running() as url, aiohttp_client(timeout=httpx.Timeout(30.0), limits=LIMITS) as client:
        first_chunk = asyncio.Event()

        async def read() -> None:
            async with client.stream("POST", f"{url}/v1/x", json={}) as reply:
                async for _ in reply.aiter_bytes():
                    first_chunk.set()

        task = asyncio.create_task(read())
        await first_chunk.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):
            if server.open == 0:
                break
            await asyncio.sleep(0.1)
        assert server.open == 0  # not returned to the pool half-read
        server.handler = ok
        (await client.post(f"{url}/v1/x", json={})).raise_for_status()


def test_the_transport_takes_the_sdk_transports_arguments() -> None:
    transport = AiohttpTransport(limits=LIMITS)
    assert transport.limits.keepalive_expiry == 4.0
