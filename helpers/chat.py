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
* asks for ``usage`` on streams (``stream_usage=True``), so ``usage_metadata`` arrives.

Why subclass ``ChatOpenAI`` rather than use ``langchain_deepseek.ChatDeepSeek``: ChatDeepSeek maps
the ``reasoning_content``/``reasoning`` fields, but it does not split an inline ``<think>`` block
(a vLLM server started without a reasoning parser), it labels every reply as provider "deepseek",
and it builds one async client per model, which still breaks across event loops. The subclass is
two small overrides on top of the hooks ChatOpenAI already has (``_create_chat_result`` and
``_convert_chunk_to_generation_chunk``) plus a per-stream decoder, so everything else —
tools, structured output, callbacks, retries — stays ChatOpenAI's.

Example:
    >>> from helpers.chat import make_chat_model
    >>> model = make_chat_model(thinking=True)            # doctest: +SKIP
    >>> reply = model.invoke("你是谁?")                    # doctest: +SKIP
    >>> reply.additional_kwargs["reasoning_content"]      # doctest: +SKIP
    >>> reply.content                                     # the answer only  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Self

import openai
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from langchain_openai._compat import httpx
from pydantic import model_validator

from helpers.endpoint import Endpoint, resolve_endpoint
from helpers.reasoning import Parts, ReasoningStream, reasoning_field, split_message

REASONING_KEY = "reasoning_content"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_TOKENS = 2048
# Qwen3 model card, "Best practices": sampling for thinking and for non-thinking mode.
RECOMMENDED_SAMPLING = {True: (0.6, 0.95), False: (0.7, 0.8)}


class _LoopLocal:
    """Attribute proxy to one object per running event loop (the template outside a loop).

    ``ChatOpenAI`` calls ``self.root_async_client.<...>`` and ``self.async_client.<...>`` inside its
    coroutines; resolving the attribute there picks the client of the loop that runs the call.
    """

    def __init__(self, template: Any, make: Callable[[], Any]) -> None:
        self._template = template
        self._make = make
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def current(self) -> Any:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._template
        with self._lock:
            target = self._per_loop.get(loop)
            if target is None:
                target = self._per_loop[loop] = self._make()
            return target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes before __init__ ran; private attributes
            raise AttributeError(name)
        return getattr(self.current(), name)

    def __repr__(self) -> str:
        return f"<one {type(self._template).__name__} per event loop>"


class _ChatCompletionsOf:
    """``client.chat.completions`` of whatever client a ``_LoopLocal`` resolves to."""

    def __init__(self, clients: _LoopLocal) -> None:
        self._clients = clients

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._clients.current().chat.completions, name)


class ReasoningChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` that keeps Qwen3's reasoning and gives each event loop its own client.

    Prefer ``make_chat_model``; construct directly with ChatOpenAI's arguments if you need to.
    """

    @model_validator(mode="after")
    def _one_async_client_per_loop(self) -> Self:
        """Replace the shared async client with one per event loop (unless the user gave one)."""
        if self.http_async_client is not None or isinstance(self.root_async_client, _LoopLocal):
            return self
        template: openai.AsyncOpenAI = self.root_async_client

        def fresh_client() -> openai.AsyncOpenAI:
            return template.copy(http_client=openai.DefaultAsyncHttpxClient(timeout=template.timeout))

        clients = _LoopLocal(template, fresh_client)
        self.root_async_client = clients
        self.async_client = _ChatCompletionsOf(clients)
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
        result = super()._create_chat_result(response, generation_info)
        response_dict = response if isinstance(response, dict) else response.model_dump()
        for generation, choice in zip(result.generations, response_dict["choices"], strict=True):
            parts = split_message(choice["message"], thinking=self.thinking)
            generation.message.content = parts.answer
            generation.message.additional_kwargs[REASONING_KEY] = parts.reasoning
        return result

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
        for chunk in super()._stream(*args, **kwargs):
            last = _decode_chunk(decoder, chunk)
            yield last
        if tail := _tail_chunk(decoder, last):
            yield tail

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        decoder = ReasoningStream(self.thinking)
        last: ChatGenerationChunk | None = None
        async for chunk in super()._astream(*args, **kwargs):
            last = _decode_chunk(decoder, chunk)
            yield last
        if tail := _tail_chunk(decoder, last):
            yield tail


def _decode_chunk(decoder: ReasoningStream, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
    """Rewrite one streamed chunk: answer in ``content``, reasoning in ``additional_kwargs``."""
    message = chunk.message
    content = message.content if isinstance(message.content, str) else None
    if content is None and not message.additional_kwargs.get(REASONING_KEY):
        return chunk  # a non-text chunk (tool calls as content blocks): leave it alone
    parts = decoder.feed(message.additional_kwargs.get(REASONING_KEY), content)
    if (chunk.generation_info or {}).get("finish_reason"):
        parts = parts + decoder.close()
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


def make_chat_model(
    thinking: bool | None = None,
    endpoint: Endpoint | None = None,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_retries: int = DEFAULT_MAX_RETRIES,
    streaming: bool = False,
    **kwargs: Any,
) -> ReasoningChatOpenAI:
    """A chat model for Qwen3 on ``endpoint`` (default: ``resolve_endpoint()``).

    Args:
        thinking: True/False sends ``chat_template_kwargs.enable_thinking``; None keeps the
            server's default (Qwen3: on).
        temperature, top_p: default to the Qwen3 model card's recommendation for the mode
            (thinking 0.6/0.95, non-thinking 0.7/0.8).
        max_tokens: cap on generated tokens (reasoning included).
        timeout: seconds to wait for a response, or between two streamed chunks (connect: 10 s).
        max_retries: retries of the openai SDK for connection errors, 408/409/429 and 5xx.
        streaming: make ``invoke``/``ainvoke`` use the streaming API under the hood.
        **kwargs: any other ``ChatOpenAI`` argument (``extra_body`` is merged, not replaced).

    Example:
        >>> model = make_chat_model(thinking=False, max_tokens=256)  # doctest: +SKIP
        >>> model.invoke("1+1=?").content                           # doctest: +SKIP
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
    if streaming:  # passing streaming=False explicitly would make .stream() fall back to invoke
        kwargs["streaming"] = True
    endpoint = endpoint or resolve_endpoint()
    default_temperature, default_top_p = RECOMMENDED_SAMPLING[thinking is not False]
    return ReasoningChatOpenAI(
        model=endpoint.model,
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        temperature=default_temperature if temperature is None else temperature,
        top_p=default_top_p if top_p is None else top_p,
        max_tokens=max_tokens,
        timeout=httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT_S)),
        max_retries=max_retries,
        stream_usage=True,
        # httpx's read timeout already bounds the gap between chunks (vLLM sends no keep-alives);
        # langchain's extra per-chunk timer would cost a task per token.
        stream_chunk_timeout=kwargs.pop("stream_chunk_timeout", None),
        extra_body=thinking_extra_body(thinking, kwargs.pop("extra_body", None)),
        **kwargs,
    )
