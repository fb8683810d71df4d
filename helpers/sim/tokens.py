"""The one token approximation the simulator uses everywhere (no tokenizer, no model files).

Text is cut into pieces with a regular expression, and each piece counts as one token:
- a run of Latin letters (with its leading space): 1 token, plus 1 per further 8 letters;
- each digit: 1 token (Qwen's tokenizer splits numbers into single digits);
- a run of CJK characters: pieces of 2 and 1 characters in turn, i.e. 2 tokens per 3 characters
  (Qwen3's vocabulary holds many two-character words);
- a run of newlines: 1 token; other spaces: 0 (they belong to the next word);
- any other character (punctuation, symbols): 1 token.

A prompt is counted through Qwen3's chat template layout:
`<|im_start|>{role}\\n{content}<|im_end|>\\n` per message (5 tokens plus the content), then the
generation prompt `<|im_start|>assistant\\n` (3 tokens), plus `<think>\\n\\n</think>\\n\\n`
(4 tokens) when thinking is disabled. With `tools`, the template's `# Tools` block joins the system
message (a system message of its own when there is none): its fixed instructions plus each tool
as JSON on its own line, counted as text (`tools_block`). An assistant message's `tool_calls` count
as the `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` text the template writes (each tag
one token), and a `role: "tool"` result as the `<tool_response>\n...\n</tool_response>` text the
template puts in a user turn. (The recorded vLLM server, whose tokenizer differs, counts 579
prompt tokens for one tool and 772 for two; this approximation is smaller but grows the same way.)
Generated text is built from pieces cut by the same rules,
one piece per token, so `usage` always adds up.

Example:
    >>> count_text_tokens("hello world")
    2
    >>> count_prompt_tokens([{"role": "user", "content": "你是谁?"}])
    11
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache

_PIECE = re.compile(
    r"(?P<word> ?[A-Za-z]+)"
    r"|(?P<digit>\d)"
    r"|(?P<cjk>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)"
    r"|(?P<newline>\n+)"
    r"|(?P<space>[ \t\r\f\v]+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

MESSAGE_OVERHEAD_TOKENS = 5  # <|im_start|> role \n ... <|im_end|> \n
GENERATION_PROMPT_TOKENS = 3  # <|im_start|> assistant \n
THINKING_DISABLED_TOKENS = 4  # <think> \n\n </think> \n\n


_WORDS = re.compile(r"[A-Za-z]+")
_DIGITS = re.compile(r"\d")
_CJK_RUNS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_NEWLINE_RUNS = re.compile(r"\n+")
_OTHER = re.compile(r"[^A-Za-z\d\s\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@lru_cache(maxsize=4096)
def count_text_tokens(text: str) -> int:
    """Approximate Qwen3 token count of `text` (same rules as `split_tokens`, counted in C)."""
    words = _WORDS.findall(text)
    total = len(words) + sum((len(word) - 1) // 8 for word in words if len(word) > 8)
    total += len(_DIGITS.findall(text)) + len(_NEWLINE_RUNS.findall(text))
    total += sum(_cjk_pieces(len(run)) for run in _CJK_RUNS.findall(text))
    return total + len(_OTHER.findall(text))


def _cjk_pieces(length: int) -> int:
    return 2 * (length // 3) + (1 if length % 3 else 0)


def split_tokens(text: str) -> list[str]:
    """Cut `text` into pieces of one token each (same rules as `count_text_tokens`).

    Spaces are glued to the following piece, CJK runs are cut into 1-2 character pieces and long
    words into 8-letter pieces, so that `len(split_tokens(t)) == count_text_tokens(t)` whenever
    `t` has no trailing spaces.
    """
    pieces: list[str] = []
    pending_space = ""
    for match in _PIECE.finditer(text):
        kind, piece = match.lastgroup, match.group()
        if kind == "space":
            pending_space += piece
            continue
        piece, pending_space = pending_space + piece, ""
        if kind == "cjk":
            pieces.extend(_cut_cjk(piece))
        elif kind == "word":
            pieces.extend(_cut_word(piece))
        else:
            pieces.append(piece)
    if pending_space and pieces:
        pieces[-1] += pending_space
    return pieces


def _cut_cjk(run: str) -> Iterable[str]:
    lead = len(run) - len(run.lstrip())
    start = 0
    # 2 tokens per 3 characters: pieces of 2 and 1 characters, alternating.
    sizes = (2, 1)
    index = 0
    while start < len(run):
        size = sizes[index % 2] + (lead if start == 0 else 0)
        yield run[start : start + size]
        start += size
        index += 1


def _cut_word(word: str) -> Iterable[str]:
    space = " " if word.startswith(" ") else ""
    letters = word.lstrip()
    for start in range(0, len(letters), 8):
        yield (space if start == 0 else "") + letters[start : start + 8]


def message_text(content: object) -> str:
    """The text of a message's `content`: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def tools_block(tools: Iterable[dict]) -> str:
    """The `# Tools` system text of Qwen3's chat template for `tools` (as sent in the request)."""
    lines = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    return TOOLS_HEADER + lines + TOOLS_FOOTER


def count_prompt_tokens(
    messages: list[dict], enable_thinking: bool = True, tools: Iterable[dict] | None = None
) -> int:
    """Approximate prompt length of `messages` (and `tools`) rendered with Qwen3's chat template."""
    total = GENERATION_PROMPT_TOKENS + (0 if enable_thinking else THINKING_DISABLED_TOKENS)
    if tools:
        has_system = bool(messages) and messages[0].get("role") == "system"
        total += count_text_tokens(("\n\n" if has_system else "") + tools_block(tools))
        total += 0 if has_system else MESSAGE_OVERHEAD_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + count_text_tokens(message_text(message.get("content")))
        total += len(_tool_turn_pieces(message))  # tags and JSON the template adds
    return total


def prompt_token_ids(
    messages: list[dict], enable_thinking: bool = True, tools: Iterable[dict] | None = None
) -> list[str]:
    """The prompt's tokens, as the pieces `count_prompt_tokens` counts (its length), in template order.

    A deterministic function of the text: prompts that share a prefix (a system prompt, earlier
    turns of a conversation) share their first tokens, which is what the prefix cache hashes.
    Special tokens are pieces of their own (`<|im_start|>`, ...).
    """
    ids: list[str] = []
    has_system = bool(messages) and messages[0].get("role") == "system"
    if tools and not has_system:
        ids += ["<|im_start|>", "system", "\n", *_pieces(tools_block(tools)), "<|im_end|>", "\n"]
    for position, message in enumerate(messages):
        ids += ["<|im_start|>", str(message.get("role")), "\n"]
        ids += _pieces(message_text(message.get("content")))
        if position == 0 and tools and has_system:
            ids += _pieces("\n\n" + tools_block(tools))
        ids += _tool_turn_pieces(message)
        ids += ["<|im_end|>", "\n"]
    ids += ["<|im_start|>", "assistant", "\n"]
    if not enable_thinking:
        ids += ["<think>", "\n\n", "</think>", "\n\n"]
    return ids


@lru_cache(maxsize=4096)
def _pieces(text: str) -> tuple[str, ...]:
    return tuple(split_tokens(text))


def _tool_turn_pieces(message: dict) -> list[str]:
    if message.get("role") == "tool":
        return list(_pieces("<tool_response>\n\n</tool_response>"))
    pieces: list[str] = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        text = f'\n{{"name": "{function.get("name")}", "arguments": {arguments}}}\n'
        pieces += ["<tool_call>", *_pieces(text), "</tool_call>"]
    return pieces


def is_chinese(text: str) -> bool:
    """True when `text` has at least one CJK character for every four Latin letters."""
    cjk = len(_CJK.findall(text))
    if cjk == 0:
        return False
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    return cjk * 4 >= latin
