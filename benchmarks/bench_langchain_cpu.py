"""Client CPU of the LangChain path against the raw openai SDK, side by side in one run.

Against the ``instant`` simulator (its own process; no model time, so the client's CPU is what
is measured), each client runs ``REQUESTS`` non-streamed requests and ``STREAMS`` streamed
requests at ``CONCURRENCY`` in flight; CPU is ``time.process_time()`` of this process. Rounds are
interleaved (every client once per round) and the figures are medians over the rounds, because
a shared machine drifts from round to round. CPU per chunk is the streamed run's CPU over the
tokens streamed (the same count for every client: ``STREAM_TOKENS`` per request).

Clients: raw ``openai.AsyncOpenAI`` (default transport), the SDK on aiohttp
(``openai.DefaultAioHttpClient``), plain ``langchain_openai.ChatOpenAI`` and
``helpers.chat.make_chat_model``. The last lines are the ratios to the raw SDK (target: the kit
at most 1.1x, and below plain ChatOpenAI).

Run: ``python -m benchmarks.bench_langchain_cpu [--rounds N] [--before OLD/helpers/chat.py]``
(``--before`` adds the ``make_chat_model`` of another copy of ``helpers/chat.py``, e.g.
``git show main:helpers/chat.py > /tmp/chat_before.py``, to the same run). To profile one client:
``py-spy record -o out.txt --format raw -- python -m benchmarks.bench_langchain_cpu --only
make_chat_model --part stream`` (py-spy samples on-CPU stacks only; the simulator is another process).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
import pandas as pd
from langchain_openai import ChatOpenAI

from benchmarks.report import Report, machine_line, verdict
from helpers.chat import make_chat_model, thinking_extra_body
from helpers.endpoint import Endpoint
from helpers.sim import serve

PROMPT = "你是谁?"
CONCURRENCY = 64
REQUESTS = 384
STREAMS = 128
ANSWER_TOKENS = 16
STREAM_TOKENS = 64
ROUNDS = 7
EXTRA_BODY = {"ignore_eos": True, **thinking_extra_body(False)}


@dataclass
class Client:
    """One way to call the server: a non-streamed call and a streamed call, each returning the
    number of tokens received (checked, so a client that silently fails is never measured fast)."""

    name: str
    invoke: Callable[[], Awaitable[int]]
    stream: Callable[[], Awaitable[int]]
    close: Callable[[], Awaitable[None]]


def sdk_client(name: str, sdk: openai.AsyncOpenAI, model: str) -> Client:
    messages = [{"role": "user", "content": PROMPT}]

    async def invoke() -> int:
        reply = await sdk.chat.completions.create(
            model=model, messages=messages, max_tokens=ANSWER_TOKENS, extra_body=EXTRA_BODY
        )
        return reply.usage.completion_tokens

    async def stream() -> int:
        chunks = await sdk.chat.completions.create(
            model=model, messages=messages, max_tokens=STREAM_TOKENS, extra_body=EXTRA_BODY,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        tokens = 0
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                tokens += 1
        return tokens

    return Client(name, invoke, stream, sdk.close)


def langchain_client(name: str, model: ChatOpenAI, stream_model: ChatOpenAI) -> Client:
    async def invoke() -> int:
        reply = await model.ainvoke(PROMPT)
        return reply.usage_metadata["output_tokens"]

    async def stream() -> int:
        tokens = 0
        async for chunk in stream_model.astream(PROMPT):
            if chunk.content:
                tokens += 1
        return tokens

    async def close() -> None:
        return None

    return Client(name, invoke, stream, close)


def load_chat_module(path: str) -> Any:
    """Another copy of ``helpers/chat.py`` (a before/after comparison in one run)."""
    spec = importlib.util.spec_from_file_location("helpers_chat_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_clients(server, before: str | None = None) -> list[Client]:
    endpoint = Endpoint(server.base_url, server.model, kind="simulator")

    def plain(max_tokens: int) -> ChatOpenAI:
        return ChatOpenAI(
            model=server.model, base_url=server.base_url, api_key="EMPTY", max_retries=0,
            max_tokens=max_tokens, stream_usage=True, extra_body=EXTRA_BODY,
        )  # fmt: skip

    def kit(max_tokens: int, make: Callable[..., ChatOpenAI] = make_chat_model) -> ChatOpenAI:
        return make(False, endpoint, max_tokens=max_tokens, max_retries=0, extra_body={"ignore_eos": True})

    def sdk(**kwargs) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, **kwargs)

    clients = [
        sdk_client("openai AsyncOpenAI", sdk(), server.model),
        sdk_client("openai on aiohttp", sdk(http_client=openai.DefaultAioHttpClient()), server.model),
        langchain_client("plain ChatOpenAI", plain(ANSWER_TOKENS), plain(STREAM_TOKENS)),
        langchain_client("make_chat_model", kit(ANSWER_TOKENS), kit(STREAM_TOKENS)),
    ]
    if before:
        make = load_chat_module(before).make_chat_model
        clients.append(
            langchain_client("make_chat_model (before)", kit(ANSWER_TOKENS, make), kit(STREAM_TOKENS, make))
        )
    return clients


async def bounded(call: Callable[[], Awaitable[int]], count: int) -> list[int]:
    """``count`` calls, at most ``CONCURRENCY`` in flight."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> int:
        async with slots:
            return await call()

    return await asyncio.gather(*(one() for _ in range(count)))


async def cpu_of(
    name: str, call: Callable[[], Awaitable[int]], count: int, tokens: int
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``count`` calls; every call must bring ``tokens`` tokens."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    received = await bounded(call, count)
    cpu_s, wall_s = time.process_time() - cpu_start, time.perf_counter() - wall_start
    short = sum(got != tokens for got in received)
    if short:
        raise RuntimeError(f"{name}: {short} of {count} replies did not bring {tokens} tokens")
    return cpu_s, wall_s


async def measure(
    server, rounds: int, only: str | None = None, part: str = "both", before: str | None = None
) -> pd.DataFrame:
    clients = [c for c in build_clients(server, before) if only is None or c.name == only]
    if not clients:
        raise SystemExit(f"--only {only!r}: no such client")
    for client in clients:  # warm-up: connections, imports, caches
        if part != "stream":
            await bounded(client.invoke, CONCURRENCY)
        if part != "invoke":
            await bounded(client.stream, CONCURRENCY)
    rows = []
    for round_index in range(rounds):
        for client in clients:
            cpu_s, wall_s, stream_cpu_s, stream_wall_s = (float("nan"),) * 4
            if part in ("both", "invoke"):
                cpu_s, wall_s = await cpu_of(client.name, client.invoke, REQUESTS, ANSWER_TOKENS)
            if part in ("both", "stream"):
                stream_cpu_s, stream_wall_s = await cpu_of(client.name, client.stream, STREAMS, STREAM_TOKENS)
            chunks = STREAMS * STREAM_TOKENS
            rows.append(
                {
                    "round": round_index,
                    "client": client.name,
                    "cpu_ms_per_request": 1000 * cpu_s / REQUESTS,
                    "requests_per_s": REQUESTS / wall_s,
                    "cpu_us_per_chunk": 1e6 * stream_cpu_s / chunks,
                    "chunks_per_s": chunks / stream_wall_s,
                }
            )
    for client in clients:
        await client.close()
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> Report:
    """Run the comparison; ``argv`` are this script's options (none under ``make bench``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--only", metavar="CLIENT", help="measure one client (e.g. for py-spy)")
    parser.add_argument("--before", metavar="CHAT_PY", help="also measure this copy of helpers/chat.py")
    parser.add_argument("--part", choices=("both", "invoke", "stream"), default="both")
    args = parser.parse_args(argv or [])
    report = Report("bench_langchain_cpu")
    print(f"machine: {machine_line()}, load average {os.getloadavg()[0]:.2f} at start")
    with serve(profile="instant") as server:
        rounds = asyncio.run(measure(server, args.rounds, args.only, args.part, args.before))
    if args.only:
        print(rounds.to_string(index=False))
        return report
    medians = rounds.groupby("client", sort=False).median(numeric_only=True).drop(columns="round")
    print(
        f"\nCPU per request ({REQUESTS} non-streamed, {ANSWER_TOKENS} tokens) and per chunk ({STREAMS} "
        f"streams of {STREAM_TOKENS} tokens), {CONCURRENCY} in flight, 'instant' simulator, median of "
        f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f} at end"
    )
    pd.set_option("display.width", 160)
    print(medians.round(2).to_string())
    raw = medians.loc["openai AsyncOpenAI"]
    plain = medians.loc["plain ChatOpenAI"]
    kit = medians.loc["make_chat_model"]
    for name, row in medians.iterrows():
        report.add(
            f"{name}: CPU per request, per chunk (x raw SDK)",
            f"{row.cpu_ms_per_request:.2f} ms ({row.cpu_ms_per_request / raw.cpu_ms_per_request:.2f}x), "
            f"{row.cpu_us_per_chunk:.0f} us ({row.cpu_us_per_chunk / raw.cpu_us_per_chunk:.2f}x)",
        )
    request_ratio = kit.cpu_ms_per_request / raw.cpu_ms_per_request
    chunk_ratio = kit.cpu_us_per_chunk / raw.cpu_us_per_chunk
    met = request_ratio <= 1.1 and chunk_ratio <= 1.1
    below_plain = (
        kit.cpu_ms_per_request < plain.cpu_ms_per_request and kit.cpu_us_per_chunk < plain.cpu_us_per_chunk
    )
    print(
        f"   make_chat_model / raw SDK: {request_ratio:.2f}x per request, {chunk_ratio:.2f}x per chunk "
        f"(target <= 1.1x): {verdict(met)}; below plain ChatOpenAI: {verdict(below_plain)}"
    )
    report.add(
        "make_chat_model / raw SDK, per request and per chunk",
        f"{request_ratio:.2f}x, {chunk_ratio:.2f}x",
        "<= 1.1x",
        met,
    )
    report.add("make_chat_model below plain ChatOpenAI (both figures)", str(below_plain), "True", below_plain)
    report.print()
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
