"""helpers.streaming: events from any server variant, timings, live display; against the simulator."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI

from helpers.chat import make_chat_model
from helpers.endpoint import DEFAULT_MODEL, Endpoint
from helpers.sim import serve
from helpers.streaming import (
    LiveDisplay,
    StreamEvent,
    StreamTimings,
    astream_parts,
    show_stream,
    stream_with_timings,
)

PROMPT = "你是谁?"


@pytest.fixture(scope="module", params=["qwen3", "deepseek_r1", "none"])
def sim(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    with serve(
        profile="instant",
        reasoning_parser=request.param,
        reasoning_field="reasoning_content" if request.param == "deepseek_r1" else "reasoning",
        think_tokens_mean=40,
        answer_tokens_mean=20,
    ) as server:
        yield Endpoint(server.base_url, DEFAULT_MODEL)


def kinds_in_order(events: list[StreamEvent]) -> list[str]:
    """The distinct kinds in the order they first appear, collapsing repeats."""
    order: list[str] = []
    for event in events:
        if not order or order[-1] != event.kind:
            order.append(event.kind)
    return order


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.server
async def test_events_reasoning_then_answer(sim: Endpoint, thinking: bool) -> None:
    model = make_chat_model(thinking, sim)
    events = [event async for event in astream_parts(model, PROMPT)]
    assert kinds_in_order(events) == (["reasoning", "answer"] if thinking else ["answer"])
    assert all(event.text for event in events)
    reply = await model.ainvoke(PROMPT)
    assert "".join(e.text for e in events if e.kind == "answer") == reply.content
    assert (
        "".join(e.text for e in events if e.kind == "reasoning")
        == reply.additional_kwargs["reasoning_content"]
    )


@pytest.mark.server
async def test_plain_chatopenai_inline_think_is_split_too(sim: Endpoint) -> None:
    plain = ChatOpenAI(model=DEFAULT_MODEL, base_url=sim.base_url, api_key="EMPTY")
    events = [event async for event in astream_parts(plain, PROMPT)]
    answer = "".join(e.text for e in events if e.kind == "answer")
    assert "<think>" not in answer and "</think>" not in answer
    if events[0].kind == "reasoning":  # no parser: the think block was inline and got split
        assert kinds_in_order(events) == ["reasoning", "answer"]
    else:  # a parser ran and plain ChatOpenAI dropped the reasoning field: answer only
        assert kinds_in_order(events) == ["answer"]


@pytest.mark.server
async def test_timings(sim: Endpoint) -> None:
    result = await stream_with_timings(make_chat_model(True, sim), PROMPT)
    timings = result.timings
    assert 0 < timings.ttft_s < timings.first_answer_s <= timings.total_s
    usage_tokens = timings.completion_tokens
    assert usage_tokens is not None and usage_tokens + 1 >= timings.chunks > 0  # + vLLM's role chunk
    assert timings.tokens_per_s > 0
    assert result.reasoning and result.answer
    off = (await stream_with_timings(make_chat_model(False, sim), PROMPT)).timings
    assert off.ttft_s <= off.first_answer_s  # the role chunk comes first, the answer's text with the next
    assert off.reasoning_tokens in (0, None)


def test_timings_arithmetic_and_text() -> None:
    timings = StreamTimings(started=0.0)
    timings.ttft_s, timings.first_answer_s, timings.total_s = 0.5, 1.5, 2.5
    timings.completion_tokens = 41
    assert timings.tokens_per_s == pytest.approx(20.0)
    assert str(timings) == (
        "TTFT 0.500 s, first answer token 1.500 s, 20.0 tokens/s, total 2.500 s (41 tokens)"
    )
    empty = StreamTimings()
    assert empty.tokens_per_s is None
    assert str(empty).startswith("TTFT n/a, first answer token n/a, n/a tokens/s")


@pytest.mark.server
async def test_concurrent_streams_keep_their_own_state(sim: Endpoint) -> None:
    model = make_chat_model(True, sim)
    prompts = [PROMPT, "Why is the sky blue?", "写一首诗", "What is 2+2?"]
    alone = [await stream_with_timings(model, prompt) for prompt in prompts]
    together = await asyncio.gather(*(stream_with_timings(model, prompt) for prompt in prompts))
    for one, other in zip(alone, together, strict=True):
        assert (one.reasoning, one.answer) == (other.reasoning, other.answer)
    assert len({result.answer for result in together}) == len(prompts)


@pytest.mark.server
async def test_show_stream_in_a_terminal(sim: Endpoint) -> None:
    out = io.StringIO()
    result = await show_stream(make_chat_model(True, sim), PROMPT, notebook=False, out=out)
    text = out.getvalue()
    assert text == f"[thinking] {result.reasoning}\n[answer] {result.answer}\n"
    assert "\x1b[" not in text  # not a TTY: no escape codes


@pytest.mark.server
async def test_show_stream_in_a_notebook_updates_one_display(
    sim: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    import IPython.display

    shown: list[str] = []

    class Handle:
        def update(self, obj) -> None:
            shown.append(obj.data)

    def fake_display(obj, display_id: bool = False) -> Handle:
        assert display_id is True
        shown.append(obj.data)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    result = await show_stream(make_chat_model(True, sim), PROMPT, notebook=True)
    assert len(shown) >= 2  # created once, then updated in place
    final = shown[-1]
    assert 'style="color:#888;font-style:italic' in final
    assert final.endswith(f'<div style="white-space:pre-wrap">{result.answer}</div>')


def test_html_is_escaped() -> None:
    view = LiveDisplay(notebook=True)
    view.reasoning, view.answer = "a < b", "<script>x</script>"
    assert "&lt;script&gt;" in view.html() and "a &lt; b" in view.html()
    view.reasoning = "  "
    assert view.html() == '<div style="white-space:pre-wrap">&lt;script&gt;x&lt;/script&gt;</div>'


@pytest.fixture(scope="module")
def long_thinker() -> Iterator[Endpoint]:
    with serve(profile="instant", think_tokens_mean=200, answer_tokens_mean=50) as server:
        yield Endpoint(server.base_url, DEFAULT_MODEL)


@pytest.mark.server
async def test_a_complete_stream_says_how_it_finished(sim: Endpoint) -> None:
    result = await stream_with_timings(make_chat_model(True, sim), PROMPT)
    assert result.finish_reason == "stop" and not result.truncated
    assert "cut" not in str(result.timings)


@pytest.mark.server
async def test_a_stream_cut_by_max_tokens_says_so(long_thinker: Endpoint) -> None:
    model = make_chat_model(True, long_thinker, max_tokens=20)
    result = await stream_with_timings(model, PROMPT)
    assert result.truncated and result.finish_reason == "length"
    assert result.reasoning and result.answer == ""  # the cut fell in the thinking
    assert str(result.timings).endswith("(20 tokens), cut by max_tokens")


@pytest.mark.server
async def test_show_stream_tells_the_user_the_reply_was_cut(long_thinker: Endpoint) -> None:
    out = io.StringIO()
    model = make_chat_model(True, long_thinker, max_tokens=20)
    result = await show_stream(model, PROMPT, notebook=False, out=out)
    assert result.truncated
    last_line = out.getvalue().rstrip("\n").split("\n")[-1]
    assert last_line.startswith("[cut by max_tokens] no answer was written yet")
    assert "raise max_tokens" in last_line and "thinking=False" in last_line


def test_the_notebook_view_shows_the_cut_note() -> None:
    view = LiveDisplay(notebook=True)
    view.reasoning, view.answer = "thinking", "Paris is"
    view.cut()
    assert "cut by max_tokens" in view.html() and "the answer above is incomplete" in view.html()


class ScriptedStream(BaseChatModel):
    """Streams ``deltas`` as vLLM does for a byte-level model: one chunk per token, ``gap_s`` apart,
    many of them with empty text (bytes not yet a whole character), then a usage-only chunk."""

    deltas: list[str]
    gap_s: float = 0.02

    @property
    def _llm_type(self) -> str:
        return "scripted-stream"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise NotImplementedError("streams only")

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        for text in self.deltas:
            await asyncio.sleep(self.gap_s)
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        usage = {
            "input_tokens": 3,
            "output_tokens": len(self.deltas) - 1,
            "total_tokens": len(self.deltas) + 2,
        }
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage))


async def test_empty_deltas_count_as_tokens_in_the_timings() -> None:
    # the role chunk, three tokens whose text is still incomplete bytes, then text (vLLM's tiny model)
    model = ScriptedStream(deltas=["", "", "", "", "a", "", "b"])
    result = await stream_with_timings(model, PROMPT)
    timings = result.timings
    assert result.answer == "ab"
    assert timings.chunks == 7  # every chunk with a delta; the usage-only one is not a token
    assert timings.completion_tokens == 6
    # TTFT is the first chunk (as vllm bench serve reads it), not the first one with text
    assert timings.first_answer_s - timings.ttft_s >= 3 * model.gap_s
    no_usage = StreamTimings(started=0.0)
    no_usage.chunks = 7
    assert no_usage.tokens == 6  # without usage: the chunks after the role chunk
