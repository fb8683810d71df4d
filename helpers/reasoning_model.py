"""``ReasoningChatOpenAI``: ``ChatOpenAI`` that keeps Qwen3's reasoning, with one client per event loop.

The trick is a few overrides of hooks ChatOpenAI already has:

* ``_create_chat_result`` (``invoke``, ``batch``, ...) and ``_convert_chunk_to_generation_chunk``
  plus ``_stream``/``_astream`` (a per-stream decoder, ``helpers.reasoning.ReasoningStream``) put
  the reasoning in ``additional_kwargs["reasoning_content"]`` and only the answer in ``content``:
  from the ``reasoning`` field (vLLM >= 0.16), ``reasoning_content`` (older vLLM, SGLang,
  DeepSeek) or an inline ``<think>...</think>`` block (a server without ``--reasoning-parser``);
  with ``thinking=False`` all generated text is answer;
* replies say ``model_provider`` "vllm", so ``reply.content_blocks`` starts with the reasoning
  (``helpers.content_blocks``);
* ``root_async_client`` is one openai client per event loop (``_LoopLocal``): plain ``ChatOpenAI``
  shares one process-wide client whose pooled connections belong to the first loop
  (``RuntimeError: Event loop is closed``); the pools are ``helpers.loop_clients``';
* ``async_client``/``client`` return the server's JSON as dicts (``helpers.dict_replies``);
* tool arguments that are JSON but no object become ``invalid_tool_calls``, a structured reply
  filed as reasoning (``deepseek_r1`` with thinking off) is parsed from the answer, and errors are
  explained (``helpers.reply_repairs``).

Why not ``langchain_deepseek.ChatDeepSeek``: it does not split an inline ``<think>`` block, and it
builds one async client per model, which still breaks across event loops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any, Self

import openai
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import model_validator

from helpers.content_blocks import MODEL_PROVIDER
from helpers.dict_replies import DictCompletions, dict_completions
from helpers.loop_clients import running_loop_clients
from helpers.reasoning import REASONING_KEY, ReasoningStream, reasoning_field, split_message
from helpers.reply_repairs import errors_explained, pop_calls_without_object_arguments, structured_answer

_response_format: ContextVar[object] = ContextVar("response_format", default=None)
"""The ``response_format`` of the call being made, for ``_create_chat_result`` (which is not given it)."""


class _LoopLocal:
    """Attribute proxy to the running event loop's copy of an ``openai.AsyncOpenAI`` (the template
    itself outside a loop); ChatOpenAI resolves ``self.root_async_client.<...>`` inside its
    coroutines, so the loop that runs the call picks the client."""

    def __init__(self, template: openai.AsyncOpenAI) -> None:
        self._template = template

    def current(self) -> openai.AsyncOpenAI:
        clients = running_loop_clients()
        if clients is None:
            return self._template
        client = clients.sdk_clients.get(self)
        if client is None:
            client = self._template.copy(http_client=clients.shared_pool(self._template.timeout))
            clients.sdk_clients[self] = client
        return client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes before __init__ ran; private attributes
            raise AttributeError(name)
        return getattr(self.current(), name)

    def __repr__(self) -> str:
        return f"<one {type(self._template).__name__} per event loop>"


class ReasoningChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` that keeps Qwen3's reasoning and gives each event loop its own client.

    Prefer ``helpers.chat.make_chat_model``; construct directly with ChatOpenAI's arguments if you need to.
    """

    @model_validator(mode="after")
    def _one_async_client_per_loop(self) -> Self:
        """One async client per event loop (unless the user gave one); replies read as dicts."""
        if self.http_async_client is None and not isinstance(self.root_async_client, _LoopLocal):
            self.root_async_client = _LoopLocal(self.root_async_client)
        if self.root_async_client is not None and not isinstance(self.async_client, DictCompletions):
            root_async = self.root_async_client
            current = root_async.current if isinstance(root_async, _LoopLocal) else lambda: root_async
            self.async_client = dict_completions(current)
        if self.root_client is not None and not isinstance(self.client, DictCompletions):
            root = self.root_client
            self.client = dict_completions(lambda: root, sync=True)
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
        not_objects = pop_calls_without_object_arguments(response_dict)
        result = super()._create_chat_result(response_dict if not_objects else response, generation_info)
        for index, (generation, choice) in enumerate(
            zip(result.generations, response_dict["choices"], strict=True)
        ):
            parts = split_message(choice["message"], thinking=self.thinking)
            message = generation.message
            message.content = parts.answer
            message.additional_kwargs[REASONING_KEY] = parts.reasoning
            message.response_metadata["model_provider"] = MODEL_PROVIDER
            message.invalid_tool_calls.extend(not_objects.get(index, []))
            if index == 0:  # ChatOpenAI reads the SDK's ``parsed`` from the first choice only
                parsed = structured_answer(_response_format.get(), response, parts.answer)
                if parsed is not None:
                    message.additional_kwargs["parsed"] = parsed
        return result

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        token = _response_format.set(kwargs.get("response_format"))
        try:
            with errors_explained():
                return super()._generate(*args, **kwargs)
        finally:
            _response_format.reset(token)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        token = _response_format.set(kwargs.get("response_format"))
        try:
            with errors_explained():
                return await super()._agenerate(*args, **kwargs)
        finally:
            _response_format.reset(token)

    def _convert_chunk_to_generation_chunk(
        self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
    ) -> ChatGenerationChunk | None:
        generation_chunk = super()._convert_chunk_to_generation_chunk(
            chunk, default_chunk_class, base_generation_info
        )
        if generation_chunk is None:
            return None
        generation_chunk.message.response_metadata["model_provider"] = MODEL_PROVIDER
        choices = chunk.get("choices") or chunk.get("chunk", {}).get("choices") or []
        if choices and choices[0].get("delta"):
            raw = reasoning_field(choices[0]["delta"])
            if raw is not None:  # the raw field; the per-stream decoder in _stream/_astream finalises it
                generation_chunk.message.additional_kwargs[REASONING_KEY] = raw
        return generation_chunk

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        decoder = ReasoningStream(self.thinking)
        last: ChatGenerationChunk | None = None
        with errors_explained():
            for chunk in super()._stream(*args, **kwargs):
                last = _decode_chunk(decoder, chunk)
                yield last
        if last is not None:
            yield _tail_chunk(decoder)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        decoder = ReasoningStream(self.thinking)
        last: ChatGenerationChunk | None = None
        with errors_explained():
            async for chunk in super()._astream(*args, **kwargs):
                last = _decode_chunk(decoder, chunk)
                yield last
        if last is not None:
            yield _tail_chunk(decoder)


def _decode_chunk(decoder: ReasoningStream, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
    """Rewrite one streamed chunk: answer in ``content``, reasoning in ``additional_kwargs`` (every
    chunk, tool-call chunks too; content that is not text is left as it is)."""
    message = chunk.message
    content = message.content if isinstance(message.content, str) else None
    parts = decoder.feed(message.additional_kwargs.get(REASONING_KEY), content)
    if (chunk.generation_info or {}).get("finish_reason"):
        parts = parts + decoder.close()
    if content is not None:
        message.content = parts.answer
    message.additional_kwargs[REASONING_KEY] = parts.reasoning
    return chunk


def _tail_chunk(decoder: ReasoningStream) -> ChatGenerationChunk:
    """The closing chunk: text the decoder still held, marked ``chunk_position="last"`` (yielded
    here so every chunk has ``reasoning_content``; LangChain's own closing chunk would not)."""
    parts = decoder.close()
    message = AIMessageChunk(
        content=parts.answer,
        additional_kwargs={REASONING_KEY: parts.reasoning},
        response_metadata={"model_provider": MODEL_PROVIDER},
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)
