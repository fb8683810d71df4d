"""Replies to requests with tools or a structured-output constraint: what the model writes, and how
the server reads it back (as vLLM 0.32 does, transcripts `hermes-qwen3-*`).

What the model writes (the content part; with thinking on, free reasoning comes first and the
content follows `</think>` directly, as vLLM applies a grammar only after `</think>`):
- a constraint (`response_format`, `structured_outputs`): `guided.constrained_text`;
- `tool_choice` named: the arguments JSON only (vLLM guides it with the tool's parameters schema);
- `tool_choice` auto/required, no constraint: the calls `tool_calls.plan_tool_calls` decides on, as
  Hermes text (`hermes_text`; `malformed_hermes_text` under the `--tool-call-error-rate` fault); no
  call planned: `tool_result_answer` after a tool result, otherwise the usual simulated answer.
It is then cut at `max_tokens` (`finish_reason` "length"), token for token like any reply.

How the server reads it (`ReadMode`): "text" as is; "tools" through the Hermes parser (hermes.py),
for auto/required with the parser on, whatever the model wrote (a constraint included);
"named": the content is the named tool's arguments (`content` "", `finish_reason` as the engine's).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Literal

import orjson

from helpers.sim.guided import Constraint, constrained_text
from helpers.sim.hermes import (
    HermesStream,
    ParsedCall,
    arguments_delta,
    new_tool_call_id,
    output_tokens,
    parse_tool_calls,
    tool_call_delta,
)
from helpers.sim.reasoning import SKIP, split_message, stream_fields
from helpers.sim.text import CONTENT, EOS, THINK_END, Reply, generate_reply
from helpers.sim.tokens import message_text
from helpers.sim.tool_calls import (
    arguments_for,
    hermes_text,
    malformed_hermes_text,
    plan_tool_calls,
    tool_result_answer,
)
from helpers.sim.tool_request import ToolRequest

ReadMode = Literal["text", "tools", "named"]
PLAN_LIMIT = 1 << 20  # tokens: "no limit" when planning the thinking part


@dataclass(frozen=True)
class ToolPlan:
    """How the server reads the reply back, and whether the tool-call fault was applied."""

    mode: ReadMode
    named: str | None = None
    parallel: bool = True
    malformed: bool = False


def read_mode(tools: ToolRequest | None, tool_call_parser: str | None) -> ToolPlan:
    if tools is None or tools.choice == "none" or not tool_call_parser:
        return ToolPlan("text")
    if tools.choice == "named":
        return ToolPlan("named", named=tools.named, parallel=tools.parallel)
    return ToolPlan("tools", parallel=tools.parallel)


def plan_shaped_reply(
    messages: list[dict],
    *,
    tools: ToolRequest | None,
    constraint: Constraint | None,
    plan: ToolPlan,
    malformed: bool,
    seed: int | None,
    temperature: float | None,
    max_tokens: int,
    enable_thinking: bool,
    think_tokens_mean: int,
    answer_tokens_mean: int,
    reasoning_parser: str,
) -> tuple[Reply, ToolPlan] | None:
    """The reply for a tools/constraint request, or None when the usual text reply applies.

    A grammar (a constraint, a named tool choice) waits for ``</think>`` only behind a reasoning
    parser, as in vLLM; with ``reasoning_parser`` "none" it binds from the first token, so a
    thinking model writes no reasoning block.
    """
    rng = random.Random(_seed(messages, seed, temperature))
    prompt_text = _last_user_text(messages)
    text: str | None = None
    free_text = False
    applied_fault = False
    if plan.mode == "named":
        function = next(f for f in tools.functions if f["name"] == plan.named)
        text = _named_arguments(function, prompt_text, rng)
    elif constraint is not None:
        text = constrained_text(constraint, prompt_text=prompt_text, rng=rng)
    elif plan.mode == "tools":
        calls = plan_tool_calls(messages, list(tools.tools), tools.choice_value, tools.parallel, rng)
        if calls:
            applied_fault = malformed
            text = malformed_hermes_text(calls, rng) if malformed else hermes_text(calls)
        else:
            text, free_text = tool_result_answer(messages), True
    if text is None:
        return None
    base = generate_reply(
        messages,
        seed=seed,
        temperature=temperature,
        max_tokens=PLAN_LIMIT,
        enable_thinking=enable_thinking,
        think_tokens_mean=think_tokens_mean,
        answer_tokens_mean=answer_tokens_mean,
    )
    tokens: list[str] = []
    kinds: list[int] = []
    grammar_from_start = reasoning_parser == "none" and (constraint is not None or plan.mode == "named")
    if enable_thinking and not grammar_from_start:
        end = base.kinds.index(THINK_END) + 1
        tokens, kinds = list(base.tokens[:end]), list(base.kinds[:end])
        if free_text:
            tokens.append("\n\n")
            kinds.append(CONTENT)
    pieces = output_tokens(text)
    tokens += [*pieces, ""]
    kinds += [CONTENT] * len(pieces) + [EOS]
    finish_reason = "stop"
    if len(tokens) > max_tokens:
        del tokens[max_tokens:], kinds[max_tokens:]
        finish_reason = "length"
    reply = Reply(tokens, kinds, finish_reason, None, enable_thinking)
    return reply, ToolPlan(plan.mode, plan.named, plan.parallel, applied_fault)


def _named_arguments(function: dict, prompt_text: str, rng: random.Random) -> str:
    arguments = arguments_for(function.get("parameters") or {"type": "object"}, prompt_text, rng)
    return json.dumps(arguments, ensure_ascii=False)


def _seed(messages: list[dict], seed: int | None, temperature: float | None) -> int:
    if temperature == 0:
        seed = None
    material = orjson.dumps(["shaped", messages, seed, temperature], option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


@dataclass
class Message:
    """The non-streamed message fields of a reply."""

    reasoning: str | None
    content: str | None
    tool_calls: list[dict] | None
    finish_reason: str


def read_message(reply: Reply, plan: ToolPlan, reasoning_parser: str) -> Message:
    reasoning, content = split_message(reply, reasoning_parser)
    if plan.mode == "named":
        call = ParsedCall(plan.named, content or "")
        return Message(reasoning, "", [call.as_message_entry()], reply.finish_reason)
    if plan.mode == "tools":
        parsed_content, calls = parse_tool_calls(content or "", parallel=plan.parallel)
        if calls:
            return Message(reasoning, parsed_content, [c.as_message_entry() for c in calls], "tool_calls")
    return Message(reasoning, content, None, reply.finish_reason)


def stream_deltas(
    reply: Reply, plan: ToolPlan, reasoning_parser: str, reasoning_field: str
) -> list[list[dict]]:
    """The deltas each token sends when streamed (an empty list: none)."""
    fields = stream_fields(reply, reasoning_parser, reasoning_field)
    hermes = HermesStream()
    named_started = False
    deltas: list[list[dict]] = []
    for token, kind, field in zip(reply.tokens, reply.kinds, fields, strict=True):
        if field is SKIP or kind == EOS:
            deltas.append([])
        elif field != "content" or plan.mode == "text":
            deltas.append([{field: token}] if token or field != "content" else [])
        elif plan.mode == "named":
            here = []
            if not named_started:
                named_started = True
                here.append(
                    tool_call_delta(
                        {
                            "id": new_tool_call_id(),
                            "type": "function",
                            "index": 0,
                            "function": {"name": plan.named},
                        }
                    )
                )
            if token:
                here.append(arguments_delta(0, token))
            deltas.append(here)
        else:
            delta = hermes.feed(token)
            deltas.append([delta] if delta is not None else [])
    return deltas


def stream_finish_reason(reply: Reply, plan: ToolPlan, deltas: list[list[dict]]) -> str:
    """vLLM's streamed `finish_reason`: "tool_calls" when calls were streamed and the model stopped."""
    streamed = any("tool_calls" in d for token in deltas for d in token)
    if plan.mode == "tools" and streamed and reply.finish_reason == "stop":
        return "tool_calls"
    return reply.finish_reason
