"""Where the reasoning goes, per `--reasoning-parser`, as vLLM 0.32 returns it.

Observed in the vLLM 0.32 transcripts (tests/fixtures/vllm-0.32/):
- `qwen3`: `<think>`/`</think>` are stripped; reasoning goes to the reasoning field, the answer
  to `content`. With `enable_thinking: false` everything is `content`. A `max_tokens` cut before
  `</think>` leaves `content` null. Streamed deltas that carry no text are not sent.
  `reasoning_tokens` counts the tokens before `</think>` (non-streamed) but only the tokens that
  produced a reasoning delta (streamed), so the two differ as they do in the transcripts.
- `deepseek_r1`: same split, but with `enable_thinking: false` the non-streamed reply puts the
  whole answer in the reasoning field (no `</think>` in the output) while the stream sends it as
  `content` (the prompt already ends the thinking); `reasoning_tokens` is always 0.
- `none`: everything, tags included, is `content`; `completion_tokens_details` is null.
"""

from __future__ import annotations

from helpers.sim.text import REASONING, THINK_END, THINK_START, Reply

PARSERS = ("qwen3", "deepseek_r1", "none")
SKIP = None  # a token that sends no streamed delta


def normalise_parser(parser: str | None) -> str:
    """'qwen3', 'deepseek_r1' or 'none' (None and '' mean 'none')."""
    name = (parser or "none").lower()
    if name not in PARSERS:
        raise ValueError(f"unknown reasoning parser {parser!r}; choose one of {PARSERS}")
    return name


def split_message(reply: Reply, parser: str) -> tuple[str | None, str | None]:
    """(reasoning, content) of a non-streamed reply."""
    text = "".join(reply.tokens)
    if parser == "none":
        return None, text
    if parser == "qwen3" and not reply.thinking:
        return None, text
    kinds = reply.kinds
    if THINK_END not in kinds:
        reasoning = "".join(t for t, k in zip(reply.tokens, kinds, strict=True) if k != THINK_START)
        return reasoning or None, None
    end = kinds.index(THINK_END)
    reasoning = "".join(t for t, k in zip(reply.tokens[:end], kinds[:end], strict=True) if k != THINK_START)
    content = "".join(reply.tokens[end + 1 :])
    return reasoning, content or None


def stream_fields(reply: Reply, parser: str, reasoning_field: str) -> list[str | None]:
    """The delta field of each token when streamed ("content", the reasoning field or SKIP)."""
    if parser == "none" or not reply.thinking:
        return ["content"] * len(reply.kinds)
    fields: list[str | None] = []
    for kind in reply.kinds:
        if kind in (THINK_START, THINK_END):
            fields.append(SKIP)
        elif kind == REASONING:
            fields.append(reasoning_field)
        else:
            fields.append("content")
    return fields


def reasoning_tokens(reply: Reply, parser: str, stream: bool) -> int | None:
    """`usage.completion_tokens_details.reasoning_tokens` (None: the details are null)."""
    if parser == "none":
        return None
    if parser == "deepseek_r1" or not reply.thinking:
        return 0
    if stream:
        return sum(1 for kind in reply.kinds if kind == REASONING)
    kinds = reply.kinds
    return kinds.index(THINK_END) if THINK_END in kinds else len(kinds)
