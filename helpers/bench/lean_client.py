"""The lean measuring path: a raw ``aiohttp`` POST reading SSE events, as ``vllm bench serve`` does.

No SDK, no LangChain: one POST, the bytes of each network read split into ``data:`` lines, one
``orjson`` parse per event and one clock read per network read. aiohttp parses HTTP in C (llhttp),
which keeps the client's own CPU far below the server's pace (~160,000 chunks per second of its
CPU against the firehose, ``benchmarks/bench_client.py``), so the numbers describe the server
rather than the client.

Example:
    >>> client = LeanClient("http://127.0.0.1:8000/v1", "Qwen/Qwen3-0.6B", max_tokens=64)  # doctest: +SKIP
    >>> record = await client.arequest("你是谁?")                                          # doctest: +SKIP
    >>> record.ttft_s, record.output_tokens                                                 # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from helpers.bench.records import RequestRecord, tokens_from_chunks
from helpers.endpoint import KEEPALIVE_EXPIRY_S
from helpers.reasoning import ReasoningStream, reasoning_field
from helpers.transport import httpx_error_class

DEFAULT_TIMEOUT_S = 300.0
# vLLM closes a connection idle for VLLM_HTTP_TIMEOUT_KEEP_ALIVE = 5 s: a client keeping it as long
# reuses it just as the server closes it. Expire ours first.
DEFAULT_KEEPALIVE_EXPIRY_S = KEEPALIVE_EXPIRY_S
clock = time.perf_counter  # the one clock of every timestamp (tests replace it)


class LeanClient:
    """Send chat completions and time them; one ``aiohttp.ClientSession`` per event loop.

    Args:
        base_url: the OpenAI-compatible root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model name.
        api_key: sent as a bearer token when given.
        max_tokens: cap on generated tokens per request.
        stream: streamed requests give TTFT, time to first answer token and ITL; non-streamed ones
            give the plain latency.
        extra_body: merged into every request body (``temperature``, ``ignore_eos``,
            ``chat_template_kwargs``...).
        timeout: seconds to wait for a response or between two chunks (connecting: at most 10 s).
        keepalive_expiry: seconds an idle connection is kept for reuse; keep it below the server's
            keep-alive timeout (vLLM's ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``, 5 s; uvicorn's default 5 s).
            A request whose reused connection the server closed anyway, before any byte of the
            reply, is sent once more on a new connection and its record says ``attempts=2``.

    Requests go through the proxy the environment names for ``base_url`` (``HTTP_PROXY``,
    ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``; read when the client is made), as with httpx.

    A failure is a record, never an exception: ``HTTP 503: <the server's message>``, ``stream
    ended without [DONE]``, or a transport failure named as the LangChain path (httpx) names it,
    followed by aiohttp's own exception: ``ConnectError`` (refused, host not found, TLS),
    ``ConnectTimeout``, ``ReadTimeout``, ``ReadError`` (connection reset), ``RemoteProtocolError``
    (the server closed the connection before the reply or in the middle of the stream).

    The sessions of a loop are closed by :meth:`aclose`, else when ``asyncio.run()`` shuts the
    loop down (an async generator of ours, left open, closes them when the loop closes its
    generators). Jupyter's loop never closes: its connections live as long as the kernel.
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
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 10.0), sock_read=timeout)
        self.proxy = environment_proxy(self.url)
        self._sessions: dict[asyncio.AbstractEventLoop, _LoopSessions] = {}

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
        sessions = await self._loop_sessions()
        start = clock()
        try:
            return await self._exchange(sessions.pooled, body, start, may_retry=True)
        except _ClosedBeforeReply:
            record = await self._exchange(sessions.fresh(), body, start, may_retry=False)
            record.attempts = 2
            return record

    async def _exchange(
        self, session: aiohttp.ClientSession, body: bytes, start: float, *, may_retry: bool
    ) -> RequestRecord:
        """One POST; raises :class:`_ClosedBeforeReply` when a reused connection was dead."""
        watch = _ConnectionWatch()
        try:
            async with session.post(
                self.url, data=body, headers=self._headers, trace_request_ctx=watch
            ) as reply:
                watch.replied = True
                if reply.status != 200:
                    return _failed(start, f"HTTP {reply.status}: {_error_message(await reply.read())}")
                if self.stream:
                    return await _read_stream(reply.content, start)
                return _read_completion(await reply.read(), start)
        except (aiohttp.ClientError, OSError) as error:  # OSError includes TimeoutError
            if may_retry and watch.closed_under_us(error):
                raise _ClosedBeforeReply from error
            return _failed(start, _transport_error(error))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            return _failed(start, f"{type(error).__name__}: {error}")

    async def aclose(self) -> None:
        """Close the connections opened from the running loop."""
        sessions = self._sessions.pop(asyncio.get_running_loop(), None)
        if sessions is not None:
            await sessions.close()

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _loop_sessions(self) -> _LoopSessions:
        """The sessions of the running loop (connections belong to one loop), made on first use."""
        loop = asyncio.get_running_loop()
        sessions = self._sessions.get(loop)
        if sessions is None:
            for old_loop in [old for old in self._sessions if old.is_closed()]:
                del self._sessions[old_loop]
            sessions = self._sessions[loop] = _LoopSessions(self)
            await sessions.close_at_shutdown(self, loop)
        return sessions


class _LoopSessions:
    """One event loop's sessions: the pool, and (made on first need) one that never reuses.

    ``asyncio.run()`` (and ``asyncio.Runner``, pytest-asyncio) close the async generators still
    open before closing a loop (``loop.shutdown_asyncgens()``); one of ours, started and left
    open, closes the sessions then, so no "Unclosed client session" is left behind and no task
    of ours is pending in the loop.
    """

    def __init__(self, client: LeanClient) -> None:
        self._timeout = client._timeout
        self._proxy = client.proxy
        self._fresh: aiohttp.ClientSession | None = None
        self._shutdown: AsyncGenerator[None] | None = None
        # No connection limit: how many requests are in flight is the load generator's choice.
        self.pooled = self._session(aiohttp.TCPConnector(limit=0, keepalive_timeout=client.keepalive_expiry))

    def fresh(self) -> aiohttp.ClientSession:
        """A session that opens a new connection for every request (the resend after a dead one)."""
        if self._fresh is None:
            self._fresh = self._session(aiohttp.TCPConnector(limit=0, force_close=True))
        return self._fresh

    def _session(self, connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, trace_configs=[_TRACE_REUSE], proxy=self._proxy
        )

    async def close_at_shutdown(self, client: LeanClient, loop: asyncio.AbstractEventLoop) -> None:
        """Start the generator whose ``finally`` closes the sessions when the loop shuts down.

        The loop keeps it for the client (a client dropped before its loop ends is garbage in
        a cycle; collected then, its generator's close would be scheduled as a task the
        loop's shutdown cancels, and its connections left to the GC).
        """

        async def open_until_shutdown() -> AsyncGenerator[None]:
            try:
                yield
            finally:
                _open_until_shutdown.get(loop, set()).discard(self)
                if client._sessions.get(loop) is self:
                    del client._sessions[loop]
                await self._close_sessions()

        self._shutdown = open_until_shutdown()
        _open_until_shutdown.setdefault(loop, set()).add(self)
        await anext(self._shutdown)

    async def close(self) -> None:
        if self._shutdown is not None:
            await self._shutdown.aclose()  # runs its finally: the sessions are closed
        await self._close_sessions()

    async def _close_sessions(self) -> None:
        for session in (self.pooled, self._fresh):
            if session is not None and not session.closed:
                await session.close()


_open_until_shutdown: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[_LoopSessions]] = (
    weakref.WeakKeyDictionary()
)


class _ClosedBeforeReply(Exception):
    """The server had closed the reused connection: nothing of the request was answered."""


class _ConnectionWatch:
    """Whether a request went out on a reused connection and got any reply (aiohttp's trace hook).

    A kept-alive connection can be closed by the server's keep-alive timer while the request is on
    its way; the request then fails with a reset or a disconnect before any byte of the reply, and
    it was never processed. Only that failure is worth sending again: a new connection failing, a
    timeout, or a reply cut after it started are real failures.
    """

    __slots__ = ("replied", "reused")

    def __init__(self) -> None:
        self.reused = False
        self.replied = False

    def closed_under_us(self, error: BaseException) -> bool:
        dropped = isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
        timed_out = isinstance(error, TimeoutError)
        return dropped and not timed_out and self.reused and not self.replied


async def _note_reuse(session: object, context: Any, params: object) -> None:
    if isinstance(context.trace_request_ctx, _ConnectionWatch):
        context.trace_request_ctx.reused = True


_TRACE_REUSE = aiohttp.TraceConfig()
_TRACE_REUSE.on_connection_reuseconn.append(_note_reuse)
_TRACE_REUSE.freeze()


async def _read_stream(content: aiohttp.StreamReader, start: float) -> RequestRecord:
    """Time the SSE events of one streamed reply (definitions of ``vllm bench serve``).

    One clock read per network read: the events that arrived together share their time.
    """
    ttft = ttfa = None
    last = start
    itl: list[float] = []
    append_gap = itl.append
    usage: dict[str, Any] = {}
    decoder: ReasoningStream | None = ReasoningStream()
    done = False
    rest = b""
    read, loads = content.readany, orjson.loads
    while data := await read():
        now = clock()
        if rest:
            data = rest + data
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            event = loads(payload)
            choices = event.get("choices")
            if choices:
                if ttft is None:
                    ttft = now - start
                else:
                    append_gap(now - last)
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


def environment_proxy(url: str) -> str | None:
    """The proxy ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` name for ``url``, unless ``NO_PROXY``
    exempts its host, as httpx reads them.

    Read once, when the client is made: aiohttp's own ``trust_env=True`` also looks for a
    ``.netrc`` on a worker thread for every request, ~0.6 ms of CPU per request.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _usage_fields(usage: dict[str, Any]) -> dict[str, int | None]:
    details = usage.get("completion_tokens_details") or {}
    return {
        "prompt_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "reasoning_tokens": details.get("reasoning_tokens"),
    }


def _transport_error(error: BaseException) -> str:
    """``<kind>: <what happened> (aiohttp <its exception>)``, the kind named as httpx names it.

    The LangChain path (openai SDK on httpx) reports ``ConnectError``, ``ReadError``... and the
    kit's tables count failures by those names: the lean path uses the same words.
    """
    httpx_type = httpx_error_class(error) if isinstance(error, aiohttp.ClientError) else None
    if httpx_type is not None:  # the kit's one classifier of aiohttp errors (helpers.transport)
        kind = httpx_type.__name__
    elif isinstance(error, TimeoutError):
        kind = "ReadTimeout"  # the read timer of our own loop, not aiohttp's
    elif isinstance(error, OSError):
        kind = "ReadError"
    else:
        kind = "TransportError"
    return f"{kind}: {error or 'no message'} (aiohttp {type(error).__name__})"


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
