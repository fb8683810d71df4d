"""Per-run figures computed from request records, as ``vllm bench serve`` defines them.

Latency statistics use completed requests only; failed requests are counted in ``failed`` and kept
in :func:`requests_frame`. Summaries are in milliseconds (``mean_ttft_ms``, ``p99_itl_ms``...),
throughputs per second.

Example:
    >>> from helpers.bench.records import RequestRecord, RunResult
    >>> run = RunResult([RequestRecord(0, 0.0, 1.0, ttft_s=0.2, output_tokens=5)], duration_s=1.0)
    >>> summarize(run)["mean_tpot_ms"]
    200.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from helpers.bench.records import RequestRecord, RunResult

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
METRICS: tuple[str, ...] = ("ttft", "ttfa", "tpot", "itl", "e2el", "client_queue")
METRIC_LABELS = {
    "ttft": "TTFT",
    "ttfa": "TTFA",
    "tpot": "TPOT",
    "itl": "ITL",
    "e2el": "E2EL",
    "client_queue": "client queue",
}


@dataclass(frozen=True)
class SLO:
    """Service-level objectives for goodput, in seconds; ``None`` means no objective.

    A request is good when it completed and meets every objective given. As in vLLM, a request with a
    single output token has no TPOT and meets any TPOT objective.
    """

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2el_s: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        """True when ``record`` completed and meets every objective."""
        if not record.ok:
            return False
        if self.ttft_s is not None:
            if record.ttft_s is None:
                raise ValueError(
                    f"request {record.index} has no TTFT: a TTFT objective needs streamed requests"
                )
            if record.ttft_s > self.ttft_s:
                return False
        if self.tpot_s is not None:
            if record.ttft_s is None or record.output_tokens is None:
                raise ValueError(
                    f"request {record.index} has no TPOT: a TPOT objective needs streamed requests "
                    "with usage (stream_options include_usage)"
                )
            tpot = record.tpot_s or 0.0
            if tpot > self.tpot_s:
                return False
        return self.e2el_s is None or record.latency_s <= self.e2el_s


def max_concurrency(records: Iterable[RequestRecord]) -> int:
    """The largest number of requests in flight at once (a request ending at t frees its slot)."""
    events = []
    for record in records:
        events.append((record.start_s, 1))
        events.append((record.end_s, -1))
    events.sort(key=lambda event: (event[0], event[1]))
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    return peak


def metric_values(records: Sequence[RequestRecord], metric: str) -> np.ndarray:
    """Values in seconds of one metric over completed requests (ITL: every gap of every request)."""
    done = [r for r in records if r.ok]
    if metric == "ttft":
        values = [r.ttft_s for r in done]
    elif metric == "ttfa":
        values = [r.ttfa_s for r in done]
    elif metric == "tpot":
        values = [r.tpot_s for r in done]
    elif metric == "e2el":
        values = [r.latency_s for r in done]
    elif metric == "itl":
        values = [gap for r in done for gap in r.itl_s]
    elif metric == "client_queue":
        values = [r.client_queue_s for r in done]
    else:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return np.array([v for v in values if v is not None], dtype=float)


def summarize(run: RunResult, slo: SLO | None = None) -> dict[str, Any]:
    """The per-run figures as one flat dict (settings first, then counts, throughputs, latencies).

    Besides ``vllm bench serve``'s figures: ``retried_requests`` (sent twice because the server
    had closed their reused connection), ``tokens_from_chunks`` (completed streams without
    ``usage`` whose output tokens are a count of chunks) and ``*_client_queue_ms`` (time waiting in
    the client for a concurrency slot, not part of TTFT or E2EL).
    """
    records = run.records
    done = [r for r in records if r.ok]
    duration = run.duration_s
    input_tokens = sum(r.prompt_tokens or 0 for r in done)
    output_tokens = sum(r.output_tokens or 0 for r in done)
    summary: dict[str, Any] = {"label": run.label}
    summary.update({k: v for k, v in run.settings.items() if _is_scalar(v)})
    summary.update(
        {
            "requests": len(records),
            "completed": len(done),
            "failed": len(records) - len(done),
            "retried_requests": run.retried,
            "tokens_from_chunks": sum(r.tokens_from_chunks for r in done),
            "duration_s": duration,
            "total_input_tokens": input_tokens,
            "total_output_tokens": output_tokens,
            "request_throughput": _per_second(len(done), duration),
            "output_throughput": _per_second(output_tokens, duration),
            "total_token_throughput": _per_second(input_tokens + output_tokens, duration),
            "max_concurrent_requests": max_concurrency(records),
            "cpu_s": run.cpu_s,
            "cpu_ms_per_request": 1000 * run.cpu_s / len(records) if records else math.nan,
        }
    )
    if slo is not None:
        good = sum(slo.met_by(r) for r in records)
        summary["good_requests"] = good
        summary["request_goodput"] = _per_second(good, duration)
    for metric in METRICS:
        summary.update(_stats_ms(metric, metric_values(records, metric)))
    return summary


def requests_frame(run: RunResult) -> pd.DataFrame:
    """One row per request (failed ones included), with the run's label."""
    rows = [{"label": run.label, **r.as_row()} for r in run.records]
    return pd.DataFrame(rows, columns=["label", *_ROW_COLUMNS])


def summary_frame(runs: Iterable[RunResult], slo: SLO | None = None) -> pd.DataFrame:
    """One row per run: the table a sweep is read from."""
    return pd.DataFrame([summarize(run, slo) for run in runs])


def percentile_table(
    summary: pd.DataFrame,
    *,
    index: str = "label",
    metrics: Sequence[str] = ("ttft", "tpot", "itl", "e2el"),
    stats: Sequence[str] = ("mean", "median", "p90", "p99"),
) -> pd.DataFrame:
    """Latency statistics in ms, one row per run and a (metric, statistic) column each.

    The layout of ``vllm bench serve``'s report, one run per row: e.g.
    ``percentile_table(summary, index="concurrency").loc[16, ("TTFT", "p99")]``.
    """
    if index not in summary:
        raise ValueError(f"the summary has no column {index!r}; pick one of {', '.join(summary)}")
    columns = {
        (METRIC_LABELS.get(metric, metric), stat): summary[f"{stat}_{metric}_ms"].to_numpy()
        for metric in metrics
        for stat in stats
    }
    table = pd.DataFrame(columns, index=pd.Index(summary[index], name=index))
    table.columns.names = ["metric (ms)", "statistic"]
    return table


def _stats_ms(metric: str, values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        stats = dict.fromkeys(["mean", "median", "std", *[f"p{p}" for p in PERCENTILES]], math.nan)
    else:
        ms = values * 1000
        stats = {"mean": float(ms.mean()), "median": float(np.median(ms)), "std": float(ms.std())}
        stats.update({f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES})
    return {f"{name}_{metric}_ms": value for name, value in stats.items()}


def _per_second(count: float, duration: float) -> float:
    return count / duration if duration > 0 else math.nan


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


_ROW_COLUMNS = list(RequestRecord(0, 0.0, 0.0).as_row())
