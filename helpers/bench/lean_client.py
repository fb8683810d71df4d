"""The lean measuring path: raw ``httpx.AsyncClient`` reading SSE lines, as ``vllm bench serve`` does.

No SDK, no LangChain: one POST, the bytes of the stream split into ``data:`` lines, one ``orjson``
parse per event and a clock read per network read. That keeps the client's own CPU far below the
server's pace (tens of thousands of chunks per second on one core), so the numbers describe the
server rather than the client.

Example:
    >>> client = LeanClient("http://127.0.0.1:8000/v1", "Qwen/Qwen3-0.6B", max_tokens=64)  # doctest: +SKIP
    >>> record = await client.arequest("你是谁?")                                          # doctest: +SKIP
    >>> record.ttft_s, record.output_tokens                                                 # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import httpx
import orjson

from helpers.bench.records import RequestRecord, tokens_from_chunks
from helpers.reasoning import ReasoningStream, reasoning_field

DEFAULT_TIMEOUT_S = 300.0
# vLLM closes a connection idle for VLLM_HTTP_TIMEOUT_KEEP_ALIVE = 5 s, and httpx's default expiry
# is 5 s too: a connection was then reused just as the server closed it. Expire ours first.
DEFAULT_KEEPALIVE_EXPIRY_S = 4.0
clock = time.perf_counter  # the one clock of every timestamp (tests replace it)


class LeanClient:
    """Send chat completions and time them; one ``httpx.AsyncClient`` per event loop.

    Args:
        base_url: the OpenAI-compatible root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model name.
        api_key: sent as a bearer token when given.
        max_tokens: cap on generated tokens per request.
        stream: streamed requests give TTFT, time to first answer token and ITL; non-streamed ones
            give the plain latency.
        extra_body: merged into every request body (``temperature``, ``ignore_eos``,
            ``chat_template_kwargs``...).
        timeout: seconds to wait for a response or between two chunks.
        keepalive_expiry: seconds an idle connection is kept for reuse; keep it below the server's
            keep-alive timeout (vLLM's ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``, 5 s; uvicorn's default 5 s).
            A request whose reused connection the server closed anyway, before any byte of the
            reply, is sent once more on a new connection and its record says ``attempts=2``.
        transport: an httpx transport to use instead of the network (tests).
    """

    path = "lean"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 128,
        stream: bool = True,
        extra_body: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if not keepalive_expiry > 0:
            raise ValueError(
                f"keepalive_expiry must be > 0 s (and below the server's keep-alive), got {keepalive_expiry}"
            )
        self.keepalive_expiry = keepalive_expiry
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.stream = stream
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._transport = transport
        # One TLS context for all connections: building one loads certifi's CA bundle (~20 ms of
        # CPU), which httpx would otherwise do for every new client. Plain http needs none.
        self._verify: ssl.SSLContext | bool = (
            httpx.create_ssl_context() if self.url.startswith("https:") else False
        )
        self._clients: dict[asyncio.AbstractEventLoop, list[httpx.AsyncClient]] = {}

    def body(self, prompt: str) -> bytes:
        """The JSON request body for one prompt."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        return orjson.dumps(body)

    async def arequest(self, prompt: str) -> RequestRecord:
        """Send one request and return its record (a failure is a record with ``ok=False``)."""
        record = await self._send(self.body(prompt))
        record.streamed = self.stream
        return record

    async def _send(self, body: bytes) -> RequestRecord:
        idle = self._idle_clients()
        client = idle.pop() if idle else self._new_client()
        start = clock()
        try:
            try:
                return await self._exchange(client, body, start, may_retry=True)
            except _ClosedBeforeReply:
                record = await self._exchange(client, body, start, may_retry=False)
                record.attempts = 2
                return record
        finally:
            idle.append(client)

    async def _exchange(
        self, client: httpx.AsyncClient, body: bytes, start: float, *, may_retry: bool
    ) -> RequestRecord:
        """One POST; raises :class:`_ClosedBeforeReply` when a reused connection was dead."""
        connection = _ConnectionWatch()
        try:
            async with client.stream(
                "POST", self.url, content=body, headers=self._headers, extensions=connection.extensions
            ) as reply:
                connection.replied = True
                if reply.status_code != 200:
                    await reply.aread()
                    return _failed(start, f"HTTP {reply.status_code}: {_error_message(reply.content)}")
                if self.stream:
                    return await _read_stream(reply, start)
                return _read_completion(await reply.aread(), start)
        except httpx.TransportError as error:
            if may_retry and connection.closed_under_us(error):
                raise _ClosedBeforeReply from error
            return _failed(start, f"{type(error).__name__}: {error}")
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as error:
            return _failed(start, f"{type(error).__name__}: {error}")

    async def aclose(self) -> None:
        """Close the connections opened from the running loop."""
        for client in self._clients.pop(asyncio.get_running_loop(), []):
            await client.aclose()

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _idle_clients(self) -> list[httpx.AsyncClient]:
        """The idle connections of the running loop (connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        for old_loop in [old for old in self._clients if old.is_closed()]:
            del self._clients[old_loop]
        return self._clients.setdefault(loop, [])

    def _new_client(self) -> httpx.AsyncClient:
        # One single-connection client per request in flight: httpcore's shared pool scans all of
        # its connections on every request, which costs more CPU than the request itself at 64.
        limits = httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=self.keepalive_expiry
        )
        return httpx.AsyncClient(
            timeout=self._timeout, limits=limits, transport=self._transport, verify=self._verify
        )


class _ClosedBeforeReply(Exception):
    """The server had closed the reused connection: nothing of the request was answered."""


class _ConnectionWatch:
    """Whether a request went out on a reused connection and got any reply (httpcore's trace hook).

    A kept-alive connection can be closed by the server's keep-alive timer while the request is on
    its way; the request then fails with ``ReadError`` or ``RemoteProtocolError`` before any byte
    of the reply, and it was never processed. Only that failure is worth sending again: a new
    connection failing, a timeout, or a reply cut after it started are real failures.
    """

    def __init__(self) -> None:
        self.new_connection = False
        self.replied = False
        self.extensions = {"trace": self._trace}

    async def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            self.new_connection = True

    def closed_under_us(self, error: httpx.TransportError) -> bool:
        dropped = isinstance(error, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))
        return dropped and not self.new_connection and not self.replied


async def _read_stream(reply: httpx.Response, start: float) -> RequestRecord:
    """Time the SSE events of one streamed reply (definitions of ``vllm bench serve``)."""
    ttft = ttfa = None
    last = start
    itl: list[float] = []
    usage: dict[str, Any] = {}
    decoder: ReasoningStream | None = ReasoningStream()
    done = False
    buffer = b""
    async for data in reply.aiter_bytes():
        now = clock()
        buffer += data
        if b"\n" not in data:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            event = orjson.loads(payload)
            choices = event.get("choices")
            if choices:
                if ttft is None:
                    ttft = now - start
                else:
                    itl.append(now - last)
                last = now
                if decoder is not None:
                    delta = choices[0].get("delta") or {}
                    if decoder.feed(reasoning_field(delta), delta.get("content")).answer:
                        ttfa = now - start
                        decoder = None
            elif event.get("usage"):
                usage = event["usage"]
            elif event.get("error"):
                return _failed(start, f"error in stream: {_error_message(payload)}", ttft, itl)
    if not done:
        return _failed(start, "stream ended without [DONE]", ttft, itl)
    if ttft is None:
        return _failed(start, "stream carried no choices")
    return RequestRecord(
        index=0,
        start_s=start,
        end_s=last,
        streamed=True,
        ttft_s=ttft,
        ttfa_s=ttfa,
        itl_s=itl,
        chunks=len(itl) + 1,
        **(_usage_fields(usage) if usage else tokens_from_chunks(len(itl) + 1)),
    )


def _read_completion(content: bytes, start: float) -> RequestRecord:
    end = clock()
    reply = orjson.loads(content)
    if not reply.get("choices"):
        return _failed(start, f"response has no choices: {content[:200]!r}")
    return RequestRecord(index=0, start_s=start, end_s=end, **_usage_fields(reply.get("usage") or {}))


def _usage_fields(usage: dict[str, Any]) -> dict[str, int | None]:
    details = usage.get("completion_tokens_details") or {}
    return {
        "prompt_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "reasoning_tokens": details.get("reasoning_tokens"),
    }


def _failed(
    start: float, error: str, ttft: float | None = None, itl: list[float] | None = None
) -> RequestRecord:
    return RequestRecord(
        index=0,
        start_s=start,
        end_s=clock(),
        ok=False,
        error=error,
        ttft_s=ttft,
        itl_s=list(itl or []),
    )


def _error_message(content: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        error = orjson.loads(content).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return content[:300].decode("utf-8", "replace")
