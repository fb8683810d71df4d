"""Unit tests for helpers.reasoning: fields, inline <think> blocks, tags split across chunks."""

from __future__ import annotations

import doctest
import itertools

import pytest

import helpers.reasoning
from helpers.reasoning import Parts, ReasoningStream, reasoning_field, split_reasoning

QWEN_INLINE = "<think>\nThe user greets me.\n</think>\n\nHello! 你好!"


def feed_all(pieces: list[str], stream: ReasoningStream | None = None) -> Parts:
    stream = stream or ReasoningStream()
    total = Parts()
    for piece in pieces:
        total = total + stream.feed(None, piece)
    return total + stream.close()


def test_doctests() -> None:
    assert doctest.testmod(helpers.reasoning).failed == 0


def test_whole_inline_block() -> None:
    assert split_reasoning(None, QWEN_INLINE) == Parts("\nThe user greets me.\n", "Hello! 你好!")


@pytest.mark.parametrize("cut", range(1, len(QWEN_INLINE)))
def test_split_anywhere_in_two(cut: int) -> None:
    assert feed_all([QWEN_INLINE[:cut], QWEN_INLINE[cut:]]) == split_reasoning(None, QWEN_INLINE)


def test_one_character_per_chunk_and_every_three_way_split() -> None:
    expected = split_reasoning(None, QWEN_INLINE)
    assert feed_all(list(QWEN_INLINE)) == expected
    for a, b in itertools.combinations(range(1, 30), 2):
        pieces = [QWEN_INLINE[:a], QWEN_INLINE[a:b], QWEN_INLINE[b:]]
        assert feed_all(pieces) == expected


def test_nothing_is_emitted_before_it_is_certain() -> None:
    stream = ReasoningStream()
    assert stream.feed(None, "<th") == Parts()
    assert stream.feed(None, "ink>abc</") == Parts(reasoning="abc")
    assert stream.feed(None, "thi") == Parts()
    assert stream.feed(None, "nk>\n") == Parts()
    assert stream.feed(None, "\nDone") == Parts(answer="Done")
    assert stream.close() == Parts()


def test_less_than_sign_inside_reasoning_is_not_swallowed() -> None:
    assert feed_all(["<think>a <", "b and </", "x> c</think>ok"]) == Parts("a <b and </x> c", "ok")


def test_cut_before_close_tag_is_all_reasoning() -> None:
    assert feed_all(["<think>\nstill going", " and </thi"]) == Parts("\nstill going and </thi", "")


def test_answer_without_think_block() -> None:
    assert feed_all(["Hello", " world"]) == Parts("", "Hello world")
    assert feed_all(["  <b>bold</b>"]) == Parts("", "  <b>bold</b>")
    assert split_reasoning(None, None) == Parts()


def test_a_stray_close_tag_without_opening_stays_in_the_answer() -> None:
    assert feed_all(["no tag here</think> more"]) == Parts("", "no tag here</think> more")


def test_empty_think_block_of_no_think_mode() -> None:
    # /no_think while thinking is enabled: Qwen3 writes an empty block, then the answer.
    assert feed_all(["<think>", "\n\n", "</think>", "\n\n", "OK"]) == Parts("\n\n", "OK")


def test_short_reply_that_looks_like_a_tag_prefix() -> None:
    assert feed_all(["<"]) == Parts("", "<")
    assert feed_all(["\n", "<t"]) == Parts("", "\n<t")


def test_leading_whitespace_before_the_opening_tag() -> None:
    assert feed_all(["\n", "<think>r</think>a"]) == Parts("r", "a")


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_field_names(field: str) -> None:
    assert reasoning_field({field: "why", "content": "ok"}) == "why"
    assert reasoning_field({field: None, "content": "ok"}) is None
    assert reasoning_field({"content": "ok"}) is None


def test_both_fields_vllm_0_12_to_0_15_are_not_doubled() -> None:
    delta = {"reasoning": "why", "reasoning_content": "why", "content": None}
    assert split_reasoning(reasoning_field(delta), delta["content"]) == Parts("why", "")


def test_parser_fields_pass_through_content_untouched() -> None:
    stream = ReasoningStream()
    assert stream.feed(None, "") == Parts()
    assert stream.feed("think ", None) == Parts("think ", "")
    assert stream.feed(None, "<think>not a tag here</think>") == Parts("", "<think>not a tag here</think>")
    assert stream.parser_seen


def test_content_held_back_before_a_field_arrives_is_flushed_as_answer() -> None:
    stream = ReasoningStream()
    assert stream.feed(None, "<thi") == Parts()
    assert stream.feed("r", None) == Parts("r", "<thi")


def test_streams_do_not_share_state() -> None:
    first, second = ReasoningStream(), ReasoningStream()
    text_a, text_b = "<think>a</think>A", "B plain"
    out_a, out_b = Parts(), Parts()
    for char_a, char_b in itertools.zip_longest(text_a, text_b, fillvalue=""):
        out_a = out_a + first.feed(None, char_a)
        out_b = out_b + second.feed(None, char_b)
    assert out_a + first.close() == Parts("a", "A")
    assert out_b + second.close() == Parts("", "B plain")


def test_thinking_off_makes_everything_answer() -> None:
    stream = ReasoningStream(thinking=False)
    assert stream.feed("misfiled by deepseek_r1", None) == Parts("", "misfiled by deepseek_r1")
    assert stream.feed(None, "<think>x</think>y") == Parts("", "<think>x</think>y")
    assert stream.close() == Parts()
    assert split_reasoning("a", "b", thinking=False) == Parts("", "ab")
    assert split_reasoning("a", "b", thinking=True) == Parts("a", "b")
