"""Metric computations on hand-made request records (the definitions of vllm bench serve)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.bench.metrics import (
    SLO,
    max_concurrency,
    metric_values,
    percentile_table,
    requests_frame,
    summarize,
    summary_frame,
)
from helpers.bench.records import RequestRecord, RunResult


def streamed(index, start, end, ttft, tokens, itl=(), ok=True, error=""):
    return RequestRecord(
        index=index,
        start_s=start,
        end_s=end,
        ok=ok,
        error=error,
        streamed=True,
        ttft_s=ttft,
        ttfa_s=ttft,
        itl_s=list(itl),
        chunks=len(itl) + 1,
        prompt_tokens=10,
        output_tokens=tokens,
    )


def test_tpot_is_decode_time_over_tokens_after_the_first():
    record = streamed(0, 1.0, 2.0, ttft=0.1, tokens=10)
    assert record.latency_s == pytest.approx(1.0)
    assert record.tpot_s == pytest.approx(0.9 / 9)


def test_tpot_undefined_for_one_token_or_unknown_usage():
    assert streamed(0, 0, 1, ttft=0.1, tokens=1).tpot_s is None
    assert streamed(0, 0, 1, ttft=0.1, tokens=None).tpot_s is None
    assert RequestRecord(0, 0, 1, output_tokens=5).tpot_s is None  # not streamed: no TTFT


def test_percentiles_and_means_in_milliseconds():
    records = [streamed(i, 0.0, 1.0, ttft=(i + 1) / 100, tokens=2) for i in range(100)]
    summary = summarize(RunResult(records, duration_s=1.0))
    ttfts = np.arange(1, 101) * 10.0  # 10..1000 ms
    assert summary["mean_ttft_ms"] == pytest.approx(ttfts.mean())
    assert summary["median_ttft_ms"] == pytest.approx(np.median(ttfts))
    assert summary["p90_ttft_ms"] == pytest.approx(np.percentile(ttfts, 90))
    assert summary["p99_ttft_ms"] == pytest.approx(np.percentile(ttfts, 99))
    assert summary["std_ttft_ms"] == pytest.approx(ttfts.std())
    # TPOT = (1 - ttft) / 1 for 2 output tokens
    assert summary["mean_tpot_ms"] == pytest.approx(1000 - ttfts.mean())


def test_itl_pools_every_gap_of_every_completed_request():
    records = [
        streamed(0, 0, 1, ttft=0.1, tokens=3, itl=[0.01, 0.02]),
        streamed(1, 0, 1, ttft=0.1, tokens=2, itl=[0.03]),
        streamed(2, 0, 1, ttft=0.1, tokens=2, itl=[9.0], ok=False, error="broken stream"),
    ]
    assert sorted(metric_values(records, "itl")) == pytest.approx([0.01, 0.02, 0.03])
    summary = summarize(RunResult(records, duration_s=2.0))
    assert summary["mean_itl_ms"] == pytest.approx(20.0)


def test_failed_requests_are_counted_and_kept_but_not_in_latencies():
    records = [
        streamed(0, 0.0, 1.0, ttft=0.1, tokens=11),
        streamed(1, 0.0, 3.0, ttft=0.2, tokens=21),
        RequestRecord(2, 0.0, 0.5, ok=False, error="HTTP 400: temperature must be non-negative"),
    ]
    run = RunResult(records, duration_s=4.0, settings={"generator": "closed", "concurrency": 3})
    summary = summarize(run)
    assert (summary["requests"], summary["completed"], summary["failed"]) == (3, 2, 1)
    assert summary["request_throughput"] == pytest.approx(2 / 4)
    assert summary["output_throughput"] == pytest.approx(32 / 4)
    assert summary["total_input_tokens"] == 20
    assert summary["total_token_throughput"] == pytest.approx(52 / 4)
    assert summary["mean_e2el_ms"] == pytest.approx(2000.0)
    assert summary["concurrency"] == 3 and summary["label"] == "closed c=3"
    frame = requests_frame(run)
    assert len(frame) == 3
    failed = frame[~frame["ok"]]
    assert failed["error"].tolist() == ["HTTP 400: temperature must be non-negative"]


def test_goodput_counts_requests_meeting_every_slo():
    records = [
        streamed(0, 0, 1.0, ttft=0.1, tokens=11),  # tpot 90 ms
        streamed(1, 0, 1.0, ttft=0.5, tokens=11),  # ttft too slow
        streamed(2, 0, 2.0, ttft=0.1, tokens=11),  # tpot 190 ms too slow
        streamed(3, 0, 0.2, ttft=0.2, tokens=1),  # one token: TPOT not applicable
        streamed(4, 0, 0.1, ttft=0.05, tokens=11, ok=False, error="x"),  # failed: never good
    ]
    run = RunResult(records, duration_s=2.0)
    summary = summarize(run, SLO(ttft_s=0.2, tpot_s=0.1))
    assert summary["good_requests"] == 2
    assert summary["request_goodput"] == pytest.approx(1.0)
    assert summarize(run, SLO(e2el_s=1.0))["good_requests"] == 3


def test_ttft_slo_on_non_streamed_requests_is_a_clear_error():
    run = RunResult([RequestRecord(0, 0, 1, output_tokens=3)], duration_s=1)
    with pytest.raises(ValueError, match="needs streamed requests"):
        summarize(run, SLO(ttft_s=0.2))


def test_peak_concurrency_from_intervals():
    serial = [RequestRecord(i, i, i + 1) for i in range(5)]  # back to back: never 2 at once
    assert max_concurrency(serial) == 1
    overlapping = [RequestRecord(i, 0.1 * i, 1 + 0.1 * i) for i in range(5)]
    assert max_concurrency(overlapping) == 5
    assert max_concurrency([]) == 0


def test_empty_metrics_are_nan_and_zero_duration_has_no_throughput():
    run = RunResult([RequestRecord(0, 0, 0, ok=False, error="refused")], duration_s=0.0)
    summary = summarize(run)
    assert summary["failed"] == 1
    assert math.isnan(summary["mean_ttft_ms"]) and math.isnan(summary["request_throughput"])


def test_negative_duration_and_unknown_metric_rejected():
    with pytest.raises(ValueError, match="duration_s"):
        RunResult([], duration_s=-1)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_values([], "latency")


def test_row_round_trip_keeps_missing_values_missing():
    record = RequestRecord(3, 0.5, 1.5, ok=False, error="timeout", itl_s=[0.1])
    assert RequestRecord.from_row(record.as_row()) == record
    assert RequestRecord.from_row(streamed(1, 0, 1, 0.1, 5, [0.2]).as_row()).ttft_s == 0.1


def test_percentile_table_reads_like_vllm_bench_serve():
    runs = [
        RunResult(
            [streamed(i, 0.0, 1.0 + c, 0.1 * c, 11, itl=[0.05] * 10) for i in range(4)],
            duration_s=2.0,
            settings={"generator": "closed", "concurrency": c},
        )
        for c in (1, 4)
    ]
    table = percentile_table(summary_frame(runs), index="concurrency")
    assert table.index.tolist() == [1, 4]
    assert table.columns.get_level_values(0).unique().tolist() == ["TTFT", "TPOT", "ITL", "E2EL"]
    assert table.columns.get_level_values(1).unique().tolist() == ["mean", "median", "p90", "p99"]
    assert table.loc[4, ("TTFT", "p99")] == pytest.approx(400.0)
    assert table.loc[1, ("E2EL", "median")] == pytest.approx(2000.0)
    assert table.loc[1, ("ITL", "mean")] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="no column 'rate'"):
        percentile_table(summary_frame(runs), index="rate")


def test_retried_requests_and_chunk_counted_tokens_are_counted_in_the_summary():
    records = [
        streamed(0, 0.0, 1.0, ttft=0.1, tokens=5),
        RequestRecord(1, 0.0, 1.0, streamed=True, ttft_s=0.1, output_tokens=9, attempts=2),
        RequestRecord(2, 0.0, 1.0, streamed=True, ttft_s=0.1, output_tokens=4, tokens_from_chunks=True),
    ]
    summary = summarize(RunResult(records, duration_s=1.0))
    assert summary["retried_requests"] == 1
    assert summary["tokens_from_chunks"] == 1
    assert summary["total_output_tokens"] == 18
    frame = requests_frame(RunResult(records, duration_s=1.0))
    assert frame["attempts"].tolist() == [1, 2, 1]
    assert frame["tokens_from_chunks"].tolist() == [False, False, True]


def test_client_queue_time_is_summarised_and_kept_out_of_ttft_and_e2el():
    records = [
        RequestRecord(i, start, start + 1.0, streamed=True, ttft_s=0.1, output_tokens=2, client_queue_s=start)
        for i, start in enumerate([0.0, 0.0, 1.0, 1.0])
    ]
    summary = summarize(RunResult(records, duration_s=2.0))
    assert summary["mean_client_queue_ms"] == pytest.approx(500.0)
    assert summary["p99_client_queue_ms"] == pytest.approx(1000.0)
    assert summary["mean_e2el_ms"] == pytest.approx(1000.0)  # from the send, as in vLLM
    assert summary["mean_ttft_ms"] == pytest.approx(100.0)


def test_round_trip_keeps_attempts_queue_time_and_the_chunk_count_flag():
    record = RequestRecord(3, 0.0, 1.0, attempts=2, client_queue_s=0.25, tokens_from_chunks=True)
    assert RequestRecord.from_row(record.as_row()) == record
    old_row = {k: v for k, v in record.as_row().items() if k not in ("attempts", "client_queue_s")}
    old = RequestRecord.from_row({k: v for k, v in old_row.items() if k != "tokens_from_chunks"})
    assert (old.attempts, old.client_queue_s, old.tokens_from_chunks) == (1, None, False)
