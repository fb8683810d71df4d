"""RequestTimer / timed_batch / timed_abatch: when each call of LangChain's batch ran."""

from __future__ import annotations

import pytest

from helpers import plots
from helpers.bench.timing import RequestTimer, TimedBatch, timed_abatch, timed_batch
from helpers.chat import make_chat_model
from helpers.endpoint import Endpoint
from helpers.sim import serve

pytestmark = pytest.mark.server

# Duplicates on purpose: rows must follow input positions, not prompt texts.
PROMPTS = ["你是谁?", "Name three classic books on programming.", "你是谁?", "Say hi.", "你是谁?", "Why?"]
COLUMNS = ["label", "index", "prompt", "start_s", "end_s", "latency_s", "ok", "error", "output_tokens"]


@pytest.fixture(scope="module")
def sim():
    # l4 at time scale 1: a 24-token reply takes ~0.15 s, long enough for calls to overlap visibly.
    with serve(profile="l4", time_scale=1.0, answer_tokens_mean=24) as server:
        yield server


def chat_model(server, max_tokens=24):
    endpoint = Endpoint(server.base_url, server.model, kind="simulator")
    return make_chat_model(False, endpoint, max_tokens=max_tokens, max_retries=0)


def peak_in_flight(frame) -> int:
    events = sorted([(s, 1) for s in frame["start_s"]] + [(e, -1) for e in frame["end_s"]])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def check_rows(result: TimedBatch, max_concurrency: int) -> None:
    frame = result.requests
    assert list(frame.columns) == COLUMNS
    assert frame["index"].tolist() == list(range(len(PROMPTS)))
    assert frame["prompt"].tolist() == PROMPTS
    assert frame["ok"].all() and (frame["error"] == "").all()
    assert (frame["start_s"] >= 0).all() and (frame["end_s"] > frame["start_s"]).all()
    assert frame["end_s"].max() <= result.total_s
    replies = [reply.usage_metadata["output_tokens"] for reply in result.replies]
    assert frame["output_tokens"].tolist() == replies
    assert 1 < peak_in_flight(frame) <= max_concurrency


def test_timed_batch_rows_follow_the_inputs_and_respect_max_concurrency(sim):
    result = timed_batch(chat_model(sim), PROMPTS, max_concurrency=3)
    replies, frame, total_s = result  # unpacks like a tuple
    assert len(replies) == len(PROMPTS) and total_s > 0
    check_rows(result, max_concurrency=3)
    assert set(frame["label"]) == {"batch(max_concurrency=3)"}


async def test_timed_abatch_notes_times_in_the_event_loop(sim):
    result = await timed_abatch(chat_model(sim), PROMPTS, max_concurrency=2, label="abatch, 2")
    check_rows(result, max_concurrency=2)
    assert set(result.requests["label"]) == {"abatch, 2"}


def test_failed_call_is_a_row_with_its_error(sim):
    inputs = [PROMPTS[0], " hello" * 60_000, PROMPTS[1]]  # the middle one exceeds the context window
    result = timed_batch(chat_model(sim), inputs, max_concurrency=3, return_exceptions=True)
    assert isinstance(result.replies[1], Exception)
    frame = result.requests
    assert frame["ok"].tolist() == [True, False, True]
    assert "400" in frame.loc[1, "error"] and "maximum context length" in frame.loc[1, "error"]
    assert frame["prompt"].str.len().tolist()[1] <= 80  # long prompts are shortened in the table


def test_without_return_exceptions_the_error_propagates_like_batch(sim):
    with pytest.raises(Exception, match="maximum context length"):
        timed_batch(chat_model(sim), [" hello" * 60_000], max_concurrency=1)


def test_timer_passed_by_hand_orders_calls_by_start(sim):
    timer = RequestTimer()
    model = chat_model(sim)
    model.batch(PROMPTS[:3], config={"max_concurrency": 1, "callbacks": [timer]})
    frame = timer.frame(label="by hand")
    assert frame["index"].tolist() == [0, 1, 2]
    assert frame["start_s"].is_monotonic_increasing
    assert peak_in_flight(frame) == 1


def test_frame_plots_as_a_timeline(sim, tmp_path):
    result = timed_batch(chat_model(sim), PROMPTS[:3], max_concurrency=3)
    figure = plots.plot_timeline(result.requests, path=tmp_path / "timeline.png")
    assert "3 requests" in figure.axes[0].get_title()


def test_bad_arguments_are_clear_errors(sim):
    model = chat_model(sim)
    with pytest.raises(TypeError, match="list of inputs"):
        timed_batch(model, "你是谁?", max_concurrency=1)
    with pytest.raises(ValueError, match="max_concurrency"):
        timed_batch(model, PROMPTS, max_concurrency=0)
