"""What the simulator's KV cache changes, at time scale 1 (the profile's GPU), printed for the docs.

1. Prefix caching on and off, side by side (`helpers.bench.prefix.compare_prefix_caching`), on the
   `l4` profile: `vllm bench serve`'s prefix-repetition workload (4 prefixes of 1,024 tokens, 64-token
   suffixes, 64 output tokens, 64 prompts, 8 in flight) and AIPerf-style multi-turn conversations
   (16 conversations x 4 turns under a 512-token system prompt, 64-token questions and answers).
2. The KV limit: `t4` (104,528 tokens of KV cache), 128 streams of 1,000 prompt + 1,000 output tokens
   (256,000 tokens wanted): the profile's cache against one too large to run out
   (`num_gpu_blocks_override`), live and as `predict()` has it: preemptions, TTFT, E2E, throughput.

Run: `python -m benchmarks.bench_kv` (about 5 minutes).
"""

from __future__ import annotations

import pandas as pd

from helpers.bench.prefix import MultiTurn, PrefixRepetition, compare_prefix_caching, run_workload
from helpers.sim import PROFILES, predict, serve

KV_STREAMS, KV_PROMPT, KV_OUTPUT, KV_REQUESTS = 128, 1000, 1000, 256
UNLIMITED_BLOCKS = 40_000  # 640,000 tokens: more than 128 streams ever hold
COLUMNS = ["requests", "failed", "mean_ttft_ms", "p50_ttft_ms", "mean_ttft_later_turns_ms", "mean_e2e_ms",
           "output_throughput", "cached_tokens", "hit_rate", "preemptions"]  # fmt: skip


def prefix_caching() -> None:
    workloads = {
        "prefix-repetition": PrefixRepetition(
            num_prefixes=4, prefix_len=1024, suffix_len=64, output_len=64, num_prompts=64
        ),
        "multi-turn": MultiTurn(num_conversations=16, turns=4, system_len=512, user_len=64, output_len=64),
    }
    for name, workload in workloads.items():
        frame = compare_prefix_caching(workload, profile="l4", concurrency=8)
        print(f"\n1. {name} on l4, 8 in flight: {workload}")
        _print(frame[COLUMNS])


def kv_limit() -> None:
    # One prompt of exactly KV_PROMPT tokens per request, none shared (prefix caching cannot help).
    workload = PrefixRepetition(
        num_prefixes=KV_REQUESTS, prefix_len=KV_PROMPT - 20, suffix_len=4, output_len=KV_OUTPUT,
        num_prompts=KV_REQUESTS,
    )  # fmt: skip
    rows = {}
    for label, blocks in (("t4 KV cache", None), ("unlimited", UNLIMITED_BLOCKS)):
        options = {} if blocks is None else {"num_gpu_blocks_override": blocks}
        with serve(profile="t4", **options) as server:
            rows[label] = run_workload(server.base_url, server.model, workload, KV_STREAMS).summary()
        model = predict("t4", KV_STREAMS, KV_PROMPT, KV_OUTPUT, num_gpu_blocks=blocks, rounds=2)
        rows[label + " (predict)"] = {
            "mean_ttft_ms": 1000 * model.ttft_s, "mean_e2e_ms": 1000 * model.e2e_s,
            "output_throughput": model.output_throughput,  # steady state of a closed loop
            "preemptions": model.preemptions_per_request * KV_REQUESTS,
        }  # fmt: skip
    capacity = PROFILES["t4"].num_gpu_blocks(16) * 16
    print(
        f"\n2. KV limit: t4 ({capacity:,} tokens), {KV_STREAMS} streams of {KV_PROMPT} + {KV_OUTPUT} tokens, "
        f"{KV_REQUESTS} requests"
    )
    _print(pd.DataFrame.from_dict(rows, orient="index")[["mean_ttft_ms", "p50_ttft_ms", "mean_e2e_ms",
                                                          "output_throughput", "preemptions"]])  # fmt: skip


def _print(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.precision", 1):
        print(frame.to_string())


def main() -> None:
    prefix_caching()
    kv_limit()


if __name__ == "__main__":
    main()
