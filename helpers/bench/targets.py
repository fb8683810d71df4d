"""The LangChain request path: what users call, timed the same way as the lean path.

A target turns one prompt into one :class:`RequestRecord`; load generators only call
``request(prompt)`` (sync) or ``arequest(prompt)`` (async), so any chat model can be measured.

Example:
    >>> from helpers.chat import make_chat_model
    >>> target = LangChainTarget(make_chat_model(thinking=False), stream=True)  # doctest: +SKIP
    >>> target.request("你是谁?").ttft_s                                          # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessageChunk

from helpers.bench.records import RequestRecord, tokens_from_chunks
from helpers.reasoning import ReasoningStream

REASONING_KEY = "reasoning_content"


class AsyncTarget(Protocol):
    """Anything with ``async arequest(prompt) -> RequestRecord`` (LeanClient, LangChainTarget)."""

    path: str

    async def arequest(self, prompt: str) -> RequestRecord: ...


class SyncTarget(Protocol):
    """Anything with ``request(prompt) -> RequestRecord`` (LangChainTarget)."""

    path: str

    def request(self, prompt: str) -> RequestRecord: ...


class LangChainTarget:
    """Time a LangChain chat model: ``invoke``/``ainvoke`` (plain latency) or ``stream``/``astream``.

    Streamed: TTFT is the first chunk, ITL the gaps between chunks (the final usage-only chunk is
    not a token), the first answer token is the first chunk whose content is answer rather than
    reasoning (``additional_kwargs["reasoning_content"]`` or an inline ``<think>`` block). Output
    tokens come from ``usage_metadata`` (``make_chat_model`` asks for it on streams); a stream
    without it counts its chunks after the first and says so (``tokens_from_chunks``).
    """

    path = "langchain"

    def __init__(self, model: BaseChatModel, *, stream: bool = False) -> None:
        self.model = model
        self.stream = stream

    def request(self, prompt: str) -> RequestRecord:
        """One synchronous call."""
        start = time.perf_counter()
        try:
            if self.stream:
                timer = _StreamTimer(start)
                for chunk in self.model.stream(prompt):
                    timer.observe(chunk)
                return timer.record()
            return _from_message(self.model.invoke(prompt), start)
        except Exception as error:  # every failure becomes a counted record
            return _failed(start, error, self.stream)

    async def arequest(self, prompt: str) -> RequestRecord:
        """One asynchronous call."""
        start = time.perf_counter()
        try:
            if self.stream:
                timer = _StreamTimer(start)
                async for chunk in self.model.astream(prompt):
                    timer.observe(chunk)
                return timer.record()
            return _from_message(await self.model.ainvoke(prompt), start)
        except Exception as error:  # every failure becomes a counted record
            return _failed(start, error, self.stream)


class _StreamTimer:
    def __init__(self, start: float) -> None:
        self.start = start
        self.last = start
        self.ttft: float | None = None
        self.ttfa: float | None = None
        self.itl: list[float] = []
        self.usage: dict[str, Any] = {}
        self.decoder: ReasoningStream | None = ReasoningStream()

    def observe(self, chunk: BaseMessageChunk) -> None:
        now = time.perf_counter()
        usage = getattr(chunk, "usage_metadata", None)
        reasoning = chunk.additional_kwargs.get(REASONING_KEY)
        if usage:
            self.usage = usage
        if (usage or getattr(chunk, "chunk_position", None) == "last") and not (chunk.content or reasoning):
            return  # the usage-only event and LangChain's closing chunk carry no token
        if self.ttft is None:
            self.ttft = now - self.start
        else:
            self.itl.append(now - self.last)
        self.last = now
        if self.decoder is not None:
            content = chunk.content if isinstance(chunk.content, str) else str(chunk.text)
            if self.decoder.feed(reasoning, content).answer:
                self.ttfa = now - self.start
                self.decoder = None

    def record(self) -> RequestRecord:
        if self.ttft is None:
            return RequestRecord(
                0,
                self.start,
                time.perf_counter(),
                ok=False,
                error="stream carried no chunks",
                streamed=True,
            )
        return RequestRecord(
            index=0,
            start_s=self.start,
            end_s=self.last,
            streamed=True,
            ttft_s=self.ttft,
            ttfa_s=self.ttfa,
            itl_s=self.itl,
            chunks=len(self.itl) + 1,
            **(_usage_fields(self.usage) if self.usage else tokens_from_chunks(len(self.itl) + 1)),
        )


def _from_message(message: AIMessage | AIMessageChunk, start: float) -> RequestRecord:
    end = time.perf_counter()
    return RequestRecord(index=0, start_s=start, end_s=end, **_usage_fields(message.usage_metadata or {}))


def _usage_fields(usage: dict[str, Any]) -> dict[str, int | None]:
    details = usage.get("output_token_details") or {}
    return {
        "prompt_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "reasoning_tokens": details.get("reasoning"),
    }


def _failed(start: float, error: BaseException, streamed: bool) -> RequestRecord:
    return RequestRecord(
        0,
        start,
        time.perf_counter(),
        ok=False,
        error=f"{type(error).__name__}: {error}",
        streamed=streamed,
    )
