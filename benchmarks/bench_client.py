"""Client-side costs: CPU per request of the ways to call, throughput against the model, chunks/s.

Five measurements, each side by side in one run, the server in its own process:

1. Overhead on the ``instant`` simulator (non-streamed, 64 in flight): CPU time per request of raw
   aiohttp (the lean client), ``openai.AsyncOpenAI``, LangChain ``ainvoke`` + ``gather`` and
   ``helpers.concurrency.amap``. Target: amap adds at most 10% over ainvoke + gather (median of
   the per-round ratios).
2. The client is not the bottleneck: closed loops at concurrency 1-64 (non-streamed) on the ``l4``
   profile reach at least 95% of the throughput the simulator's model predicts. The simulator's own
   lag (steps it ended late because ITS CPU was busy) is shown next to it.
3. Streaming: SSE chunks per second one process reads through the lean client, openai and
   LangChain ``astream``, from the firehose server. Target: the lean client reads >= 100,000
   chunks per second of its own CPU (one core); the wall-clock rate is shown next to it (on a
   shared 2-core machine it is also bounded by the firehose's own core).
4. Streaming at a real server's pace: the same readers against the ``l4`` simulator at 64 streams,
   where every chunk arrives in its own network read. CPU per chunk here is what a benchmark or an
   application actually pays; the firehose figure is the ceiling.
5. The five ways to call, side by side against the firehose (32 in flight, interleaved rounds,
   medians): the raw SDK (``openai.AsyncOpenAI`` on its default transport, httpx2), the SDK on
   aiohttp (``openai.DefaultAioHttpClient``), plain ``ChatOpenAI``, the kit's ``make_chat_model``
   and the lean client. CPU per request and requests/s from non-streamed rounds; CPU per chunk and
   chunks/s from streamed rounds (chunks: the events carrying choices of the complete replies).

The last lines are a compact Markdown table of the target figures (``benchmarks.report``).

Run: ``python -m benchmarks.bench_client`` (or ``make bench`` for every benchmark).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial

import openai
import pandas as pd
from langchain_openai import ChatOpenAI

from benchmarks.report import Report, machine_line, verdict
from helpers.bench import LangChainTarget, LeanClient, run_closed_loop, summarize
from helpers.chat import make_chat_model, thinking_extra_body
from helpers.concurrency import amap
from helpers.endpoint import Endpoint
from helpers.server_metrics import metrics_delta, scrape_metrics
from helpers.sim import predict, serve
from kit_tools.firehose import serve_firehose

PROMPT = "你是谁?"
NO_THINKING = thinking_extra_body(False)
OVERHEAD_REQUESTS = 384
OVERHEAD_CONCURRENCY = 64
OVERHEAD_ROUNDS = 7
SWEEP_PROFILE = "l4"
SWEEP_CONCURRENCIES = (1, 4, 16, 64)
SWEEP_OUTPUT_TOKENS = 128
PACE_CONCURRENCY = 64
PACE_TOKENS = 64
FIREHOSE_CHUNKS = 200
LEAN_TARGET_CHUNKS_PER_CPU_S = 100_000
TABLE_ROUNDS = 5
TABLE_CONCURRENCY = 32
# requests per round (streamed, non-streamed): about a second each on a 2-core machine
TABLE_REQUESTS = {
    "raw SDK (AsyncOpenAI, httpx2)": (96, 256),
    "SDK on aiohttp (DefaultAioHttpClient)": (96, 256),
    "plain ChatOpenAI": (64, 192),
    "the kit (make_chat_model)": (64, 192),
    "lean client (LeanClient)": (320, 512),
}


async def _bounded(calls: list[Callable[[], Awaitable]], concurrency: int) -> list:
    """``asyncio.gather`` with at most ``concurrency`` calls in flight."""
    slots = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable]):
        async with slots:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def _overhead(server) -> tuple[pd.DataFrame, list[float]]:
    """CPU per request of four client stacks, rounds interleaved so noise hits all alike.

    Also returns, per round, amap's CPU over ainvoke + gather's in the same round: on a shared
    machine CPU time per request drifts by +-25% from round to round, and a ratio of neighbours
    cancels most of that drift.
    """
    endpoint = Endpoint(server.base_url, server.model, kind="simulator")
    body = {"ignore_eos": True, **NO_THINKING}
    lean = LeanClient(server.base_url, server.model, max_tokens=16, stream=False, extra_body=body)
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    model = make_chat_model(False, endpoint, max_tokens=16, max_retries=0, extra_body={"ignore_eos": True})
    prompts = [PROMPT] * OVERHEAD_REQUESTS

    async def raw_aiohttp() -> int:
        run = await run_closed_loop(lean, prompts, concurrency=OVERHEAD_CONCURRENCY)
        return run.completed

    async def openai_sdk() -> int:
        def call():
            return sdk.chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=16,
                extra_body=body,
            )  # fmt: skip

        replies = await _bounded([call] * OVERHEAD_REQUESTS, OVERHEAD_CONCURRENCY)
        return sum(reply.usage.completion_tokens == 16 for reply in replies)

    async def langchain_gather() -> int:
        replies = await _bounded([lambda: model.ainvoke(PROMPT)] * OVERHEAD_REQUESTS, OVERHEAD_CONCURRENCY)
        return sum(reply.usage_metadata["output_tokens"] == 16 for reply in replies)

    async def helpers_amap() -> int:
        outcomes = await amap(
            model, prompts, concurrency=OVERHEAD_CONCURRENCY, progress=False, accept_truncated=True
        )  # ignore_eos: every reply is cut at max_tokens on purpose
        return sum(outcome.ok for outcome in outcomes)

    ways = {
        "raw aiohttp (lean client)": raw_aiohttp,
        "openai AsyncOpenAI": openai_sdk,
        "LangChain ainvoke + gather": langchain_gather,
        "helpers amap": helpers_amap,
    }
    for way in ways.values():  # warm-up: connections, imports, caches
        await way()
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    rate: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(OVERHEAD_ROUNDS):
        for name, way in ways.items():
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            completed = await way()
            cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
            if completed != OVERHEAD_REQUESTS:
                raise RuntimeError(f"{name}: only {completed} of {OVERHEAD_REQUESTS} completed")
            cpu[name].append(1000 * cpu_s / OVERHEAD_REQUESTS)
            rate[name].append(OVERHEAD_REQUESTS / wall_s)
    await sdk.close()
    await lean.aclose()
    frame = pd.DataFrame(
        {
            "client": list(ways),
            "cpu_ms_per_request": [statistics.median(cpu[name]) for name in ways],
            "requests_per_s": [statistics.median(rate[name]) for name in ways],
        }
    )
    ratios = [
        amap_ms / gather_ms
        for amap_ms, gather_ms in zip(cpu["helpers amap"], cpu["LangChain ainvoke + gather"], strict=True)
    ]
    return frame, ratios


async def _not_bottleneck(server) -> pd.DataFrame:
    """Closed loops, non-streamed, lean and LangChain, against the model's own prediction."""
    endpoint = Endpoint(server.base_url, server.model, kind="simulator")
    body = {"ignore_eos": True, **NO_THINKING}
    tokens = SWEEP_OUTPUT_TOKENS
    targets = {
        "lean": LeanClient(server.base_url, server.model, max_tokens=tokens, stream=False, extra_body=body),
        "langchain": LangChainTarget(
            make_chat_model(
                False, endpoint, max_tokens=tokens, max_retries=0, extra_body={"ignore_eos": True}
            )
        ),
    }
    rows = []
    for concurrency in SWEEP_CONCURRENCIES:
        requests = max(8, 4 * concurrency)
        for path, target in targets.items():
            await run_closed_loop(target, [PROMPT] * concurrency, concurrency=concurrency)  # warm-up
            before = scrape_metrics(server.root_url)
            run = await run_closed_loop(target, [PROMPT] * requests, concurrency=concurrency)
            server_view = metrics_delta(before, scrape_metrics(server.root_url))
            summary = summarize(run)
            prompt_tokens = run.records[0].prompt_tokens or 1
            ideal = predict(
                profile=SWEEP_PROFILE,
                concurrency=concurrency,
                prompt_tokens=prompt_tokens,
                output_tokens=tokens,
            )
            rows.append(
                {
                    "path": path,
                    "concurrency": concurrency,
                    "failed": summary["failed"],
                    "measured_req_per_s": summary["request_throughput"],
                    "model_req_per_s": ideal.request_throughput,
                    "ratio": summary["request_throughput"] / ideal.request_throughput,
                    "client_cpu_ms_per_request": summary["cpu_ms_per_request"],
                    "sim_late_steps": int(server_view.get("vllm_sim:engine_lag_steps_total", 0)),
                    "sim_lag_ms": 1000 * server_view.get("vllm_sim:engine_lag_seconds_total", 0.0),
                }
            )
    return pd.DataFrame(rows)


async def _streaming(server) -> pd.DataFrame:
    """Chunks per second read by one process (one event loop) through three client stacks."""
    endpoint = Endpoint(server.base_url, "firehose")
    lean = LeanClient(server.base_url, "firehose", max_tokens=server.chunks)
    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    model = make_chat_model(False, endpoint, max_tokens=server.chunks, max_retries=0)

    async def openai_stream() -> int:  # a failure propagates: the SDK has no record to keep
        stream = await sdk.chat.completions.create(
            model="firehose", messages=[{"role": "user", "content": PROMPT}], stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        return sum([1 async for chunk in stream if chunk.choices])

    async def openai_run(requests: int) -> int:
        return sum(await _bounded([openai_stream] * requests, 32))

    async def lean_run(requests: int) -> int:
        run = await run_closed_loop(lean, [PROMPT] * requests, concurrency=32)
        return sum(record.chunks for record in run.records if record.ok)

    async def langchain_run(requests: int) -> int:
        target = LangChainTarget(model, stream=True)
        run = await run_closed_loop(target, [PROMPT] * requests, concurrency=32)
        for record in run.records:
            if not record.ok:
                print(f"   LangChain stream failed: {record.error}")
        return sum(record.chunks for record in run.records if record.ok)

    ways = {
        "lean aiohttp SSE reader": (lean_run, 640),
        "openai AsyncOpenAI stream": (openai_run, 160),
        "LangChain astream (helpers.chat)": (langchain_run, 96),
    }
    rows = []
    for name, (way, requests) in ways.items():
        await way(32)  # warm-up
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        chunks = await way(requests)
        cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
        rows.append(
            {
                "client": name,
                "chunks": chunks,
                "complete_replies": chunks / (server.chunks + 1),
                "chunks_per_s": chunks / wall_s,
                "chunks_per_cpu_s": chunks / cpu_s,
                "cpu_us_per_chunk": 1e6 * cpu_s / chunks,
            }
        )
    await sdk.close()
    await lean.aclose()
    return pd.DataFrame(rows)


async def _streaming_at_pace(server) -> pd.DataFrame:
    """CPU per chunk when chunks arrive at the server's pace (one network read each)."""
    endpoint = Endpoint(server.base_url, server.model, kind="simulator")
    body = {"ignore_eos": True, **NO_THINKING}
    targets = {
        "lean aiohttp SSE reader": LeanClient(
            server.base_url, server.model, max_tokens=PACE_TOKENS, extra_body=body
        ),
        "LangChain astream (helpers.chat)": LangChainTarget(
            make_chat_model(
                False, endpoint, max_tokens=PACE_TOKENS, max_retries=0, extra_body={"ignore_eos": True}
            ),
            stream=True,
        ),
    }
    ideal = predict(
        profile=SWEEP_PROFILE, concurrency=PACE_CONCURRENCY, prompt_tokens=12, output_tokens=PACE_TOKENS
    )
    rows = []
    for name, target in targets.items():
        prompts = [PROMPT] * (2 * PACE_CONCURRENCY)
        run = await run_closed_loop(target, prompts, concurrency=PACE_CONCURRENCY, warmup=PACE_CONCURRENCY)
        chunks = sum(record.chunks for record in run.records if record.ok)
        summary = summarize(run)
        rows.append(
            {
                "client": name,
                "failed": run.failed,
                "chunks_per_s": chunks / run.duration_s,
                "cpu_us_per_chunk": 1e6 * run.cpu_s / chunks,
                "client_cores": run.cpu_s / run.duration_s,
                "of_model_throughput": summary["output_throughput"] / ideal.output_throughput,
            }
        )
    return pd.DataFrame(rows)


Call = Callable[[bool], Awaitable[bool]]  # (streamed?) -> the reply came back complete


async def _client_table(server) -> pd.DataFrame:
    """The five ways to call against the firehose, every way once per round, streamed and not."""
    tokens, per_reply = server.chunks, server.chunks + 1  # the role chunk, then one per token
    messages = [{"role": "user", "content": PROMPT}]
    endpoint = Endpoint(server.base_url, "firehose")
    raw = openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    on_aiohttp = openai.AsyncOpenAI(
        base_url=server.base_url, api_key="EMPTY", max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    plain = ChatOpenAI(
        model="firehose", base_url=server.base_url, api_key="EMPTY", max_retries=0, max_tokens=tokens,
        stream_usage=True,
    )  # fmt: skip
    kit = make_chat_model(False, endpoint, max_tokens=tokens, max_retries=0)
    lean = {
        stream: LeanClient(server.base_url, "firehose", max_tokens=tokens, stream=stream)
        for stream in (True, False)
    }

    def sdk(client: openai.AsyncOpenAI) -> Call:
        async def call(stream: bool) -> bool:
            if not stream:
                reply = await client.chat.completions.create(
                    model="firehose", messages=messages, max_tokens=tokens
                )
                return reply.usage.completion_tokens == tokens
            events = await client.chat.completions.create(
                model="firehose", messages=messages, max_tokens=tokens, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            return sum([1 async for chunk in events if chunk.choices]) == per_reply

        return call

    def langchain(model) -> Call:
        async def call(stream: bool) -> bool:
            if not stream:
                return (await model.ainvoke(PROMPT)).usage_metadata["output_tokens"] == tokens
            usage = [chunk.usage_metadata async for chunk in model.astream(PROMPT) if chunk.usage_metadata]
            return [u["output_tokens"] for u in usage] == [tokens]  # the usage event ends the reply

        return call

    async def lean_call(stream: bool) -> bool:
        record = await lean[stream].arequest(PROMPT)
        return record.ok and (record.chunks == per_reply if stream else record.output_tokens == tokens)

    ways: dict[str, Call] = {
        "raw SDK (AsyncOpenAI, httpx2)": sdk(raw),
        "SDK on aiohttp (DefaultAioHttpClient)": sdk(on_aiohttp),
        "plain ChatOpenAI": langchain(plain),
        "the kit (make_chat_model)": langchain(kit),
        "lean client (LeanClient)": lean_call,
    }
    for call in ways.values():  # warm-up: connections, imports, caches
        for stream in (True, False):
            await _bounded([partial(call, stream)] * TABLE_CONCURRENCY, TABLE_CONCURRENCY)
    rounds: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for _ in range(TABLE_ROUNDS):
        for stream in (True, False):
            for name, call in ways.items():
                requests = TABLE_REQUESTS[name][0 if stream else 1]
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                complete = await _bounded([partial(call, stream)] * requests, TABLE_CONCURRENCY)
                cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
                if not all(complete):
                    raise RuntimeError(f"{name}: {requests - sum(complete)} of {requests} replies incomplete")
                rounds.setdefault((name, stream), []).append((cpu_s / requests, wall_s / requests))
    await raw.close()
    await on_aiohttp.close()
    for client in lean.values():
        await client.aclose()
    rows = []
    for name in ways:
        plain_cpu, plain_wall = (statistics.median(f) for f in zip(*rounds[name, False], strict=True))
        stream_cpu, stream_wall = (statistics.median(f) for f in zip(*rounds[name, True], strict=True))
        rows.append(
            {
                "client": name,
                "cpu_ms_per_request": 1000 * plain_cpu,
                "cpu_us_per_chunk": 1e6 * stream_cpu / per_reply,
                "requests_per_s": 1 / plain_wall,
                "chunks_per_s": per_reply / stream_wall,
            }
        )
    return pd.DataFrame(rows)


def main() -> Report:
    report = Report("bench_client")
    print(f"machine: {machine_line()}")
    pd.set_option("display.width", 160)

    with serve(profile="instant") as server:
        overhead, ratios = asyncio.run(_overhead(server))
    print(f"\n1. Client overhead on the 'instant' simulator ({OVERHEAD_REQUESTS} non-streamed requests, "
          f"{OVERHEAD_CONCURRENCY} in flight, median of {OVERHEAD_ROUNDS} interleaved rounds)")  # fmt: skip
    print(overhead.round(2).to_string(index=False))
    per_request = overhead.set_index("client")["cpu_ms_per_request"]
    extra = statistics.median(ratios) - 1
    spread = f"rounds {min(ratios) - 1:+.0%} to {max(ratios) - 1:+.0%}"
    print(
        f"   amap over ainvoke + gather: {extra:+.1%} CPU per request, median of {len(ratios)} "
        f"rounds ({spread}) (target <= +10%): {verdict(extra <= 0.10)}"
    )
    for client, cpu_ms in per_request.items():
        report.add(f"CPU per request, {client} (instant, 64 in flight)", f"{cpu_ms:.2f} ms")
    report.add(
        "amap over ainvoke + gather, CPU per request (median of per-round ratios)",
        f"{extra:+.1%} ({spread})",
        "<= +10%",
        extra <= 0.10,
    )

    with serve(profile=SWEEP_PROFILE) as server:
        sweep = asyncio.run(_not_bottleneck(server))
    print(f"\n2. Throughput against the model ('{SWEEP_PROFILE}' profile, non-streamed, "
          f"{SWEEP_OUTPUT_TOKENS} output tokens, closed loop)")  # fmt: skip
    print(sweep.round(3).to_string(index=False))
    for path, group in sweep.groupby("path", sort=False):
        worst = group.loc[group["ratio"].idxmin()]
        print(
            f"   {path}: lowest measured/model ratio {worst.ratio:.1%} (target >= 95%): "
            f"{verdict(worst.ratio >= 0.95)}"
        )
        shown = ", ".join(f"{row.ratio:.0%}" for row in group.itertuples())
        concurrencies = ",".join(str(c) for c in group["concurrency"])
        late = group["sim_late_steps"].sum()
        report.add(
            f"throughput / model, {path}, non-streamed, c={concurrencies} ({late} late sim steps)",
            shown,
            ">= 95%",
            bool(worst.ratio >= 0.95),
        )

    with serve_firehose(chunks=FIREHOSE_CHUNKS) as server:
        streaming = asyncio.run(_streaming(server))
    print(
        "\n3. Streaming: chunks per second read by one process "
        f"(firehose server, {FIREHOSE_CHUNKS} chunks a reply, 32 streams)"
    )
    print(streaming.round(1).to_string(index=False))
    by_client = streaming.set_index("client")
    lean_row = by_client.loc["lean aiohttp SSE reader"]
    lean_met = bool(lean_row.chunks_per_cpu_s >= LEAN_TARGET_CHUNKS_PER_CPU_S)
    print(
        f"   lean path: {lean_row.chunks_per_cpu_s:,.0f} chunks per CPU-second, one core "
        f"(target >= {LEAN_TARGET_CHUNKS_PER_CPU_S:,}): {verdict(lean_met)}; "
        f"{lean_row.chunks_per_s:,.0f} chunks/s of wall-clock time"
    )
    for client, row in by_client.iterrows():
        lean = client == "lean aiohttp SSE reader"
        report.add(
            f"firehose chunks/s (per CPU-second), {client}",
            f"{row.chunks_per_s:,.0f} ({row.chunks_per_cpu_s:,.0f})",
            f">= {LEAN_TARGET_CHUNKS_PER_CPU_S:,} per CPU-second" if lean else "",
            lean_met if lean else None,
        )

    with serve(profile=SWEEP_PROFILE) as server:
        paced = asyncio.run(_streaming_at_pace(server))
    print(
        f"\n4. Streaming at the server's pace ('{SWEEP_PROFILE}' profile, {PACE_CONCURRENCY} streams of "
        f"{PACE_TOKENS} tokens, one chunk per network read)"
    )
    print(paced.round(2).to_string(index=False))
    for row in paced.itertuples():
        report.add(
            f"at {SWEEP_PROFILE} pace, {row.client}: CPU per chunk, client cores, throughput / model",
            f"{row.cpu_us_per_chunk:.0f} us, {row.client_cores:.2f}, {row.of_model_throughput:.0%}",
        )

    with serve_firehose(chunks=FIREHOSE_CHUNKS) as server:
        table = asyncio.run(_client_table(server))
    print(
        f"\n5. The five ways to call, against the firehose ({FIREHOSE_CHUNKS} tokens a reply, "
        f"{TABLE_CONCURRENCY} in flight, median of {TABLE_ROUNDS} interleaved rounds; per request: "
        "non-streamed, per chunk: streamed)"
    )
    print(table.round(2).to_string(index=False))
    for row in table.itertuples():
        report.add(
            f"firehose, {row.client}: CPU per request, CPU per chunk, requests/s, chunks/s",
            f"{row.cpu_ms_per_request:.2f} ms, {row.cpu_us_per_chunk:.1f} us, {row.requests_per_s:,.0f}, "
            f"{row.chunks_per_s:,.0f}",
        )
    report.print()
    return report


if __name__ == "__main__":
    main()
