"""Decode the real vLLM 0.32 transcripts (tests/fixtures/vllm-0.32/) with helpers.reasoning.

The transcripts come from a real server running a tiny, randomly initialised Qwen3-shaped model:
the text is noise, the wire format is real. The reader lives in support.py.
"""

from __future__ import annotations

import json

import pytest
from support import FIXTURES, load_transcript

from helpers.reasoning import Parts, ReasoningStream, reasoning_field, split_message, split_reasoning

PARSERS = ("qwen3-parser", "deepseek-r1-parser", "no-parser")


def decode_stream(events: list[dict]) -> tuple[str, str]:
    stream = ReasoningStream()
    reasoning = answer = ""
    for event in events:
        for choice in event.get("choices", []):
            delta = choice["delta"]
            parts = stream.feed(reasoning_field(delta), delta.get("content"))
            reasoning, answer = reasoning + parts.reasoning, answer + parts.answer
    tail = stream.close()
    return reasoning + tail.reasoning, answer + tail.answer


def test_reader_parses_every_transcript() -> None:
    names = sorted(path.stem for path in FIXTURES.glob("*.http"))
    assert len(names) == 93  # every transcript of ../shared/reference/vllm-0.32 (prefix-cache-*: 3 exchanges)
    for name in names:
        transcript = load_transcript(name)
        # the two API-key errors were recorded without a request line
        assert transcript.method in ("GET", "POST") or name.endswith("api-key"), name
        assert 200 <= transcript.status < 500


@pytest.mark.parametrize("parser", ["qwen3-parser", "deepseek-r1-parser"])
def test_parser_servers_use_the_reasoning_field(parser: str) -> None:
    message = load_transcript(f"{parser}-chat-thinking").json()["choices"][0]["message"]
    assert "reasoning" in message and "reasoning_content" not in message  # vLLM >= 0.16
    parts = split_message(message)
    assert parts.reasoning == message["reasoning"] == " learnsN��edick�}�~本�"
    assert parts.answer == message["content"]  # content is the server's answer, untouched
    assert parts.answer.startswith("-��\t什")


def test_parser_output_content_is_left_alone_even_with_a_stray_close_tag() -> None:
    # deepseek_r1 leaves a second </think> inside content; the field says a parser ran, so
    # nothing in content is moved to the reasoning.
    message = load_transcript("deepseek-r1-parser-chat-thinking").json()["choices"][0]["message"]
    assert "</think>" in message["content"]
    assert split_message(message).answer == message["content"]


@pytest.mark.parametrize("parser", PARSERS)
def test_thinking_off_is_all_answer(parser: str) -> None:
    for kind in ("chat", "stream"):
        transcript = load_transcript(f"{parser}-{kind}-no-thinking")
        assert transcript.request["chat_template_kwargs"] == {"enable_thinking": False}
        if kind == "chat":
            message = transcript.json()["choices"][0]["message"]
            if parser == "deepseek-r1-parser":
                # The real deepseek_r1 parser files a reply that has no </think> as reasoning
                # even with thinking off (content null). Knowing thinking was off, it is answer.
                assert message["content"] is None and message["reasoning"]
                assert split_message(message) == Parts(message["reasoning"], "")
                assert split_message(message, thinking=False) == Parts("", message["reasoning"])
                continue
            assert split_message(message, thinking=False) == Parts("", message["content"])
            parts = split_message(message)
            assert parts.reasoning == "" and parts.answer == message["content"]
        else:
            reasoning, answer = decode_stream(transcript.sse_events())
            assert reasoning == ""
            assert answer.startswith("��tell 推荐三本经典的技术书籍")


def test_cut_inside_thinking_leaves_content_null_and_all_reasoning() -> None:
    message = load_transcript("qwen3-parser-chat-seed-style-extra-body").json()["choices"][0]["message"]
    assert message["content"] is None
    parts = split_message(message)
    assert parts.answer == "" and parts.reasoning == message["reasoning"]


@pytest.mark.parametrize("parser", ["qwen3-parser", "deepseek-r1-parser"])
def test_streamed_reasoning_matches_the_concatenated_fields(parser: str) -> None:
    events = load_transcript(f"{parser}-stream-thinking-usage").sse_events()
    expected_reasoning = "".join(
        c["delta"].get("reasoning") or "" for e in events for c in e.get("choices", [])
    )
    expected_answer = "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))
    assert decode_stream(events) == (expected_reasoning, expected_answer)
    assert expected_reasoning and expected_answer


def test_streamed_usage_counts_reasoning_tokens() -> None:
    events = load_transcript("qwen3-parser-stream-thinking-usage").sse_events()
    usage = events[-1]["usage"]
    assert events[-1]["choices"] == []
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 6


def test_no_parser_without_an_opening_tag_stays_in_content() -> None:
    # The random tiny model never wrote <think> (real Qwen3-0.6B does): with no opening tag the
    # whole reply is content, stray </think> included, streamed or not — the documented rule 3.
    message = load_transcript("no-parser-chat-thinking").json()["choices"][0]["message"]
    assert message["reasoning"] is None
    assert not message["content"].startswith("<think>")
    assert split_message(message).answer == message["content"]
    events = load_transcript("no-parser-stream-thinking-usage").sse_events()
    assert decode_stream(events) == ("", message["content"])


def test_no_parser_inline_block_splits_like_the_qwen3_parser() -> None:
    # Real Qwen3 opens with "<think>": put it where the model writes it, and the no-parser text
    # splits into what the qwen3 parser returned for the same request.
    inline = load_transcript("no-parser-chat-thinking").json()["choices"][0]["message"]["content"]
    parsed = load_transcript("qwen3-parser-chat-thinking").json()["choices"][0]["message"]
    parts = split_reasoning(None, "<think>" + inline)
    assert parts.reasoning == parsed["reasoning"]
    assert parts.answer.startswith(parsed["content"][:10])
    # streamed, one chunk per token, the tag split anywhere: same result
    events = load_transcript("no-parser-stream-thinking-usage").sse_events()
    events[1]["choices"][0]["delta"]["content"] = "<thi"
    events[2]["choices"][0]["delta"]["content"] = "nk>"
    assert decode_stream(events) == (parts.reasoning, parts.answer)


@pytest.mark.parametrize("parser", PARSERS)
def test_blog_style_extra_body_is_ignored(parser: str) -> None:
    # Same seed and length as the no-thinking request, with the blog's top-level flags instead:
    # the server thinks exactly as with no flag at all (default on) — the flags did nothing.
    blog = load_transcript(f"{parser}-chat-seed-style-extra-body")
    assert blog.request["enable_thinking"] is True and blog.request["return_reasoning"] is True
    assert blog.status == 200
    message = blog.json()["choices"][0]["message"]
    assert "return_reasoning" not in json.dumps(blog.json())
    if parser == "no-parser":
        assert message["reasoning"] is None  # "return_reasoning" returned no reasoning
    else:
        assert message["content"] is None and message["reasoning"]


@pytest.mark.parametrize(
    ("name", "status", "needle"),
    [
        ("qwen3-parser-error-unknown-model", 404, "does not exist"),
        ("no-parser-error-missing-api-key", 401, "Unauthorized"),
        ("no-parser-error-wrong-api-key", 401, "Unauthorized"),
        ("qwen3-parser-error-bad-temperature", 400, "temperature"),
    ],
)
def test_error_bodies(name: str, status: int, needle: str) -> None:
    transcript = load_transcript(name)
    assert transcript.status == status
    assert needle in transcript.text
