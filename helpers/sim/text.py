"""Deterministic stand-in text for a Qwen3 reply: a thinking part, then an answer that says it is
simulated, in the prompt's language. One list entry = one token (see tokens.py).

The same (messages, seed, temperature) always gives the same reply; `max_tokens` only cuts it, so
a shorter reply is a prefix of a longer one, as with a real model and a fixed seed. With
`temperature` 0 the seed is ignored (greedy decoding does not use it).

Example:
    >>> reply = generate_reply([{"role": "user", "content": "Hi"}], max_tokens=8)
    >>> reply.tokens[:2], reply.finish_reason
    (['<think>', '\\n'], 'length')
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache

import orjson

from helpers.sim.tokens import is_chinese, message_text, split_tokens

THINK_START, REASONING, THINK_END, CONTENT, EOS = range(5)

_EN_REASONING = (
    "Let me think about what they really want to know.",
    "First, I should recall the key facts.",
    "Hmm, there may be more than one way to read this question.",
    "I need to keep the answer clear and short.",
    "Let me check the details once more before answering.",
    "Maybe an example would help here.",
    "Wait, I should also mention the main caveat.",
    "So the answer should start with the main point, then explain it.",
    "This is a simulated reasoning trace, so the details are placeholders.",
    "Okay, that covers the important parts.",
)
_EN_ANSWER_FIRST = "This is a simulated answer from the Qwen3-0.6B simulator (no real model ran)."
_EN_ANSWER = (
    "Here is the main point, stated plainly.",
    "In short, the answer depends on the details of your question.",
    "A real model would give specific facts here; the simulator only imitates the shape of a reply.",
    "First, consider the simplest case.",
    "Second, look at what changes when the input grows.",
    "Finally, check the result against a small example.",
    "Point your client at a real vLLM server to get real answers.",
    "The length of this reply varies from prompt to prompt, like a real model's.",
)
_ZH_REASONING = (
    "让我想一想用户真正想知道什么。",
    "首先，我需要回忆相关的关键事实。",
    "嗯，这个问题可能有不止一种理解方式。",
    "回答应该清楚、简洁。",
    "在回答之前，我再检查一下细节。",
    "也许举个例子会更好理解。",
    "等等，我还应该提到一个需要注意的地方。",
    "所以回答应该先给出要点，再解释原因。",
    "这是模拟的思考过程，细节只是占位内容。",
    "好，重要的部分都考虑到了。",
)
_ZH_ANSWER_FIRST = "这是 Qwen3-0.6B 模拟器生成的回答（没有运行真实模型）。"
_ZH_ANSWER = (
    "要点如下，简单直接。",
    "简而言之，答案取决于问题的具体细节。",
    "真实模型会在这里给出具体事实；模拟器只模仿回答的形式。",
    "第一，先看最简单的情况。",
    "第二，再看输入变大时会发生什么变化。",
    "最后，用一个小例子检验结果。",
    "把客户端指向真实的 vLLM 服务器，就能得到真实的回答。",
    "这个回答的长度因提示而异，就像真实模型一样。",
)
_SOFT_SWITCH = re.compile(r"/(no_think|think)\b")


@dataclass
class Reply:
    """A planned generation: token texts and kinds, and why it ended."""

    tokens: list[str]
    kinds: list[int]
    finish_reason: str  # "stop" or "length"
    stop_reason: str | None
    thinking: bool  # the chat template left thinking on (enable_thinking)

    def __len__(self) -> int:
        return len(self.tokens)


def soft_switch(messages: list[dict]) -> str | None:
    """The last `/think` or `/no_think` in a user or system message ("think", "no_think" or None)."""
    last = None
    for message in messages:
        if message.get("role") in ("user", "system"):
            found = _SOFT_SWITCH.findall(message_text(message.get("content")))
            if found:
                last = found[-1]
    return last


def generate_reply(
    messages: list[dict],
    *,
    seed: int | None = None,
    temperature: float | None = None,
    max_tokens: int = 4096,
    min_tokens: int = 0,
    ignore_eos: bool = False,
    stop: list[str] | None = None,
    enable_thinking: bool = True,
    think_tokens_mean: int = 256,
    answer_tokens_mean: int = 128,
) -> Reply:
    """Plan the reply to `messages`, at most `max_tokens` tokens long."""
    rng = random.Random(_seed_of(messages, seed, temperature))
    chinese = _language_is_chinese(messages)
    reasoning_pool, answer_first, answer_pool = (
        (_ZH_REASONING, _ZH_ANSWER_FIRST, _ZH_ANSWER)
        if chinese
        else (_EN_REASONING, _EN_ANSWER_FIRST, _EN_ANSWER)
    )
    tokens: list[str] = []
    kinds: list[int] = []

    def add(pieces: list[str] | tuple[str, ...], kind: int) -> None:
        tokens.extend(pieces)
        kinds.extend([kind] * len(pieces))

    think_target = _vary(rng, think_tokens_mean)
    answer_target = _vary(rng, answer_tokens_mean)
    if enable_thinking:
        add(["<think>"], THINK_START)
        if soft_switch(messages) == "no_think":
            add(["\n\n"], REASONING)
        else:
            add(["\n"], REASONING)
            add(_sentence_pieces(_topic_sentence(messages, chinese), chinese, first=True), REASONING)
            _add_sentences(rng, reasoning_pool, chinese, think_target, tokens, kinds, REASONING)
            add(["\n"], REASONING)
        add(["</think>"], THINK_END)
        add(["\n\n"], CONTENT)
    answer_start = len(tokens)
    add(_sentence_pieces(answer_first, chinese, first=True), CONTENT)
    goal = answer_start + answer_target
    if ignore_eos:
        goal = max_tokens
    elif min_tokens:
        goal = max(goal, min_tokens - 1)
    new_paragraph = False
    while len(tokens) < min(goal, max_tokens):
        add(_sentence_pieces(_pick(rng, answer_pool, tokens), chinese, new_paragraph), CONTENT)
        new_paragraph = not chinese and rng.random() < 0.2
        if new_paragraph:
            add(["\n\n"], CONTENT)
    if tokens[-1] == "\n\n" and len(tokens) > answer_start and not ignore_eos:
        del tokens[-1], kinds[-1]
    if not ignore_eos:
        add([""], EOS)
    finish_reason, stop_reason = "stop", None
    if len(tokens) > max_tokens or (ignore_eos and len(tokens) >= max_tokens):
        del tokens[max_tokens:], kinds[max_tokens:]
        finish_reason = "length"
    if stop:
        cut = _apply_stop(tokens, kinds, stop)
        if cut is not None:
            finish_reason, stop_reason = "stop", cut
    return Reply(tokens, kinds, finish_reason, stop_reason, enable_thinking)


def _seed_of(messages: list[dict], seed: int | None, temperature: float | None) -> int:
    if temperature == 0:
        seed = None
    material = orjson.dumps([messages, seed, temperature], option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")


def _language_is_chinese(messages: list[dict]) -> bool:
    for message in reversed(messages):
        if message.get("role") == "user":
            return is_chinese(message_text(message.get("content")))
    return False


def _vary(rng: random.Random, mean: int) -> int:
    """A length around `mean` (log-normal, sigma 0.35, mean preserved)."""
    if mean <= 0:
        return 0
    return max(1, round(mean * math.exp(rng.gauss(-0.06125, 0.35))))


def _topic_sentence(messages: list[dict], chinese: bool) -> str:
    text = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = message_text(message.get("content"))
            break
    topic = " ".join(_SOFT_SWITCH.sub("", text).split())
    if chinese:
        topic = topic[:24] + ("……" if len(topic) > 24 else "")
        return f"好的，用户问的是：“{topic}”。"
    topic = topic[:60] + ("..." if len(topic) > 60 else "")
    return f'Okay, the user asks: "{topic}".'


@lru_cache(maxsize=4096)
def _sentence_pieces(sentence: str, chinese: bool, first: bool = False) -> tuple[str, ...]:
    return tuple(split_tokens(sentence if first or chinese else " " + sentence))


def _add_sentences(
    rng: random.Random,
    pool: tuple[str, ...],
    chinese: bool,
    target: int,
    tokens: list[str],
    kinds: list[int],
    kind: int,
) -> None:
    added = 0
    while added < target:
        pieces = _sentence_pieces(_pick(rng, pool, tokens), chinese)
        tokens.extend(pieces)
        kinds.extend([kind] * len(pieces))
        added += len(pieces)


def _pick(rng: random.Random, pool: tuple[str, ...], tokens: list[str]) -> str:
    """A sentence from `pool`, not the one that ends `tokens` (no immediate repeats)."""
    sentence = rng.choice(pool)
    while len(pool) > 1 and tokens and sentence.endswith(tokens[-1]) and _ends_with(tokens, sentence):
        sentence = rng.choice(pool)
    return sentence


def _ends_with(tokens: list[str], sentence: str) -> bool:
    tail = "".join(tokens[-len(sentence) :])
    return tail.endswith(sentence)


def _apply_stop(tokens: list[str], kinds: list[int], stop: list[str]) -> str | None:
    """Cut the reply at the earliest stop string and return it (None when no stop string occurs).

    The token that completes the stop string is still generated (it counts), but the text from
    the stop string on is dropped, as vLLM does without `include_stop_str_in_output`.
    """
    text = "".join(tokens)
    hits = [(text.find(s), s) for s in stop if s and s in text]
    if not hits:
        return None
    position, found = min(hits)
    stop_end = position + len(found)
    start = 0
    for index, piece in enumerate(tokens):
        tokens[index] = piece[: max(0, position - start)]
        start += len(piece)
        if start >= stop_end:
            del tokens[index + 1 :], kinds[index + 1 :]
            break
    return found
