"""Latency profiles: how long one engine step takes on a given GPU (or CPU), fitted to measurements.

A step runs every sequence in the batch once: each decoding sequence gets one token, prefilling
sequences advance by a chunk of their prompt. Its duration is linear in the batch:

    step_time = step_base_s + per_seq_s * sequences_in_batch + prefill_per_token_s * prefill_tokens

plus a fixed `frontend_s` per request (chat template, tokenisation, HTTP) before it reaches the
scheduler. Sources and fits are in each profile's `source` and in docs/simulator.md.

Example:
    >>> PROFILES["l4"].step_time(running=1, prefill_tokens=0)  # one decoding sequence
    0.0050995
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from helpers.sim.kv_cache import QWEN3_06B_KV_BYTES_PER_TOKEN

GIB = 1024**3
# Qwen3-0.6B in bf16: 28 layers x (attention q/k/v/o 1024x2048 + 2 x 1024x1024 + 2048x1024 = 6.29M,
# MLP 3 x 1024x3072 = 9.44M) = 440M, plus the 151,936 x 1,024 embedding (155.6M, tied to the LM
# head): 596M parameters x 2 bytes = 1.11 GiB of weights.
QWEN3_06B_WEIGHTS_GIB = 1.11


@dataclass(frozen=True)
class Profile:
    """Cost model of one GPU serving Qwen3-0.6B with vLLM (all times in seconds)."""

    name: str
    step_base_s: float
    per_seq_s: float
    prefill_per_token_s: float
    frontend_s: float
    max_num_seqs: int
    max_num_batched_tokens: int
    estimate: bool
    source: str
    gpu_memory_gib: float = 0.0
    """The GPU's memory as CUDA reports it (a little under the nominal size); 0: not a GPU."""
    overhead_gib: float = 1.0
    """ESTIMATE: what vLLM's memory profiling sets aside besides the weights (activation peak of a
    `max_num_batched_tokens` step, CUDA graphs, non-torch memory)."""
    kv_cache_gib: float | None = None
    """KV cache size given outright (vLLM's CPU build: `VLLM_CPU_KVCACHE_SPACE`); else derived."""

    def step_time(self, running: int, prefill_tokens: int) -> float:
        """Duration of one engine step with `running` sequences and `prefill_tokens` prompt tokens."""
        if running <= 0 and prefill_tokens <= 0:
            return 0.0
        return round(
            self.step_base_s + self.per_seq_s * running + self.prefill_per_token_s * prefill_tokens,
            9,
        )

    def kv_cache_bytes(self, gpu_memory_utilization: float = 0.9) -> int:
        """KV cache memory as vLLM sizes it: the GPU's memory x `gpu_memory_utilization`, less the
        weights and the profiled overhead (or `kv_cache_gib` when given)."""
        if self.kv_cache_gib is not None:
            return int(self.kv_cache_gib * GIB)
        if self.gpu_memory_gib <= 0:
            raise ValueError(f"profile {self.name!r} gives neither gpu_memory_gib nor kv_cache_gib")
        free = self.gpu_memory_gib * gpu_memory_utilization - QWEN3_06B_WEIGHTS_GIB - self.overhead_gib
        if free <= 0:
            raise ValueError(
                f"gpu_memory_utilization {gpu_memory_utilization} leaves no memory for the KV cache on "
                f"{self.name} ({self.gpu_memory_gib} GiB): raise it (vLLM's default is 0.9)"
            )
        return int(free * GIB)

    def num_gpu_blocks(self, block_size: int = 16, gpu_memory_utilization: float = 0.9) -> int:
        """KV blocks of `block_size` tokens of Qwen3-0.6B (114,688 bytes a token) that fit."""
        return self.kv_cache_bytes(gpu_memory_utilization) // (block_size * QWEN3_06B_KV_BYTES_PER_TOKEN)

    def as_dict(self) -> dict:
        return asdict(self)


_L4_SOURCE = (
    "Fitted to the L4 sweep in calibration.md (Qwen2.5-0.5B BF16, vLLM 0.23, ai.wmx.dev, 256 in / "
    "128 out, closed loop): ITL p50 5.1/5.5/6.0/7.1 ms at 1/8/16/32 concurrent requests is linear "
    "in the batch (5.035 ms + 0.0645 ms per sequence); TTFT p50 27/61/104/135 ms is reproduced by "
    "a 16 ms frontend plus chunked prefill at 0.022 ms per prompt token (2048-token steps)."
)
_T4_SOURCE = (
    "ESTIMATE, no published T4 measurement: L4 decode costs scaled by memory bandwidth "
    "(300/320 GB/s, decode of a 0.6B model is memory-bound) and prefill scaled by FP16 tensor "
    "throughput (121/65 TFLOPS); frontend as on L4."
)
_A100_SOURCE = (
    "Fitted to tenstorrent/tt-inference-server issue #340 (A100, Qwen3-0.6B, concurrency 1): "
    "TPOT 4.2 ms; TTFT 12.4 ms at 128 prompt tokens and 21 ms at 1024 give 0.0096 ms per prompt "
    "token and a 7 ms frontend. Growth per sequence is an ESTIMATE: L4's slope scaled by "
    "memory bandwidth (300/1555 GB/s)."
)
_H100_SOURCE = (
    "Fitted to ovg-project/kvcached bench_layout (H100, Qwen3-0.6B, vLLM 0.19): ITL p50 2.0 ms "
    "with ~16-31 in flight and 4.5 ms with ~500 running give 1.9 ms + 0.0052 ms per sequence; "
    "mean TTFT 39 ms at 16 req/s (512 prompt tokens) gives a 30 ms frontend; prefill 0.0035 ms "
    "per token is an ESTIMATE (A100's scaled by tensor throughput). vLLM batch defaults for "
    ">= 70 GiB GPUs: max_num_seqs 1024, max_num_batched_tokens 8192."
)

_CPU_SOURCE = (
    "Measured, not published: vLLM 0.32's CPU build (vllm-cpu) on a 2-vCPU Xeon with AVX512-BF16 "
    "(the kit's development machine kind, 2026-12-07), serving a randomly initialised model with "
    "Qwen3-0.6B's dimensions (28 layers, hidden 1024, 16/8 heads, head_dim 128, bf16, small "
    "vocabulary), 256 prompt / 64 output tokens streamed with ignore_eos at concurrency 1-16: median "
    "ITL 34.6/40.1/51.4/71.7/118.7 ms at 1/2/4/8/16 fits 28.7 ms + 5.58 ms per running sequence; "
    "prefill 2.77 ms per prompt token (TTFT 288 ms at 128 tokens, 2,770 ms at 1,024); no separate "
    "frontend. The CPU build's batch defaults: max_num_seqs 128, max_num_batched_tokens 2048. "
    "benchmarks/bench_cpu_profile.py re-measures and re-fits it (docs/vllm_cpu.md)."
)

PROFILES: dict[str, Profile] = {
    "t4": Profile(
        name="t4",
        step_base_s=0.004720,
        per_seq_s=0.0000605,
        prefill_per_token_s=0.000041,
        frontend_s=0.016,
        max_num_seqs=256,
        max_num_batched_tokens=2048,
        estimate=True,
        source=_T4_SOURCE,
        # KV: 14.75 GiB x 0.9 = 13.28 - 1.11 weights - 1.0 overhead = 11.17 GiB
        # = 11.99e9 B / 114,688 B a token = 104,529 tokens, 6,533 blocks of 16.
        gpu_memory_gib=14.75,
        overhead_gib=1.0,
    ),
    "l4": Profile(
        name="l4",
        step_base_s=0.005035,
        per_seq_s=0.0000645,
        prefill_per_token_s=0.000022,
        frontend_s=0.016,
        max_num_seqs=256,
        max_num_batched_tokens=2048,
        estimate=False,
        source=_L4_SOURCE,
        # KV: 22.05 GiB x 0.9 = 19.85 - 1.11 weights - 1.0 overhead = 17.73 GiB
        # = 19.04e9 B / 114,688 B a token = 166,040 tokens, 10,377 blocks of 16.
        gpu_memory_gib=22.05,
        overhead_gib=1.0,
    ),
    "a100": Profile(
        name="a100",
        step_base_s=0.0041875,
        per_seq_s=0.0000125,
        prefill_per_token_s=0.0000096,
        frontend_s=0.00697,
        max_num_seqs=256,
        max_num_batched_tokens=2048,
        estimate=False,
        source=_A100_SOURCE,
        # A100 40 GB (batch defaults of a < 70 GiB GPU). KV: 39.39 GiB x 0.9 = 35.45 - 1.11 weights
        # - 1.0 overhead = 33.34 GiB = 35.80e9 B / 114,688 B a token = 312,147 tokens, 19,509 blocks.
        gpu_memory_gib=39.39,
        overhead_gib=1.0,
    ),
    "h100": Profile(
        name="h100",
        step_base_s=0.0019,
        per_seq_s=0.0000052,
        prefill_per_token_s=0.0000035,
        frontend_s=0.030,
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
        estimate=False,
        source=_H100_SOURCE,
        # H100 80 GB. KV: 79.11 GiB x 0.9 = 71.20 - 1.11 weights - 1.5 overhead (8192-token steps)
        # = 68.59 GiB = 73.65e9 B / 114,688 B a token = 642,149 tokens, 40,134 blocks of 16.
        gpu_memory_gib=79.11,
        overhead_gib=1.5,
    ),
    "cpu": Profile(
        name="cpu",
        step_base_s=0.0287,
        per_seq_s=0.00558,
        prefill_per_token_s=0.00277,
        frontend_s=0.0,
        max_num_seqs=128,
        max_num_batched_tokens=2048,
        estimate=False,
        source=_CPU_SOURCE,
        # KV: VLLM_CPU_KVCACHE_SPACE=4 GiB, as the measured server (facts.md: 37,376 tokens in 292
        # blocks of 128) = 4,294,967,296 B / 114,688 B a token = 37,449 tokens (the CPU build's
        # blocks are 128 tokens: serve with block_size=128 to match it).
        kv_cache_gib=4.0,
    ),
    "instant": Profile(
        name="instant",
        step_base_s=0.0,
        per_seq_s=0.0,
        prefill_per_token_s=0.0,
        frontend_s=0.0,
        max_num_seqs=256,
        max_num_batched_tokens=2048,
        estimate=False,
        source="No latency at all: for unit tests where timing is not the point.",
        gpu_memory_gib=22.05,  # L4's KV cache
        overhead_gib=1.0,
    ),
}


def get_profile(name: str) -> Profile:
    """The profile called `name`, or a ValueError listing the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
