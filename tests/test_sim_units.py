"""Token approximation, reply planning and parser rules, without a server."""

from __future__ import annotations

import pytest

from helpers.sim.reasoning import reasoning_tokens, split_message, stream_fields
from helpers.sim.text import EOS, THINK_END, generate_reply, soft_switch
from helpers.sim.tokens import count_prompt_tokens, count_text_tokens, split_tokens


@pytest.mark.parametrize(
    "text",
    ["hello world", "你是谁?", "Hello, internationalisation!\n\nOK 2024", "异步编程（async）很有用。"],
)
def test_split_tokens_agrees_with_count(text):
    assert len(split_tokens(text)) == count_text_tokens(text)
    assert "".join(split_tokens(text)) == text


def test_prompt_count_follows_the_chat_template_layout():
    one = [{"role": "user", "content": "hello world"}]
    assert count_prompt_tokens(one) == 5 + 2 + 3
    assert count_prompt_tokens(one, enable_thinking=False) == 5 + 2 + 3 + 4
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]
    assert count_prompt_tokens(parts) == count_prompt_tokens(one)


def test_reply_layout_with_thinking():
    reply = generate_reply([{"role": "user", "content": "Hi"}], max_tokens=4096)
    assert reply.tokens[:2] == ["<think>", "\n"]
    end = reply.kinds.index(THINK_END)
    assert reply.tokens[end - 1 : end + 2] == ["\n", "</think>", "\n\n"]
    assert reply.kinds[-1] == EOS and reply.finish_reason == "stop"


def test_ignore_eos_and_min_tokens():
    messages = [{"role": "user", "content": "Hi"}]
    assert len(generate_reply(messages, max_tokens=700, ignore_eos=True)) == 700
    natural = len(generate_reply(messages, max_tokens=4096))
    longer = generate_reply(messages, max_tokens=4096, min_tokens=natural + 50)
    assert len(longer) >= natural + 50 and longer.finish_reason == "stop"


def test_soft_switch_reads_user_and_system_messages_only():
    assert soft_switch([{"role": "assistant", "content": "/no_think"}]) is None
    assert soft_switch([{"role": "system", "content": "/no_think"}]) == "no_think"
    assert (
        soft_switch([{"role": "user", "content": "/no_think"}, {"role": "user", "content": "/think"}])
        == "think"
    )


def test_parsers_on_a_reply_cut_inside_the_thinking():
    reply = generate_reply([{"role": "user", "content": "Hi"}], max_tokens=6)
    assert split_message(reply, "qwen3")[1] is None
    assert split_message(reply, "deepseek_r1")[1] is None
    assert split_message(reply, "none") == (None, "".join(reply.tokens))
    assert reasoning_tokens(reply, "qwen3", stream=False) == 6
    assert reasoning_tokens(reply, "qwen3", stream=True) == 5  # <think> sends no delta
    assert reasoning_tokens(reply, "deepseek_r1", stream=False) == 0
    assert reasoning_tokens(reply, "none", stream=False) is None
    assert stream_fields(reply, "qwen3", "reasoning")[0] is None
    assert set(stream_fields(reply, "none", "reasoning")) == {"content"}
