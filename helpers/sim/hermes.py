"""The server side of `--tool-call-parser hermes`: model text in, `tool_calls` out, as vLLM's
`Hermes2ProToolParser` does it (transcripts `hermes-qwen3-tools-*`).

Qwen3 writes each call as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`; both tags
are single special tokens. The parser applies to whatever the model wrote, tool call or not.

Non-streamed (`parse_tool_calls`): every `<tool_call>` block (the last may be unclosed) must hold a
JSON object with `name` and `arguments`, or the parser gives up and the whole text stays `content`;
otherwise the text before the first block is `content` (null when empty).

Streamed (`HermesStream`): text before the first `<tool_call>` goes out as `content` deltas; in a
block nothing is sent until the name is known, then one chunk `{id, type, index, function: {name}}`,
then the arguments text as it grows, one fragment per token; tags, the JSON around the arguments and
text between blocks send nothing. Like vLLM's streaming parser it cannot take back what it sent: a
malformed block still streams its name and the argument text it got.

Example:
    >>> text = 'Hi\\n<tool_call>\\n{"name": "f", "arguments": {"a": 1}}\\n</tool_call>'
    >>> content, calls = parse_tool_calls(text)
    >>> content, calls[0].name, calls[0].arguments
    ('Hi\\n', 'f', '{"a": 1}')
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from helpers.sim.tokens import count_text_tokens, split_tokens

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
TOOL_PARSERS = ("hermes",)

_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)
_TAGS = re.compile(r"(<tool_call>|</tool_call>)")
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def new_tool_call_id() -> str:
    """`chatcmpl-tool-<16 hex>`, as vLLM's ids."""
    return "chatcmpl-tool-" + os.urandom(8).hex()


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text
    id: str = field(default_factory=new_tool_call_id)

    def as_message_entry(self) -> dict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def output_tokens(text: str) -> list[str]:
    """`text` cut into tokens (tokens.py's rules), `<tool_call>` and `</tool_call>` one token each."""
    pieces: list[str] = []
    for part in _TAGS.split(text):
        if part in (TOOL_CALL_START, TOOL_CALL_END):
            pieces.append(part)
        elif part:
            pieces.extend(split_tokens(part))
    return pieces


def count_output_tokens(text: str) -> int:
    """Token count of model text written with the tool-call tags (one token per tag)."""
    return sum(
        1 if part in (TOOL_CALL_START, TOOL_CALL_END) else count_text_tokens(part)
        for part in _TAGS.split(text)
        if part
    )


def parse_tool_calls(text: str, *, parallel: bool = True) -> tuple[str | None, list[ParsedCall]]:
    """(content, calls) of a whole reply; calls is empty when the parser gave up or found none.

    `parallel=False` keeps only the first call (vLLM's `maybe_filter_parallel_tool_calls`).
    """
    if TOOL_CALL_START not in text:
        return (text or None), []
    calls: list[ParsedCall] = []
    for match in _BLOCK.finditer(text):
        raw = match.group(1) if match.group(1) is not None else match.group(2)
        try:
            payload = json.loads(raw)
            name, arguments = payload["name"], payload["arguments"]
        except (json.JSONDecodeError, TypeError, KeyError):
            return (text or None), []
        if not isinstance(name, str):
            return (text or None), []
        calls.append(ParsedCall(name, json.dumps(arguments, ensure_ascii=False)))
    if not parallel:
        calls = calls[:1]
    content = text[: text.find(TOOL_CALL_START)]
    return (content or None), calls


class HermesStream:
    """Turns the content tokens of a streamed reply into deltas, one token at a time."""

    def __init__(self) -> None:
        self._state = "text"  # "text" (before any call), "call" (inside a block), "after"
        self._block = ""
        self._index = -1
        self._name_sent = False
        self._args_sent = 0

    def feed(self, token: str) -> dict | None:
        """The delta for `token` (None: this token sends nothing)."""
        if token == TOOL_CALL_START and self._state != "call":
            self._state, self._block, self._name_sent, self._args_sent = "call", "", False, 0
            return None
        if self._state == "text":
            return {"content": token} if token else None
        if self._state == "after":
            return None
        if token == TOOL_CALL_END:
            self._state = "after"
            return None
        self._block += token
        head = _CALL_HEAD.match(self._block)
        if head is None:
            return None
        if not self._name_sent:
            self._name_sent = True
            self._index += 1
            name = json.loads(f'"{head.group(1)}"')
            return tool_call_delta(
                {
                    "id": new_tool_call_id(),
                    "type": "function",
                    "index": self._index,
                    "function": {"name": name},
                }
            )
        visible = _complete_prefix(self._block[head.end() :])
        fragment = visible[self._args_sent :]
        if not fragment:
            return None
        self._args_sent = len(visible)
        return arguments_delta(self._index, fragment)


def tool_call_delta(entry: dict) -> dict:
    return {"content": None, "tool_calls": [entry]}


def arguments_delta(index: int, fragment: str) -> dict:
    return tool_call_delta({"index": index, "function": {"arguments": fragment}})


def _complete_prefix(arguments_text: str) -> str:
    """The arguments text up to the end of its JSON value once that value is complete."""
    try:
        _, end = json.JSONDecoder().raw_decode(arguments_text)
    except json.JSONDecodeError:
        return arguments_text
    return arguments_text[:end]
