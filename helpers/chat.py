"""A LangChain chat model for Qwen3 on vLLM that keeps the reasoning and works across event loops.

``make_chat_model(thinking=...)`` returns a ``ReasoningChatOpenAI``: a ``ChatOpenAI`` subclass that

* puts Qwen3's reasoning in ``AIMessage.additional_kwargs["reasoning_content"]`` — from the
  ``reasoning`` field (vLLM >= 0.16), ``reasoning_content`` (older vLLM, SGLang, DeepSeek) or an
  inline ``<think>...</think>`` block (a server without ``--reasoning-parser``), for ``invoke``,
  ``ainvoke``, ``batch``, ``abatch`` and on every chunk of ``stream``/``astream`` — and keeps only
  the answer in ``content`` (the rules are in ``helpers.reasoning``; with ``thinking=False`` all
  generated text is answer, even where vLLM's ``deepseek_r1`` parser files it as reasoning);
* turns thinking on or off the way vLLM honours it:
  ``extra_body={"chat_template_kwargs": {"enable_thinking": ...}}`` (``thinking=None`` leaves the
  server's default, which is on for Qwen3);
* gives each event loop its own async HTTP client, so one model can serve several
  ``asyncio.run(...)`` calls (plain ``ChatOpenAI`` shares one process-wide ``httpx.AsyncClient``
  whose pooled connections belong to the first loop: ``RuntimeError: Event loop is closed``);
  the models of one loop share one connection pool per timeout, closed when ``asyncio.run()``
  shuts the loop down (httpx and the openai SDK have no hook for a loop's end: a task of ours,
  pending until the loop cancels it at shutdown, closes the pool); the pool is aiohttp's
  (``helpers.transport``: the openai SDK's aiohttp transport, which costs about a third less CPU
  per request than httpx's pool, with its errors mapped as httpx maps them, so a stopped server is
  a connection error and not "Request timed out.");
* returns the server's JSON to ChatOpenAI as dicts instead of building the SDK's pydantic models
  it would dump back to dicts (see ``_DictCompletions``);
* asks for ``usage`` on streams (``stream_usage=True``), so ``usage_metadata`` arrives;
* keeps the reasoning next to tool calls (``bind_tools``, streamed ``tool_call_chunks``,
  ``with_structured_output``), turns tool arguments that are JSON but no object (a small model
  writes ``true``) into ``invalid_tool_calls`` instead of a crash, and raises
  ``ToolFlagsMissingError`` with the ``vllm serve`` flags to add when vLLM refuses tools.

Why subclass ``ChatOpenAI`` rather than use ``langchain_deepseek.ChatDeepSeek``: ChatDeepSeek maps
the ``reasoning_content``/``reasoning`` fields, but it does not split an inline ``<think>`` block
(a vLLM server started without a reasoning parser), it labels every reply as provider "deepseek",
and it builds one async client per model, which still breaks across event loops. The subclass is
a few small overrides of the hooks ChatOpenAI already has (``_create_chat_result``,
``_convert_chunk_to_generation_chunk``, and ``_generate``/``_stream`` wrapped for the tool-flags
error) plus a per-stream decoder, so everything else — tool and structured-output parsing,
callbacks, retries — stays ChatOpenAI's.

Example:
    >>> from helpers.chat import make_chat_model
    >>> model = make_chat_model(thinking=True)            # doctest: +SKIP
    >>> reply = model.invoke("你是谁?")                    # doctest: +SKIP
    >>> reply.additional_kwargs["reasoning_content"]      # doctest: +SKIP
    >>> reply.content                                     # the answer only  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import openai
from langchain_core.messages import AIMessageChunk
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from langchain_openai._compat import httpx
from langchain_openai.chat_models.base import OpenAIInvalidRequestError
from openai._base_client import make_request_options
from openai._constants import RAW_RESPONSE_HEADER
from pydantic import SecretStr, model_validator

from helpers.endpoint import (
    KEEPALIVE_EXPIRY_S,
    TOOLS_HINT,
    Endpoint,
    resolve_endpoint,
    server_endpoint,
    tool_flags_missing,
)
from helpers.reasoning import Parts, ReasoningStream, reasoning_field, split_message
from helpers.transport import aiohttp_client

REASONING_KEY = "reasoning_content"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_TOKENS = 2048
# Qwen3 model card, "Best practices": sampling for thinking and for non-thinking mode.
RECOMMENDED_SAMPLING = {True: (0.6, 0.95), False: (0.7, 0.8)}


class _LoopClients:
    """The async clients of one event loop: one aiohttp pool per timeout (shared by all models) and
    one openai client per model, all closed when the loop shuts down.

    ``asyncio.run()`` (and ``asyncio.Runner``, pytest-asyncio) cancel the tasks still pending before
    closing a loop; the ``closer`` task waits for that and closes the pools while the loop still
    runs. Jupyter's loop never closes: its clients live as long as the kernel.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pools: dict[Any, httpx.AsyncClient] = {}
        self.sdk_clients: weakref.WeakKeyDictionary[_LoopLocal, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self.closer = loop.create_task(self._close_at_shutdown(loop), name=_CLOSER_TASK_NAME)

    def pool(self, timeout: Any) -> httpx.AsyncClient:
        key = (
            (timeout.connect, timeout.read, timeout.write, timeout.pool)
            if isinstance(timeout, httpx.Timeout)
            else timeout
        )
        client = self.pools.get(key)
        if client is None:
            client = aiohttp_client(timeout=timeout, limits=_POOL_LIMITS)
            self.pools[key] = client
        return client

    async def _close_at_shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.create_future()  # never set: cancelled when the loop shuts down
        finally:
            _clients_by_loop.pop(loop, None)
            self.sdk_clients.clear()
            pools, self.pools = list(self.pools.values()), {}
            for pool in pools:
                await pool.aclose()


# The SDK's limits, idle connections closed before vLLM's 5 s keep-alive closes them.
_POOL_LIMITS = httpx.Limits(
    max_connections=1000, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_EXPIRY_S
)
_CLOSER_TASK_NAME = "helpers.chat: close this loop's HTTP clients when it shuts down"
_clients_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
    weakref.WeakKeyDictionary()
)
_clients_by_loop_lock = threading.Lock()


def _running_loop_clients() -> _LoopClients | None:
    """The clients of the running event loop (created on first use), None outside a loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    clients = _clients_by_loop.get(loop)
    if clients is None:
        with _clients_by_loop_lock:
            clients = _clients_by_loop.get(loop)
            if clients is None:
                clients = _clients_by_loop[loop] = _LoopClients(loop)
    return clients


class _LoopLocal:
    """Attribute proxy to the running event loop's copy of an ``openai.AsyncOpenAI`` (the template
    itself outside a loop).

    ``ChatOpenAI`` calls ``self.root_async_client.<...>`` and ``self.async_client.<...>`` inside its
    coroutines; resolving the attribute there picks the client of the loop that runs the call.
    """

    def __init__(self, template: openai.AsyncOpenAI) -> None:
        self._template = template

    def current(self) -> openai.AsyncOpenAI:
        clients = _running_loop_clients()
        if clients is None:
            return self._template
        client = clients.sdk_clients.get(self)
        if client is None:
            client = self._template.copy(http_client=clients.pool(self._template.timeout))
            clients.sdk_clients[self] = client
        return client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes before __init__ ran; private attributes
            raise AttributeError(name)
        return getattr(self.current(), name)

    def __repr__(self) -> str:
        return f"<one {type(self._template).__name__} per event loop>"


class _DictCompletions:
    """``client.chat.completions`` for ChatOpenAI: ``create`` returns the server's JSON as dicts.

    ChatOpenAI turns every reply and every streamed chunk back into a dict (``model_dump()``)
    before reading it, and its payload is JSON already; the openai SDK's ``create`` would check
    that payload against its TypedDicts and build pydantic models of the reply (on a stream, 40%
    of the client's CPU). ``create`` and ``with_raw_response.create`` here send the same request
    through the SDK's ``client.post`` (its headers, auth, retries, timeouts and error mapping
    unchanged) with ``cast_to=object``: a dict, or a stream of dicts. Everything else (``parse``,
    ``stream``, ``with_streaming_response``) is the SDK's resource itself.
    """

    def __init__(self, client: Callable[[], Any], stream_cls: type) -> None:
        self._client = client  # resolved per call: the running loop's client
        self._stream_cls = stream_cls  # openai.Stream[object] or openai.AsyncStream[object]

    def create(self, **payload: Any) -> Any:
        """The reply as a dict (a stream of dicts); awaitable for an async client."""
        return _post_chat_completion(self._client(), payload, self._stream_cls, raw=False)

    @property
    def with_raw_response(self) -> _RawDictCompletions:
        return _RawDictCompletions(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes before __init__ ran; private attributes
            raise AttributeError(name)
        return getattr(self._client().chat.completions, name)


def dict_completions(client: openai.AsyncOpenAI) -> _DictCompletions:
    """``client.chat.completions`` returning dicts, for a ``ReasoningChatOpenAI``'s ``async_client``
    (``helpers.concurrency.amap`` gives its retry-free copy of the model its own client this way).
    """
    return _DictCompletions(lambda: client, openai.AsyncStream[object])


class _RawDictCompletions:
    """``with_raw_response``: the SDK's raw response (headers, ...) whose ``parse()`` is a dict."""

    def __init__(self, completions: _DictCompletions) -> None:
        self._completions = completions

    def create(self, **payload: Any) -> Any:
        completions = self._completions
        return _post_chat_completion(completions._client(), payload, completions._stream_cls, raw=True)


def _post_chat_completion(client: Any, payload: dict[str, Any], stream_cls: type, *, raw: bool) -> Any:
    """What ``client.chat.completions.create(**payload)`` sends, with ``cast_to=object``."""
    body = {key: value for key, value in payload.items() if not isinstance(value, _NOT_GIVEN_TYPES)}
    headers = body.pop("extra_headers", None)
    if raw:
        headers = {RAW_RESPONSE_HEADER: "true", **(headers or {})}
    options = make_request_options(
        extra_headers=headers,
        extra_query=body.pop("extra_query", None),
        extra_body=body.pop("extra_body", None),
        timeout=body.pop("timeout", openai.NOT_GIVEN),
        security={"bearer_auth": True},
    )
    stream = bool(body.get("stream"))
    return client.post(
        "/chat/completions", body=body, options=options, cast_to=object, stream=stream, stream_cls=stream_cls
    )


_NOT_GIVEN_TYPES = (type(openai.NOT_GIVEN), type(openai.omit))


class ReasoningChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` that keeps Qwen3's reasoning and gives each event loop its own client.

    Prefer ``make_chat_model``; construct directly with ChatOpenAI's arguments if you need to.
    """

    @model_validator(mode="after")
    def _one_async_client_per_loop(self) -> Self:
        """Replace the shared async client with one per event loop (unless the user gave one), and
        have chat completions return dicts (see ``_DictCompletions``)."""
        if self.http_async_client is None and not isinstance(self.root_async_client, _LoopLocal):
            self.root_async_client = _LoopLocal(self.root_async_client)
        if self.root_async_client is not None and not isinstance(self.async_client, _DictCompletions):
            root_async = self.root_async_client
            current = root_async.current if isinstance(root_async, _LoopLocal) else lambda: root_async
            self.async_client = _DictCompletions(current, openai.AsyncStream[object])
        if self.root_client is not None and not isinstance(self.client, _DictCompletions):
            root = self.root_client
            self.client = _DictCompletions(lambda: root, openai.Stream[object])
        return self

    @property
    def _llm_type(self) -> str:
        return "vllm-reasoning-chat"

    @property
    def thinking(self) -> bool | None:
        """``chat_template_kwargs.enable_thinking`` this model sends (None: server default)."""
        value = ((self.extra_body or {}).get("chat_template_kwargs") or {}).get("enable_thinking")
        return value if isinstance(value, bool) else None

    def _create_chat_result(
        self, response: dict | openai.BaseModel, generation_info: dict | None = None
    ) -> ChatResult:
        if not isinstance(response, dict | openai.BaseModel):  # an HTML page: ChatOpenAI says so
            return super()._create_chat_result(response, generation_info)
        response_dict = (
            response
            if isinstance(response, dict)
            else response.model_dump(
                exclude={"choices": {"__all__": {"message": {"parsed"}}}}, warnings=False
            )
        )
        not_objects = _pop_calls_without_object_arguments(response_dict)
        result = super()._create_chat_result(response_dict if not_objects else response, generation_info)
        for index, (generation, choice) in enumerate(
            zip(result.generations, response_dict["choices"], strict=True)
        ):
            parts = split_message(choice["message"], thinking=self.thinking)
            generation.message.content = parts.answer
            generation.message.additional_kwargs[REASONING_KEY] = parts.reasoning
            generation.message.invalid_tool_calls.extend(not_objects.get(index, []))
        return result

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        with _tool_flags_explained():
            return super()._generate(*args, **kwargs)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        with _tool_flags_explained():
            return await super()._agenerate(*args, **kwargs)

    def _convert_chunk_to_generation_chunk(
        self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
    ) -> ChatGenerationChunk | None:
        generation_chunk = super()._convert_chunk_to_generation_chunk(
            chunk, default_chunk_class, base_generation_info
        )
        choices = chunk.get("choices") or chunk.get("chunk", {}).get("choices") or []
        if generation_chunk is not None and choices and choices[0].get("delta"):
            raw = reasoning_field(choices[0]["delta"])
            if raw is not None:
                # Raw field; the per-stream decoder in _stream/_astream finalises it.
                generation_chunk.message.additional_kwargs[REASONING_KEY] = raw
        return generation_chunk

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        decoder = ReasoningStream(self.thinking)
        last: ChatGenerationChunk | None = None
        with _tool_flags_explained():
            for chunk in super()._stream(*args, **kwargs):
                last = _decode_chunk(decoder, chunk)
                yield last
        if tail := _tail_chunk(decoder, last):
            yield tail

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        decoder = ReasoningStream(self.thinking)
        last: ChatGenerationChunk | None = None
        with _tool_flags_explained():
            async for chunk in super()._astream(*args, **kwargs):
                last = _decode_chunk(decoder, chunk)
                yield last
        if tail := _tail_chunk(decoder, last):
            yield tail


class ToolFlagsMissingError(OpenAIInvalidRequestError):
    """vLLM refused a request with tools: it was started without ``--enable-auto-tool-choice
    --tool-call-parser hermes``. The message ends with the ``vllm serve`` command to use.

    An ``openai.BadRequestError`` (HTTP 400, never retried) and LangChain's
    ``ModelInvalidRequestError``, like the error it replaces.
    """


@contextmanager
def _tool_flags_explained() -> Iterator[None]:
    """Re-raise vLLM's refusal of tools as ``ToolFlagsMissingError`` saying which flags to add."""
    try:
        yield
    except openai.BadRequestError as exc:
        if isinstance(exc, ToolFlagsMissingError) or not tool_flags_missing(exc):
            raise
        message = f"{exc.message.rstrip('.')}. To fix: {TOOLS_HINT}"
        raise ToolFlagsMissingError(message=message, response=exc.response, body=exc.body) from exc


def _pop_calls_without_object_arguments(response: dict) -> dict[int, list]:
    """Remove tool calls whose arguments are valid JSON but no object (a small model writes
    ``true``); LangChain would fail on them. Returns them as invalid tool calls, per choice index.
    """
    popped: dict[int, list] = {}
    for index, choice in enumerate(response.get("choices") or []):
        calls = (choice.get("message") or {}).get("tool_calls")
        if not calls:
            continue
        kept = []
        for call in calls:
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except (TypeError, ValueError):  # not JSON: LangChain reports it as invalid itself
                arguments = {}
            if isinstance(arguments, dict):
                kept.append(call)
                continue
            error = f"the arguments are {type(arguments).__name__} JSON, not a JSON object"
            popped.setdefault(index, []).append(
                invalid_tool_call(
                    name=function.get("name"), args=function.get("arguments"), id=call.get("id"), error=error
                )
            )
        if index in popped:
            choice["message"]["tool_calls"] = kept or None
    return popped


def _decode_chunk(decoder: ReasoningStream, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
    """Rewrite one streamed chunk: answer in ``content``, reasoning in ``additional_kwargs``.

    Every chunk gets ``reasoning_content``, tool-call chunks too; content that is not text
    (content blocks) is left as it is.
    """
    message = chunk.message
    content = message.content if isinstance(message.content, str) else None
    parts = decoder.feed(message.additional_kwargs.get(REASONING_KEY), content)
    if (chunk.generation_info or {}).get("finish_reason"):
        parts = parts + decoder.close()
    if content is not None:
        message.content = parts.answer
    message.additional_kwargs[REASONING_KEY] = parts.reasoning
    return chunk


def _tail_chunk(decoder: ReasoningStream, last: ChatGenerationChunk | None) -> ChatGenerationChunk | None:
    """The closing chunk: text the decoder still held, marked ``chunk_position="last"``.

    Yielding it ourselves keeps ``reasoning_content`` on every chunk (LangChain would otherwise
    append its own empty closing chunk without it).
    """
    if last is None:
        return None
    parts: Parts = decoder.close()
    message = AIMessageChunk(
        content=parts.answer,
        additional_kwargs={REASONING_KEY: parts.reasoning},
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)


def thinking_extra_body(thinking: bool | None, extra_body: dict | None = None) -> dict | None:
    """The ``extra_body`` that turns Qwen3's thinking on/off on vLLM (None: server default).

    >>> thinking_extra_body(False)
    {'chat_template_kwargs': {'enable_thinking': False}}
    >>> thinking_extra_body(None, {"top_k": 20})
    {'top_k': 20}
    """
    body = dict(extra_body or {})
    if thinking is not None:
        template_kwargs = dict(body.get("chat_template_kwargs") or {})
        template_kwargs["enable_thinking"] = thinking
        body["chat_template_kwargs"] = template_kwargs
    return body or None


# ChatOpenAI's names (and aliases) for what an Endpoint holds.
_ENDPOINT_ARGUMENTS = {
    "base_url": "base_url",
    "openai_api_base": "base_url",
    "api_key": "api_key",
    "openai_api_key": "api_key",
    "model": "model",
    "model_name": "model",
}


def _endpoint_from(endpoint: Endpoint | None, kwargs: dict[str, Any]) -> Endpoint:
    """``endpoint`` (default: ``resolve_endpoint()``) with ChatOpenAI-style ``base_url``,
    ``api_key`` and ``model`` from ``kwargs`` (popped) applied over it.

    A ``base_url`` names a server: no simulator is started, and key and model it is not given
    come from the endpoint, else from the environment as in ``resolve_endpoint``.
    """
    given: dict[str, str] = {}
    for name, field in _ENDPOINT_ARGUMENTS.items():
        value = kwargs.pop(name, None)
        if value is not None:
            given[field] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    if "base_url" in given:
        model = given.get("model") or (endpoint.model if endpoint else None)
        key = given.get("api_key") or (endpoint.api_key.get_secret_value() if endpoint else None)
        return server_endpoint(given["base_url"], model, key)
    endpoint = endpoint or resolve_endpoint(model=given.get("model"), api_key=given.get("api_key"))
    if "api_key" in given:
        given["api_key"] = SecretStr(given["api_key"])
    return dataclasses.replace(endpoint, **given) if given else endpoint


def make_chat_model(
    thinking: bool | None = None,
    endpoint: Endpoint | None = None,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    max_retries: int = DEFAULT_MAX_RETRIES,
    streaming: bool = False,
    **kwargs: Any,
) -> ReasoningChatOpenAI:
    """A chat model for Qwen3 on ``endpoint`` (default: ``resolve_endpoint()``).

    Args:
        thinking: True/False sends ``chat_template_kwargs.enable_thinking``; None keeps the
            server's default (Qwen3: on).
        endpoint: where to send requests; ChatOpenAI-style ``base_url=``, ``api_key=``,
            ``model=`` (in ``kwargs``) override it, and a ``base_url`` never starts the simulator.
        temperature, top_p: default to the Qwen3 model card's recommendation for the mode
            (thinking 0.6/0.95, non-thinking 0.7/0.8).
        max_tokens: cap on generated tokens (reasoning included).
        timeout: seconds to wait for a response, or between two streamed chunks; None waits
            as long as it takes. Connecting is bounded by 10 s (or ``timeout`` if shorter).
        max_retries: retries of the openai SDK for connection errors, 408/409/429 and 5xx.
        streaming: make ``invoke``/``ainvoke`` use the streaming API under the hood.
        **kwargs: any other ``ChatOpenAI`` argument (``extra_body`` is merged, not replaced).

    Example:
        >>> model = make_chat_model(thinking=False, max_tokens=256)  # doctest: +SKIP
        >>> model.invoke("1+1=?").content                           # doctest: +SKIP
        >>> make_chat_model(base_url="http://gpu-pod:8000/v1", api_key="sk-...")  # doctest: +SKIP
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
    if streaming:  # passing streaming=False explicitly would make .stream() fall back to invoke
        kwargs["streaming"] = True
    endpoint = _endpoint_from(endpoint, kwargs)
    connect_timeout = (
        DEFAULT_CONNECT_TIMEOUT_S if timeout is None else min(timeout, DEFAULT_CONNECT_TIMEOUT_S)
    )
    default_temperature, default_top_p = RECOMMENDED_SAMPLING[thinking is not False]
    return ReasoningChatOpenAI(
        model=endpoint.model,
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        temperature=default_temperature if temperature is None else temperature,
        top_p=default_top_p if top_p is None else top_p,
        max_tokens=max_tokens,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        max_retries=max_retries,
        stream_usage=True,
        # httpx's read timeout already bounds the gap between chunks (vLLM sends no keep-alives);
        # langchain's extra per-chunk timer would cost a task per token.
        stream_chunk_timeout=kwargs.pop("stream_chunk_timeout", None),
        extra_body=thinking_extra_body(thinking, kwargs.pop("extra_body", None)),
        **kwargs,
    )
