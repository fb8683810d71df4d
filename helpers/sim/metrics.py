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
PREEMPTION_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
PREFILL_KV_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
CACHE_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
# vllm:cache_config_info's labels as vLLM 0.32 writes them; the simulator fills in its own values
# for the KV cache's size and prefix caching, the rest are vLLM's defaults as recorded.
CACHE_CONFIG_DEFAULTS = {
    "_block_size_resolved": "True",
    "cache_dtype": "auto",
    "cache_hit_alignment_tokens": "None",
    "enable_mamba_shared_prefix_checkpoint": "False",
    "hash_block_size": "None",
    "is_attention_free": "False",
    "kv_cache_dtype_skip_layers": "[]",
    "kv_cache_layout": "None",
    "kv_offloading_backend": "native",
    "kv_offloading_size": "None",
    "kv_sharing_fast_prefill": "False",
    "mamba_block_size": "None",
    "mamba_cache_dtype": "auto",
    "mamba_cache_mode": "none",
    "mamba_page_size_padded": "None",
    "mamba_ssm_cache_dtype": "float32",
    "num_cpu_blocks": "None",
    "prefix_cache_retention_interval": "0",
    "prefix_caching_hash_algo": "sha256",
    "prefix_match_unit": "None",
    "replayssm_buffer_len": "16",
    "skip_page_size_padded": "None",
    "sliding_window": "None",
    "swa_bounded_replay": "True",
    "use_kda_recoverssm": "False",
    "use_replayssm": "False",
}


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
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        counter(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector cross-instance cache sharing, in terms of "
            "number of queried tokens.",
        )
        counter(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector cross-instance cache sharing, in terms of "
            "number of cached tokens.",
        )
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens_cached = counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."
        )
        by_source = Counter(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host "
            "(offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or "
            "external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + "
            "vllm:external_prefix_cache_hits.",
            ("engine", "model_name", "source"),
            registry=registry,
        )
        sources = {source: by_source.labels("0", model_name, source) for source in CACHE_SOURCES}
        self.prompt_tokens_cached_device = sources["device"]
        self.request_preemptions = histogram(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            PREEMPTION_BUCKETS,
        )
        self.prefill_kv_computed = histogram(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            PREFILL_KV_BUCKETS,
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

    def set_cache_config(
        self,
        *,
        block_size: int,
        num_gpu_blocks: int,
        override: int | None,
        enable_prefix_caching: bool,
        gpu_memory_utilization: float,
        kv_cache_memory_bytes: int,
        max_model_len: int,
    ) -> None:
        """vllm:cache_config_info, with the label set vLLM 0.32 writes."""
        size_tokens = num_gpu_blocks * block_size
        labels = {
            **CACHE_CONFIG_DEFAULTS,
            "block_size": str(block_size),
            "effective_attention_block_size": str(block_size),
            "enable_prefix_caching": str(enable_prefix_caching),
            "gpu_memory_utilization": str(gpu_memory_utilization),
            "kv_cache_max_concurrency": str(round(size_tokens / max_model_len, 2)),
            "kv_cache_memory_bytes": str(kv_cache_memory_bytes),
            "kv_cache_size_tokens": str(size_tokens),
            "num_gpu_blocks": str(num_gpu_blocks),
            "num_gpu_blocks_override": str(override),
            "user_specified_block_size": str(block_size != 16),
        }
        names = [*sorted(labels), "engine"]
        gauge = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            names,
            registry=self.registry,
        )
        gauge.labels(**labels, engine="0").set(1.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
