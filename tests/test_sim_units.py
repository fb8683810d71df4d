"""Token approximation, reply planning and parser rules, without a server."""

from __future__ import annotations

import re

import pytest

from helpers.sim.cli import build_parser, config_from_args
from helpers.sim.hermes import HermesStream, count_output_tokens, output_tokens, parse_tool_calls
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


def test_ignore_eos_always_runs_to_max_tokens():
    """vLLM with ignore_eos stops only at max_tokens; a paragraph break at the end must not cost a token
    ("long request 1" came out 255 tokens long with finish_reason stop)."""
    for index in range(300):
        messages = [{"role": "user", "content": f"long request {index}"}]
        reply = generate_reply(messages, max_tokens=256, ignore_eos=True, enable_thinking=False)
        assert (len(reply), reply.finish_reason) == (256, "length"), index


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


# --- the Hermes tool-call parser (hermes.py) -------------------------------------------------------

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>'


def test_hermes_parses_calls_and_keeps_the_text_before_them():
    content, calls = parse_tool_calls("我来查一下。\n\n" + CALL + "\n" + CALL.replace("北京", "上海"))
    assert content == "我来查一下。\n\n"
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city": "北京"}'),
        ("get_weather", '{"city": "上海"}'),
    ]
    assert re.fullmatch(r"chatcmpl-tool-[0-9a-f]{16}", calls[0].id) and calls[0].id != calls[1].id
    assert len(parse_tool_calls(CALL + "\n" + CALL, parallel=False)[1]) == 1


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}\n</tool_call>',  # unclosed
        CALL[:-20],  # cut by max_tokens
        CALL + "<tool_call>",  # a second block cut after its tag
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        "no call at all",
    ],
)
def test_hermes_gives_up_and_leaves_the_raw_text(text):
    assert parse_tool_calls(text) == (text, [])


def test_hermes_stream_sends_name_then_arguments_one_fragment_per_token():
    stream = HermesStream()
    tokens = output_tokens("好的。" + CALL)
    deltas = [stream.feed(token) for token in tokens]
    assert tokens.count("<tool_call>") == 1 and tokens.count("</tool_call>") == 1
    sent = [d for d in deltas if d is not None]
    assert sent[0] == {"content": "好的"} and sent[1] == {"content": "。"}
    name = sent[2]["tool_calls"][0]
    assert name["function"] == {"name": "get_weather"} and name["index"] == 0 and name["type"] == "function"
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in sent[3:]]
    assert "".join(fragments) == '{"city": "北京"}'
    assert all(d["content"] is None and "id" not in d["tool_calls"][0] for d in sent[3:])
    assert count_output_tokens("好的。" + CALL) == len(tokens)


def test_cli_tool_flags_mirror_vllms():
    args = build_parser().parse_args(["--enable-auto-tool-choice", "--tool-call-parser", "hermes"])
    config = config_from_args(args)
    assert config.enable_auto_tool_choice and config.tool_call_parser == "hermes"
    with pytest.raises(ValueError, match="requires --tool-call-parser"):
        config_from_args(build_parser().parse_args(["--enable-auto-tool-choice"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--tool-call-parser", "mistral"])
    assert (
        config_from_args(build_parser().parse_args(["--tool-call-error-rate", "0.25"])).tool_call_error_rate
        == 0.25
    )
