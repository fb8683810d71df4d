"""Prometheus metrics with vLLM's names and labels, in a registry of their own per server.

Latencies are wall-clock seconds as the simulator measures them (with `time_scale` 10 they are
ten times shorter than the modelled GPU's). `vllm_sim:*` metrics are the simulator's own: engine
lag (steps that ended later than the model says) must never pass for GPU behaviour.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")


class SimMetrics:
    """The metrics one simulator process exposes on /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str, config: dict) -> None:
        self.registry = registry = CollectorRegistry()
        labels = ("engine", "model_name")
        values = ("0", model_name)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=registry).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=registry).labels(*values)

        def histogram(name: str, doc: str, buckets: tuple) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry).labels(*values)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            ("engine", "finished_reason", "model_name"),
            registry=registry,
        )
        self.success = {r: success.labels("0", r, model_name) for r in FINISHED_REASONS}
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS,
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            E2E_BUCKETS,
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            E2E_BUCKETS,
        )
        self.steps = counter("vllm_sim:engine_steps", "Engine steps run by the simulator.")
        self.lag_steps = counter(
            "vllm_sim:engine_lag_steps",
            "Engine steps that ended later than the latency model says (simulator overload).",
        )
        self.lag_seconds = counter(
            "vllm_sim:engine_lag_seconds",
            "Total time by which late engine steps missed their modelled end (wall seconds).",
        )
        self.faults = Counter(
            "vllm_sim:injected_faults",
            "Faults injected on purpose (--fail-rate, --rate-limit-rate, ...).",
            ("kind",),
            registry=registry,
        )
        info = Info("vllm_sim:config", "Simulator settings.", registry=registry)
        info.info({k: str(v) for k, v in config.items()})

    def render(self) -> bytes:
        return generate_latest(self.registry)
