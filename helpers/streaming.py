"""Stream one prompt as ``("reasoning" | "answer", text)`` events, timed, and shown live.

``astream_parts(model, prompt)`` works with any LangChain chat model and any server variant: it
reads ``additional_kwargs["reasoning_content"]`` when the model fills it (``helpers.chat``), and
splits an inline ``<think>`` block itself when it does not (plain ``ChatOpenAI`` on a vLLM without
a reasoning parser). ``stream_with_timings`` collects the text and the timings users care about;
``show_stream`` also displays it live: thinking dimmed, then the answer, updated in place in
Jupyter, written as it comes in a terminal.

Timings (``StreamTimings``), all from the moment the request is sent:

* ``ttft_s`` — time to the first streamed chunk, what ``vllm bench serve`` calls TTFT (every chunk
  with a delta counts, empty ones too: a byte-level model's tokens often carry no whole character
  yet, and vLLM still sends one chunk per token);
* ``first_answer_s`` — time to the first answer token: what a user waits with thinking on;
* ``tokens_per_s`` — generated tokens (``usage.completion_tokens``; the chunks after vLLM's role
  chunk if the server sent no usage) per second after the first one: the decode speed;
* ``total_s`` — until the stream ended.

A reply cut by ``max_tokens`` (``finish_reason`` "length") is not complete: ``StreamResult``
says so (``truncated``, ``finish_reason``), its timings end with "cut by max_tokens", and
``show_stream`` ends the live view with a note saying what to do.

Example (in a notebook cell):
    >>> from helpers.chat import make_chat_model
    >>> from helpers.streaming import astream_parts, show_stream
    >>> model = make_chat_model(thinking=True)                     # doctest: +SKIP
    >>> async for event in astream_parts(model, "你是谁?"):        # doctest: +SKIP
    ...     print(event.kind, event.text)
    >>> result = await show_stream(model, "你是谁?")               # doctest: +SKIP
    >>> print(result.timings)                                      # doctest: +SKIP
    TTFT 0.031 s, first answer token 0.412 s, 71.3 tokens/s, total 1.02 s (72 tokens)
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from langchain_core.language_models import BaseChatModel, LanguageModelInput

from helpers.loop import in_notebook
from helpers.reasoning import REASONING_KEY, ReasoningStream

EventKind = Literal["reasoning", "answer"]


@dataclass(frozen=True)
class StreamEvent:
    """A piece of streamed text and what it is."""

    kind: EventKind
    text: str


@dataclass
class StreamTimings:
    """Filled in while a stream runs; times in seconds from the request (``time.perf_counter``)."""

    started: float = field(default_factory=time.perf_counter)
    ttft_s: float | None = None
    first_answer_s: float | None = None
    total_s: float | None = None
    chunks: int = 0
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None

    def record_chunk(self) -> None:
        """A streamed chunk with a delta arrived, its text empty or not."""
        self.chunks += 1
        if self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.started

    def record(self, event: StreamEvent) -> None:
        """A piece of text was decoded: the first answer text sets ``first_answer_s``."""
        elapsed = time.perf_counter() - self.started
        if self.ttft_s is None:
            self.ttft_s = elapsed
        if event.kind == "answer" and self.first_answer_s is None:
            self.first_answer_s = elapsed

    def finish(self, usage: dict[str, Any] | None = None, finish_reason: str | None = None) -> None:
        self.total_s = time.perf_counter() - self.started
        self.finish_reason = finish_reason
        if usage:
            self.completion_tokens = usage.get("output_tokens")
            details = usage.get("output_token_details") or {}
            self.reasoning_tokens = details.get("reasoning")

    @property
    def tokens(self) -> int:
        """Generated tokens: from usage when the server sent it, else the chunks after the role chunk."""
        return self.completion_tokens if self.completion_tokens is not None else max(self.chunks - 1, 0)

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: tokens after the first, per second after the first token."""
        if self.ttft_s is None or self.total_s is None or self.tokens < 2:
            return None
        decode_s = self.total_s - self.ttft_s
        return (self.tokens - 1) / decode_s if decode_s > 0 else None

    def __str__(self) -> str:
        def secs(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f} s"

        rate = "n/a" if self.tokens_per_s is None else f"{self.tokens_per_s:.1f}"
        cut = ", cut by max_tokens" if self.finish_reason == "length" else ""
        return (
            f"TTFT {secs(self.ttft_s)}, first answer token {secs(self.first_answer_s)}, "
            f"{rate} tokens/s, total {secs(self.total_s)} ({self.tokens} tokens){cut}"
        )


@dataclass
class StreamResult:
    """What a finished stream said, how fast, and how it ended (``finish_reason``)."""

    reasoning: str
    answer: str
    timings: StreamTimings

    @property
    def finish_reason(self) -> str | None:
        """The server's ``finish_reason`` ("stop", "length", ...), None if the stream sent none."""
        return self.timings.finish_reason

    @property
    def truncated(self) -> bool:
        """True if ``max_tokens`` cut the reply: ``answer`` is incomplete (or empty)."""
        return self.finish_reason == "length"


async def astream_parts(
    model: BaseChatModel,
    prompt_or_messages: LanguageModelInput,
    *,
    timings: StreamTimings | None = None,
    **kwargs: Any,
) -> AsyncIterator[StreamEvent]:
    """Yield ``StreamEvent("reasoning" | "answer", text)`` for one prompt; empty texts are skipped.

    Pass a ``StreamTimings()`` to have it filled in (``finish`` is called when the stream ends,
    with the usage and the ``finish_reason`` the server sent). ``kwargs`` go to
    ``model.astream`` (e.g. ``config=``).
    """
    decoder = ReasoningStream()
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    async for chunk in model.astream(prompt_or_messages, **kwargs):
        if getattr(chunk, "usage_metadata", None):
            usage = dict(chunk.usage_metadata)
        if timings is not None and _carries_a_token(chunk):
            timings.record_chunk()
        finish_reason = (getattr(chunk, "response_metadata", None) or {}).get(
            "finish_reason"
        ) or finish_reason
        content = chunk.content if isinstance(chunk.content, str) else ""
        parts = decoder.feed(chunk.additional_kwargs.get(REASONING_KEY), content)
        for event in _events(parts.reasoning, parts.answer):
            if timings is not None:
                timings.record(event)
            yield event
    tail = decoder.close()
    for event in _events(tail.reasoning, tail.answer):
        if timings is not None:
            timings.record(event)
        yield event
    if timings is not None:
        timings.finish(usage, finish_reason)


def _carries_a_token(chunk: Any) -> bool:
    """A chunk of the stream proper: not the usage-only event, not LangChain's empty closing chunk."""
    empty = not chunk.content and not chunk.additional_kwargs.get(REASONING_KEY)
    closing = getattr(chunk, "usage_metadata", None) or getattr(chunk, "chunk_position", None) == "last"
    return not (empty and closing)


def _events(reasoning: str, answer: str) -> list[StreamEvent]:
    events = [StreamEvent("reasoning", reasoning)] if reasoning else []
    return [*events, StreamEvent("answer", answer)] if answer else events


async def stream_with_timings(
    model: BaseChatModel,
    prompt_or_messages: LanguageModelInput,
    *,
    on_event: Callable[[StreamEvent], None] | None = None,
    **kwargs: Any,
) -> StreamResult:
    """Run one stream to the end; return its reasoning, answer and timings.

    ``on_event`` is called for every event as it arrives (e.g. to display it).
    """
    timings = StreamTimings()
    reasoning: list[str] = []
    answer: list[str] = []
    async for event in astream_parts(model, prompt_or_messages, timings=timings, **kwargs):
        (reasoning if event.kind == "reasoning" else answer).append(event.text)
        if on_event is not None:
            on_event(event)
    return StreamResult("".join(reasoning), "".join(answer), timings)


class LiveDisplay:
    """Show a stream as it arrives: HTML updated in place in Jupyter, plain text in a terminal.

    Thinking is dimmed (grey italics in HTML; after ``[thinking]``, dim on a TTY, in text), then
    the answer.
    """

    def __init__(
        self, *, notebook: bool | None = None, out: TextIO | None = None, interval_s: float = 0.1
    ) -> None:
        self.notebook = in_notebook() if notebook is None else notebook
        self.out = out or sys.stdout
        self.interval_s = interval_s
        self.reasoning = ""
        self.answer = ""
        self.cut_note: str | None = None
        self._handle: Any = None
        self._last_update = 0.0
        self._text_state: EventKind | None = None

    def cut(self) -> None:
        """Mark the reply as cut by ``max_tokens``; the final view ends with a note saying so."""
        where = (
            "the answer above is incomplete"
            if self.answer.strip()
            else "no answer was written yet (the cut fell in the thinking)"
        )
        self.cut_note = (
            f"{where}: raise max_tokens, or turn thinking off (make_chat_model(thinking=False)) "
            "so that the tokens go to the answer"
        )

    def __call__(self, event: StreamEvent) -> None:
        if event.kind == "reasoning":
            self.reasoning += event.text
        else:
            self.answer += event.text
        if self.notebook:
            now = time.perf_counter()
            if now - self._last_update >= self.interval_s:
                self._last_update = now
                self._show_html()
        else:
            self._write_text(event)

    def close(self) -> None:
        """Final update (the notebook view shows everything; the terminal gets a newline)."""
        if self.notebook:
            self._show_html()
            return
        if self._text_state is not None:
            self.out.write("\n")
        if self.cut_note is not None:
            self.out.write(f"[cut by max_tokens] {self.cut_note}\n")
        self.out.flush()

    def html(self) -> str:
        thinking = (
            '<div style="color:#888;font-style:italic;white-space:pre-wrap">'
            f"{html.escape(self.reasoning.strip())}</div>"
            if self.reasoning.strip()
            else ""
        )
        answer = f'<div style="white-space:pre-wrap">{html.escape(self.answer)}</div>'
        note = (
            f'<div style="color:#b00020">cut by max_tokens: {html.escape(self.cut_note)}</div>'
            if self.cut_note is not None
            else ""
        )
        return thinking + answer + note

    def _show_html(self) -> None:
        from IPython.display import HTML, display

        if self._handle is None:
            self._handle = display(HTML(self.html()), display_id=True)
        else:
            self._handle.update(HTML(self.html()))

    def _write_text(self, event: StreamEvent) -> None:
        if event.kind != self._text_state:
            if self._text_state is not None:
                self.out.write("\n")
            self.out.write("[thinking] " if event.kind == "reasoning" else "[answer] ")
            self._text_state = event.kind
        dim = event.kind == "reasoning" and getattr(self.out, "isatty", lambda: False)()
        self.out.write(f"\x1b[2m{event.text}\x1b[0m" if dim else event.text)
        self.out.flush()


def live_display(*, notebook: bool | None = None, out: TextIO | None = None) -> LiveDisplay:
    """A ``LiveDisplay`` to pass as ``on_event`` to ``stream_with_timings`` (then call ``close``)."""
    return LiveDisplay(notebook=notebook, out=out)


async def show_stream(
    model: BaseChatModel,
    prompt_or_messages: LanguageModelInput,
    *,
    notebook: bool | None = None,
    out: TextIO | None = None,
    **kwargs: Any,
) -> StreamResult:
    """Stream one prompt, displaying it live; return the final text and the timings.

    The returned ``StreamResult`` lets a notebook print the answer and timings in a later,
    deterministic line, whatever the live view showed. A reply cut by ``max_tokens`` ends the
    view with a note saying so and what to do (``result.truncated`` is True).
    """
    view = live_display(notebook=notebook, out=out)
    try:
        result = await stream_with_timings(model, prompt_or_messages, on_event=view, **kwargs)
        if result.truncated:
            view.cut()
        return result
    finally:
        view.close()
