"""How much load the simulator itself can carry before it stops following its own model.

Three measurements, load from client processes separate from the server (raw httpx, lines only):

1. Streamed ITL on the `l4` profile at rising concurrency: the highest concurrency at which the
   measured mean ITL stays within 10% of `predict()`, and the SSE chunks per second emitted there.
2. The HTTP stack's ceiling for streaming: chunks per second on `instant` (no model time at all).
3. Non-streamed requests per second on `instant`.
4. TTFT counted from arrival: a simulator whose handler burns 40 ms per request (l4 slowed 4x, a
   64 ms frontend) against predict() and its own /metrics, target within 10% (this was a test;
   a loaded machine failed it, so the tests keep only loose bounds and the figure is here).

Section 1 prints TTFT and ITL errors against predict(); the ITL within 10% is its target. This is
the home of the live engine-vs-model accuracy check: tests/test_sim_timing.py asserted it once
(within 10% below and 5x above predict(), at concurrency 1 and 32) and failed on a busy machine; the
tests now keep only the lower bounds no slowdown can break (the engine never runs faster than its
model; the handler's own work is absorbed, with a margin of seconds).

Run: `python -m benchmarks.bench_sim` (a few minutes).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass

import httpx
import psutil

from helpers.sim import predict, serve
from helpers.sim.tokens import count_prompt_tokens

CLIENT_PROCESSES = 2
WARMUP_S = 1.5
MEASURE_S = 5.0
ITL_TOLERANCE = 0.10
L4_CONCURRENCIES = (1, 8, 32, 64, 128, 256)
OUTPUT_TOKENS = 128
BUSY_S, BUSY_TIME_SCALE, BUSY_ROUNDS = 0.040, 0.25, 10
MESSAGES = [{"role": "user", "content": "Summarise: " + " ".join(["batching"] * 240)}]
STREAM_PAYLOAD = {
    "messages": MESSAGES,
    "max_tokens": OUTPUT_TOKENS,
    "ignore_eos": True,
    "stream": True,
    "chat_template_kwargs": {"enable_thinking": False},
}


@dataclass
class RequestRecord:
    start: float
    end: float
    ttft: float
    tokens: int
    mean_itl: float


# ---- load generation (runs in client processes) -------------------------------------------


async def _stream_once(client: httpx.AsyncClient, payload: dict) -> RequestRecord:
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {") or '"choices":[]' in line:
                continue
            now = time.perf_counter()
            if '"role"' in line:
                continue
            if tokens == 0:
                first = now
            last = now
            tokens += 1
    itl = (last - first) / (tokens - 1) if tokens > 1 else 0.0
    return RequestRecord(start, last, first - start, tokens, itl)


async def _post_once(client: httpx.AsyncClient, payload: dict) -> RequestRecord:
    start = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=payload)
    response.raise_for_status()
    end = time.perf_counter()
    return RequestRecord(start, end, end - start, 1, 0.0)


async def _closed_loop(root_url: str, payload: dict, workers: int, stop_at: float) -> list:
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    call = _stream_once if payload.get("stream") else _post_once
    async with httpx.AsyncClient(base_url=root_url, limits=limits, timeout=120) as client:

        async def worker() -> list[RequestRecord]:
            records = []
            while time.perf_counter() < stop_at:
                records.append(await call(client, payload))
            return records

        per_worker = await asyncio.gather(*(worker() for _ in range(workers)))
    return [record for records in per_worker for record in records]


def _client_process(root_url: str, payload: dict, workers: int, stop_at_wall: float, queue) -> None:
    # perf_counter is per-process; convert the shared wall-clock deadline.
    stop_at = time.perf_counter() + (stop_at_wall - time.time())
    records = asyncio.run(_closed_loop(root_url, payload, workers, stop_at))
    offset = time.time() - time.perf_counter()
    queue.put([(r.start + offset, r.end + offset, r.ttft, r.tokens, r.mean_itl) for r in records])


def run_load(
    root_url: str,
    payload: dict,
    concurrency: int,
    warmup_s: float = WARMUP_S,
    measure_s: float = MEASURE_S,
) -> tuple[list[RequestRecord], float]:
    """Closed loop of `concurrency` from CLIENT_PROCESSES processes: the requests that started
    after the warm-up and ended within the run, and the length of the measured window."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    begin = time.time()
    steady_from = begin + 2.0 + warmup_s  # 2 s: startup of the spawned processes
    stop_at = steady_from + measure_s
    shares = [
        concurrency // CLIENT_PROCESSES + (i < concurrency % CLIENT_PROCESSES)
        for i in range(CLIENT_PROCESSES)
    ]
    processes = [
        context.Process(target=_client_process, args=(root_url, payload, share, stop_at, queue))
        for share in shares
        if share
    ]
    for process in processes:
        process.start()
    rows = [row for _ in processes for row in queue.get()]
    for process in processes:
        process.join()
    records = [RequestRecord(*row) for row in rows]
    measured = [r for r in records if r.start >= steady_from and r.end <= stop_at]
    return measured, measure_s


# ---- measurement ---------------------------------------------------------------------------


def scrape(root_url: str, name: str) -> float:
    """One sample of the server's /metrics, summed over its labels (0 when absent)."""
    # Imported here: the spawned client processes import this module and need none of helpers.bench.
    from helpers.server_metrics import scrape_metrics

    return scrape_metrics(root_url).get(name, 0.0)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure_streaming(profile: str, concurrency: int, expected_e2e_s: float = 0.0, **serve_args) -> dict:
    """Stream at `concurrency`; warm-up and window grow with the expected request duration so
    that every level is measured in steady state."""
    warmup_s, measure_s = max(WARMUP_S, 1.5 * expected_e2e_s), max(MEASURE_S, 3 * expected_e2e_s)
    with serve(profile=profile, **serve_args) as server:
        tokens_before = scrape(server.root_url, "vllm:generation_tokens_total")
        lag_before = scrape(server.root_url, "vllm_sim:engine_lag_seconds_total")
        cpu_before, began = cpu_seconds(server.pid), time.time()
        records, _ = run_load(server.root_url, STREAM_PAYLOAD, concurrency, warmup_s, measure_s)
        elapsed, cpu = time.time() - began, cpu_seconds(server.pid) - cpu_before
        tokens = scrape(server.root_url, "vllm:generation_tokens_total") - tokens_before
        lag = scrape(server.root_url, "vllm_sim:engine_lag_seconds_total") - lag_before
    complete = [r for r in records if r.tokens == OUTPUT_TOKENS]
    # Closed loop in steady state (Little's law): every stream receives one request's tokens
    # per mean request duration.
    mean_duration = statistics.mean(r.end - r.start for r in complete)
    return {
        "concurrency": concurrency,
        "requests": len(complete),
        "mean_itl_s": statistics.mean(r.mean_itl for r in complete),
        "mean_ttft_s": statistics.mean(r.ttft for r in complete),
        "chunks_per_s": concurrency * statistics.mean(r.tokens for r in complete) / mean_duration,
        "server_tokens_per_s": tokens / elapsed,
        "server_cpu_per_chunk_s": cpu / tokens if tokens else float("nan"),
        "engine_lag_s": lag,
    }


def measure_non_streamed(concurrency: int) -> dict:
    payload = {**STREAM_PAYLOAD, "stream": False, "max_tokens": 16}
    with serve(profile="instant") as server:
        cpu_before = cpu_seconds(server.pid)
        records, _ = run_load(server.root_url, payload, concurrency)
        total = scrape(server.root_url, "vllm:e2e_request_latency_seconds_count")
        cpu = cpu_seconds(server.pid) - cpu_before
    span = max(r.end for r in records) - min(r.start for r in records)
    return {
        "concurrency": concurrency,
        "requests": len(records),
        "requests_per_s": len(records) / span,
        "server_cpu_per_request_s": cpu / total if total else float("nan"),
    }


def measure_busy_handler_ttft() -> dict:
    """Client and /metrics TTFT of a simulator whose handler burns ``BUSY_S``, against predict()."""
    from benchmarks.slow_handler import slow_handler_simulator, ttft_client_and_server

    payload = {"messages": MESSAGES, "max_tokens": 2, "ignore_eos": True, "stream": True}
    with slow_handler_simulator(busy_s=BUSY_S, time_scale=BUSY_TIME_SCALE) as root_url:
        client_ttft, server_ttft = ttft_client_and_server(root_url, payload, rounds=BUSY_ROUNDS)
    prompt_tokens = count_prompt_tokens(MESSAGES)  # one prompt, sent again: prefix caching serves it
    model = predict("l4", 1, prompt_tokens, 2, time_scale=BUSY_TIME_SCALE, prefix_tokens=prompt_tokens)
    return {
        "client_ttft_s": client_ttft,
        "server_ttft_s": server_ttft,
        "model_ttft_s": model.ttft_s,
        "client_error": client_ttft / model.ttft_s - 1,
        "server_error": server_ttft / client_ttft - 1,
    }


# ---- reporting -----------------------------------------------------------------------------


def main() -> dict:
    """Run the three measurements, print them, and return the figures."""
    from benchmarks.report import machine_line  # here: the spawned client processes import this module

    print(
        f"Machine: {machine_line()}; load average {os.getloadavg()[0]:.1f} at start; clients: "
        f"{CLIENT_PROCESSES} processes, raw httpx"
    )
    prompt_tokens = count_prompt_tokens(MESSAGES, enable_thinking=False)
    print(f"\n1. l4 profile, streamed, {prompt_tokens} prompt / {OUTPUT_TOKENS} output tokens")
    print(
        f"{'conc':>5} {'ITL ms':>8} {'model ms':>9} {'error':>7} {'TTFT ms':>8} "
        f"{'model ms':>9} {'error':>7} {'chunks/s':>9} {'lag s':>6} {'CPU us/chunk':>13}"
    )
    best = None
    for concurrency in L4_CONCURRENCIES:
        model = predict("l4", concurrency, prompt_tokens, OUTPUT_TOKENS, prefix_tokens=prompt_tokens)
        row = measure_streaming("l4", concurrency, expected_e2e_s=model.e2e_s)
        error = row["mean_itl_s"] / model.itl_s - 1
        print(
            f"{concurrency:>5} {row['mean_itl_s'] * 1e3:>8.2f} {model.itl_s * 1e3:>9.2f} "
            f"{error:>+7.1%} {row['mean_ttft_s'] * 1e3:>8.1f} {model.ttft_s * 1e3:>9.1f} "
            f"{row['mean_ttft_s'] / model.ttft_s - 1:>+7.1%} "
            f"{row['chunks_per_s']:>9,.0f} {row['engine_lag_s']:>6.2f} "
            f"{row['server_cpu_per_chunk_s'] * 1e6:>13.1f}"
        )
        if abs(error) <= ITL_TOLERANCE:
            best = row
        else:
            break
    if best:
        print(
            f"=> highest concurrency within {ITL_TOLERANCE:.0%} of the model: "
            f"{best['concurrency']}, {best['chunks_per_s']:,.0f} chunks/s emitted"
        )
    else:
        print("=> ITL is off the model by more than 10% even at the lowest concurrency")

    print("\n2. HTTP stack ceiling: instant profile, streamed")
    ceiling = max((measure_streaming("instant", c) for c in (16, 64)), key=lambda r: r["chunks_per_s"])
    per_chunk = ceiling["server_cpu_per_chunk_s"]
    print(
        f"   {ceiling['chunks_per_s']:,.0f} chunks/s at concurrency {ceiling['concurrency']}; "
        f"server CPU {per_chunk * 1e6:.1f} us per chunk = {1 / per_chunk:,.0f} chunks/s "
        "per fully used core"
    )

    print("\n3. instant profile, non-streamed (16 output tokens)")
    non_streamed = max((measure_non_streamed(c) for c in (16, 64)), key=lambda r: r["requests_per_s"])
    per_request = non_streamed["server_cpu_per_request_s"]
    print(
        f"   {non_streamed['requests_per_s']:,.0f} requests/s at concurrency "
        f"{non_streamed['concurrency']}; server CPU {per_request * 1e6:.0f} us per request = "
        f"{1 / per_request:,.0f} requests/s per fully used core"
    )
    print(
        f"\n4. TTFT from arrival: l4 at time scale {BUSY_TIME_SCALE}, the handler burns "
        f"{BUSY_S * 1e3:.0f} ms per request (absorbed in the frontend time, not added), "
        f"{BUSY_ROUNDS} requests one after another"
    )
    busy = measure_busy_handler_ttft()
    print(
        f"   client TTFT {busy['client_ttft_s'] * 1e3:.1f} ms, model {busy['model_ttft_s'] * 1e3:.1f} ms "
        f"({busy['client_error']:+.1%}), /metrics {busy['server_ttft_s'] * 1e3:.1f} ms "
        f"({busy['server_error']:+.1%} of the client's); target within {ITL_TOLERANCE:.0%}: "
        f"{'met' if max(abs(busy['client_error']), abs(busy['server_error'])) <= ITL_TOLERANCE else 'MISSED'}"
    )
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f} (other processes share the cores)")
    return {"l4": best, "stream_ceiling": ceiling, "non_streamed": non_streamed, "busy_handler": busy}


if __name__ == "__main__":
    main()
