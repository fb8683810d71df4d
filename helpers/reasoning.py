"""Split a Qwen3 reply into its reasoning and its answer, whatever the server sends.

A vLLM server returns Qwen3's thinking in one of three shapes (see the transcripts in
``tests/fixtures/vllm-0.32/``):

* a separate field — ``reasoning`` (vLLM >= 0.16), ``reasoning_content`` (vLLM <= 0.11, SGLang,
  DeepSeek, DashScope), or both (vLLM 0.12–0.15) — when it runs a reasoning parser;
* inline in ``content`` as ``<think>\\n...\\n</think>\\n\\nanswer`` when it runs none;
* nothing at all when thinking is off.

``ReasoningStream`` turns the deltas of one response into ``Parts(reasoning, answer)``, holding back
just enough text to recognise a tag split across chunks; ``split_reasoning`` does the same for a
whole message. Both follow one rule, so streamed and non-streamed calls agree:

1. If the server filled a reasoning field, it ran a parser: the field is the reasoning and
   ``content`` is the answer, untouched.
2. Otherwise an inline block is recognised where Qwen3 writes it — ``<think>`` at the very start of
   ``content`` (after optional whitespace). The text up to ``</think>`` is reasoning; the rest, with
   its leading whitespace removed, is the answer. A reply cut (``max_tokens``) before ``</think>``
   is all reasoning, as vLLM's own parsers report it.
3. Content that does not open with ``<think>`` is an answer, even if a stray ``</think>`` shows up
   later: guessing would risk moving an answer into the reasoning.
4. If the request turned thinking off (``thinking=False``), everything is answer: Qwen3's chat
   template has already closed the think block in the prompt, so the model cannot reason. (vLLM's
   ``deepseek_r1`` parser does not know that and files a non-streamed reply as reasoning with
   ``content: null``: see ``deepseek-r1-parser-chat-no-thinking.http``.)

No dependencies: this module is pure string handling.

Example:
    >>> split_reasoning(None, "<think>\\nHi there.\\n</think>\\n\\nHello!")
    Parts(reasoning='\\nHi there.\\n', answer='Hello!')
    >>> stream = ReasoningStream()
    >>> for piece in ["<thi", "nk>why</th", "ink>\\n\\nOK"]:
    ...     print(stream.feed(None, piece))
    Parts(reasoning='', answer='')
    Parts(reasoning='why', answer='')
    Parts(reasoning='', answer='OK')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
REASONING_FIELDS = ("reasoning_content", "reasoning")
REASONING_KEY = "reasoning_content"  # where LangChain messages keep it: additional_kwargs[REASONING_KEY]

_Mode = Literal["start", "thinking", "after_think", "answer"]


@dataclass(frozen=True)
class Parts:
    """Reasoning text and answer text decoded from one delta (or one whole message)."""

    reasoning: str = ""
    answer: str = ""

    def __add__(self, other: Parts) -> Parts:
        return Parts(self.reasoning + other.reasoning, self.answer + other.answer)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.answer)


def reasoning_field(message: Mapping[str, Any]) -> str | None:
    """The reasoning a parser put in a message or delta dict: ``reasoning_content``, else ``reasoning``.

    >>> reasoning_field({"content": "4", "reasoning": "2+2"})
    '2+2'
    >>> reasoning_field({"content": "4", "reasoning": None}) is None
    True
    """
    for name in REASONING_FIELDS:
        value = message.get(name)
        if value is not None:
            return value
    return None


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningStream:
    """Decode the deltas of ONE response; create one per stream (the state is per response).

    ``feed(reasoning, content)`` takes a delta's reasoning field (or None) and its content (or None)
    and returns the ``Parts`` that are certain so far; ``close()`` returns what was held back.
    ``thinking`` is what the request asked for: False makes everything answer (rule 4).
    """

    def __init__(self, thinking: bool | None = None) -> None:
        self._mode: _Mode = "start"
        self._thinking_off = thinking is False
        self._pending = ""
        self.parser_seen = False

    def feed(self, reasoning: str | None, content: str | None) -> Parts:
        """Decode one delta. Text that may be part of a split tag is held until the next call."""
        if self._thinking_off:
            return Parts(answer=(reasoning or "") + (content or ""))
        parts = Parts()
        if reasoning and not self.parser_seen:
            self.parser_seen = True
            parts = self.close()
        if self.parser_seen:
            return parts + Parts(reasoning or "", content or "")
        return parts + self._feed_inline(content or "")

    def close(self) -> Parts:
        """Flush held-back text at the end of the response."""
        pending, self._pending = self._pending, ""
        if self._mode == "thinking":
            return Parts(reasoning=pending)
        if self._mode == "start" and pending.strip():
            self._mode = "answer"
            return Parts(answer=pending)
        return Parts()

    def _feed_inline(self, text: str) -> Parts:
        self._pending += text
        out = Parts()
        while self._pending:
            step = self._step()
            if step is None:
                break
            out = out + step
        return out

    def _step(self) -> Parts | None:
        """Consume some pending text; None means: wait for more."""
        pending = self._pending
        if self._mode == "start":
            stripped = pending.lstrip()
            if stripped.startswith(THINK_OPEN):
                self._mode, self._pending = "thinking", stripped[len(THINK_OPEN) :]
                return Parts()
            if not stripped or THINK_OPEN.startswith(stripped):
                return None
            self._mode = "answer"
            return Parts()
        if self._mode == "thinking":
            end = pending.find(THINK_CLOSE)
            if end >= 0:
                self._mode, self._pending = "after_think", pending[end + len(THINK_CLOSE) :]
                return Parts(reasoning=pending[:end])
            keep = _partial_tag_suffix(pending, THINK_CLOSE)
            self._pending = pending[len(pending) - keep :] if keep else ""
            safe = pending[: len(pending) - keep]
            return Parts(reasoning=safe) if safe else None
        if self._mode == "after_think":
            stripped = pending.lstrip()
            if not stripped:
                self._pending = ""
                return None
            self._mode = "answer"
            self._pending = stripped
            return Parts()
        self._pending = ""
        return Parts(answer=pending)


def split_reasoning(reasoning: str | None, content: str | None, *, thinking: bool | None = None) -> Parts:
    """Decode a whole message: its reasoning field (or None) and its content (or None).

    >>> split_reasoning("2+2 is 4", "4")
    Parts(reasoning='2+2 is 4', answer='4')
    >>> split_reasoning(None, "<think>\\nstill thinking")
    Parts(reasoning='\\nstill thinking', answer='')
    """
    stream = ReasoningStream(thinking)
    return stream.feed(reasoning, content) + stream.close()


def split_message(message: Mapping[str, Any], *, thinking: bool | None = None) -> Parts:
    """Decode a message dict from ``choices[i].message`` of a chat completion."""
    return split_reasoning(reasoning_field(message), message.get("content"), thinking=thinking)
