"""Shared-prefix workloads: what prefix caching changes, measured (TTFT, throughput, cache hits).

Two workloads, after the tools that define them:
- `PrefixRepetition`: `vllm bench serve --dataset-name prefix_repetition`: `num_prefixes` prefixes of
  `prefix_len` tokens, each prompt one of them (in turn) followed by its own `suffix_len`-token
  suffix, `output_len` tokens generated.
- `MultiTurn`: AIPerf's multi-turn conversations: `num_conversations` conversations of `turns`
  turns under one shared system prompt of `system_len` tokens; each turn sends the whole history
  (earlier questions and the server's answers) plus a new `user_len`-token question.

`run_workload()` runs one against any endpoint (a closed loop of `concurrency` conversations, the
turns of each in order) and reads the server's /metrics before and after (vLLM's
`prefix_cache_queries/hits`, `num_preemptions`). `compare_prefix_caching()` starts the simulator
twice, prefix caching on and off (`--no-enable-prefix-caching`), and runs the same workload on both.
Lengths are counted with the simulator's tokenizer (plain words of up to 8 letters: one token each
for Qwen3's tokenizer too). Requests ask for `ignore_eos`, so every answer is `output_len` long.

Example (in a notebook cell)::

    from helpers.bench.prefix import PrefixRepetition, compare_prefix_caching
    compare_prefix_caching(PrefixRepetition(num_prefixes=2, prefix_len=1024), profile="t4", concurrency=8)
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson
import pandas as pd

_WORDS = [
    "the",
    "model",
    "reads",
    "data",
    "from",
    "files",
    "and",
    "learns",
    "quick",
    "answers",
    "while",
    "the",
    "server",
    "keeps",
    "every",
    "block",
    "of",
    "cache",
    "warm",
    "for",
    "agents",
    "that",
    "share",
    "a",
    "long",
    "system",
    "prompt",
    "with",
    "many",
    "tools",
    "python",
    "json",
    "field",
    "world",
    "machine",
    "module",
    "open",
    "brown",
    "lazy",
    "fox",
    "jumps",
    "over",
    "hello",
    "batch",
    "token",
    "stream",
]


def words(count: int, rng: random.Random) -> str:
    """`count` plain words (one token each for the simulator and for Qwen3's tokenizer)."""
    return " ".join(rng.choice(_WORDS) for _ in range(count))


@dataclass(frozen=True)
class PrefixRepetition:
    """`vllm bench serve`'s prefix-repetition dataset: prompts = one of a few prefixes + a suffix."""

    num_prefixes: int = 4
    prefix_len: int = 1024
    suffix_len: int = 64
    output_len: int = 64
    num_prompts: int = 64
    seed: int = 0

    def conversations(self) -> list[Conversation]:
        _check_positive(self, ("num_prefixes", "prefix_len", "num_prompts", "output_len"))
        rng = random.Random(self.seed)
        prefixes = [f"Context {i}: " + words(self.prefix_len - 3, rng) for i in range(self.num_prefixes)]
        return [
            Conversation(
                system=None,
                questions=[f"{prefixes[i % self.num_prefixes]}\nRequest {i}: {words(self.suffix_len, rng)}"],
            )
            for i in range(self.num_prompts)
        ]


@dataclass(frozen=True)
class MultiTurn:
    """AIPerf-style multi-turn conversations under one shared system prompt."""

    num_conversations: int = 16
    turns: int = 4
    system_len: int = 512
    user_len: int = 64
    output_len: int = 64
    seed: int = 0

    def conversations(self) -> list[Conversation]:
        _check_positive(self, ("num_conversations", "turns", "user_len", "output_len"))
        rng = random.Random(self.seed)
        system = "You are the agent of this benchmark. " + words(max(self.system_len - 8, 0), rng)
        return [
            Conversation(
                system=system,
                questions=[f"Question {c}.{t}: {words(self.user_len - 4, rng)}" for t in range(self.turns)],
            )
            for c in range(self.num_conversations)
        ]


@dataclass
class Conversation:
    """A system prompt (or None) and the user turns, sent one after another."""

    system: str | None
    questions: list[str]


@dataclass
class TurnRecord:
    """One request of a workload run (times in seconds from the run's start)."""

    conversation: int
    turn: int
    start_s: float
    end_s: float
    ok: bool = True
    error: str = ""
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None  # usage.prompt_tokens_details (--enable-prompt-tokens-details)


@dataclass
class WorkloadRun:
    """The records of one run, its duration and the server's cache counters over it."""

    records: list[TurnRecord]
    duration_s: float
    server: dict[str, float] = field(default_factory=dict)  # /metrics increases; empty if unreadable

    def summary(self) -> dict[str, Any]:
        """Means and percentiles (ms), throughput, and the server's prefix-cache hit rate."""
        done = [r for r in self.records if r.ok]
        ttft = [1000 * r.ttft_s for r in done if r.ttft_s is not None]
        later = [1000 * r.ttft_s for r in done if r.ttft_s is not None and r.turn > 0]
        output = sum(r.output_tokens or 0 for r in done)
        cached = [r.cached_tokens for r in done if r.cached_tokens is not None]
        queries, hits = self.server.get("prefix_cache_queries"), self.server.get("prefix_cache_hits")
        return {
            "requests": len(self.records),
            "failed": len(self.records) - len(done),
            "mean_ttft_ms": statistics.fmean(ttft) if ttft else None,
            "p50_ttft_ms": statistics.median(ttft) if ttft else None,
            "p90_ttft_ms": _percentile(ttft, 90),
            "mean_ttft_later_turns_ms": statistics.fmean(later) if later else None,
            "mean_e2e_ms": statistics.fmean(1000 * (r.end_s - r.start_s) for r in done) if done else None,
            "output_throughput": output / self.duration_s if self.duration_s else None,
            "request_throughput": len(done) / self.duration_s if self.duration_s else None,
            "prompt_tokens": sum(r.prompt_tokens or 0 for r in done),
            "cached_tokens": sum(cached) if cached else None,
            "hit_rate": hits / queries if queries else (0.0 if queries == 0 else None),
            "preemptions": self.server.get("num_preemptions"),
        }


async def arun_workload(
    base_url: str,
    model: str,
    workload: PrefixRepetition | MultiTurn,
    concurrency: int = 8,
    *,
    api_key: str | None = None,
    timeout: float = 600.0,
) -> WorkloadRun:
    """Run `workload` against the server at `base_url` (ending in /v1); see the module docstring."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    conversations = workload.conversations()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 1)
    async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits) as client:
        before = await _cache_counters(client, base_url)
        pending = list(enumerate(conversations))
        records: list[TurnRecord] = []
        origin = time.perf_counter()

        async def worker() -> None:
            while pending:
                index, conversation = pending.pop(0)
                await _converse(
                    client, base_url, model, workload.output_len, index, conversation, origin, records
                )

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(conversations)))))
        duration = time.perf_counter() - origin
        after = await _cache_counters(client, base_url)
    server = {name: after[name] - before[name] for name in after if name in before}
    return WorkloadRun(sorted(records, key=lambda r: r.start_s), duration, server)


def run_workload(
    base_url: str, model: str, workload: PrefixRepetition | MultiTurn, concurrency: int = 8, **kwargs: Any
) -> WorkloadRun:
    """`arun_workload` from synchronous code (not from a running event loop: await that instead)."""
    return asyncio.run(arun_workload(base_url, model, workload, concurrency, **kwargs))


def compare_prefix_caching(
    workload: PrefixRepetition | MultiTurn,
    *,
    profile: str = "l4",
    concurrency: int = 8,
    time_scale: float = 1.0,
    **sim_options: Any,
) -> pd.DataFrame:
    """The same workload on the simulator with prefix caching on, then off: one summary row each.

    `sim_options` go to `helpers.sim.serve` (e.g. `num_gpu_blocks_override`, `block_size`).
    Times are wall-clock seconds at `time_scale` (1: the profile's GPU).
    """
    from helpers.sim import serve

    rows = {}
    for caching in (True, False):
        with serve(
            profile=profile,
            time_scale=time_scale,
            enable_prefix_caching=caching,
            enable_prompt_tokens_details=True,
            **sim_options,
        ) as server:
            run = _run_in_thread(server.base_url, server.model, workload, concurrency)
        rows["on" if caching else "off"] = run.summary()
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "prefix_caching"
    return frame


def workload_settings(workload: PrefixRepetition | MultiTurn) -> dict[str, Any]:
    return {"workload": type(workload).__name__, **asdict(workload)}


def _run_in_thread(base_url: str, model: str, workload: Any, concurrency: int) -> WorkloadRun:
    """Run the workload on a loop of its own, also when the caller's thread has one (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_workload(base_url, model, workload, concurrency)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run_workload, base_url, model, workload, concurrency).result()


async def _converse(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    output_len: int,
    index: int,
    conversation: Conversation,
    origin: float,
    records: list[TurnRecord],
) -> None:
    messages: list[dict] = [{"role": "system", "content": conversation.system}] if conversation.system else []
    for turn, question in enumerate(conversation.questions):
        messages.append({"role": "user", "content": question})
        record, answer = await _request(client, base_url, model, messages, output_len, origin)
        record.conversation, record.turn = index, turn
        records.append(record)
        if not record.ok:
            return  # the rest of this conversation would not be the workload's
        messages.append({"role": "assistant", "content": answer})


async def _request(
    client: httpx.AsyncClient, base_url: str, model: str, messages: list[dict], output_len: int, origin: float
) -> tuple[TurnRecord, str]:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": output_len,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "chat_template_kwargs": {"enable_thinking": False},
    }
    start = time.perf_counter()
    record = TurnRecord(0, 0, start - origin, start - origin)
    answer: list[str] = []
    try:
        async with client.stream("POST", base_url.rstrip("/") + "/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                text = (await reply.aread()).decode(errors="replace")[:300]
                record.ok, record.error = False, f"HTTP {reply.status_code}: {text}"
            else:
                async for line in reply.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = orjson.loads(line[6:])
                    if event.get("choices"):
                        if record.ttft_s is None:
                            record.ttft_s = time.perf_counter() - start
                        answer.append(event["choices"][0].get("delta", {}).get("content") or "")
                    if event.get("usage"):
                        _read_usage(record, event["usage"])
    except httpx.HTTPError as error:
        record.ok, record.error = False, f"{type(error).__name__}: {error}"
    record.end_s = time.perf_counter() - origin
    return record, "".join(answer)


def _read_usage(record: TurnRecord, usage: dict) -> None:
    record.prompt_tokens = usage.get("prompt_tokens")
    record.output_tokens = usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        record.cached_tokens = details.get("cached_tokens")


_COUNTERS = ("prefix_cache_queries", "prefix_cache_hits", "num_preemptions")
_COUNTER_LINE = re.compile(r"^vllm:(" + "|".join(_COUNTERS) + r")_total\{[^}]*\} (\S+)$", re.M)


async def _cache_counters(client: httpx.AsyncClient, base_url: str) -> dict[str, float]:
    """vLLM's prefix-cache and preemption counters from /metrics (empty when it cannot be read)."""
    root = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
    try:
        response = await client.get(root + "/metrics")
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    return {name: float(value) for name, value in _COUNTER_LINE.findall(response.text)}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _check_positive(workload: object, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(workload, name) < 1:
            raise ValueError(f"{type(workload).__name__}.{name} must be >= 1, got {getattr(workload, name)}")


def cli_main(args: Any) -> int:
    """`python -m helpers.bench --workload ...`: with --sim, caching on and off; else the endpoint."""
    from pathlib import Path

    from helpers.bench.results import default_results_dir

    try:
        workload = _workload_from(args)
        concurrencies = [int(part) for part in (args.concurrency or "8").split(",") if part.strip()]
        workload.conversations()
        if not concurrencies or min(concurrencies) < 1:
            raise ValueError("--concurrency values must be >= 1")
    except ValueError as error:
        print(f"error: {error}")
        return 2
    frames = []
    for concurrency in concurrencies:
        if args.sim:
            options = {}
            if args.num_gpu_blocks_override:
                options["num_gpu_blocks_override"] = args.num_gpu_blocks_override
                options["max_model_len"] = (args.num_gpu_blocks_override - 1) * 16
            frame = compare_prefix_caching(
                workload, profile=args.sim, concurrency=concurrency, time_scale=args.time_scale, **options
            )
        else:
            from helpers.endpoint import resolve_endpoint

            endpoint = resolve_endpoint(args.base_url, args.model)
            key = endpoint.api_key.get_secret_value() if endpoint.api_key else None
            run = run_workload(endpoint.base_url, endpoint.model, workload, concurrency, api_key=key)
            frame = pd.DataFrame([run.summary()], index=pd.Index(["server"], name="prefix_caching"))
        frames.append(frame.assign(concurrency=concurrency))
    table = pd.concat(frames)
    print(f"{workload_settings(workload)}")
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.precision", 1):
        print(table.to_string())
    directory = Path(args.results_dir or default_results_dir())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{args.name}-{args.workload}.csv"
    table.to_csv(path)
    print(f"saved: {path}")
    return 0 if (table["failed"] < table["requests"]).all() else 1


def _workload_from(args: Any) -> PrefixRepetition | MultiTurn:
    if args.workload == "prefix-repetition":
        return PrefixRepetition(
            num_prefixes=args.num_prefixes,
            prefix_len=args.prefix_len,
            suffix_len=args.suffix_len,
            output_len=args.max_tokens,
            num_prompts=args.num_prompts,
            seed=args.seed,
        )
    return MultiTurn(
        num_conversations=args.num_conversations,
        turns=args.turns,
        system_len=args.system_len,
        user_len=args.user_len,
        output_len=args.max_tokens,
        seed=args.seed,
    )
