"""``python -m helpers.bench``: run a load, print the figures, save CSV + JSON (and plots).

Examples::

    python -m helpers.bench --sim t4 --mode closed --concurrency 1,4,16,64 --plots
    python -m helpers.bench --base-url http://gpu-pod:8000/v1 --mode open --rate 2,8,inf
    python -m helpers.bench --sim l4 --path langchain --mode serial --num-prompts 20 --no-stream
    python -m helpers.bench --sim l4 --mode closed --concurrency 64,128 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any

import pandas as pd

from helpers.bench.lean_client import LeanClient
from helpers.bench.load import run_serial, run_threads
from helpers.bench.metrics import SLO
from helpers.bench.multiproc import TargetFactory, langchain_target
from helpers.bench.records import RunResult
from helpers.bench.results import BenchResult, collect_metadata, default_results_dir, save_result
from helpers.bench.sweep import (
    ideal_frame,
    sweep_concurrency,
    sweep_concurrency_processes,
    sweep_rates,
    sweep_rates_processes,
)

SHOWN_COLUMNS = [
    "label",
    "completed",
    "failed",
    "retried_requests",
    "tokens_from_chunks",
    "duration_s",
    "request_throughput",
    "output_throughput",
    "max_concurrent_requests",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
    "mean_client_queue_ms",
    "request_goodput",
    "cpu_ms_per_request",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.bench",
        description="Benchmark an OpenAI-compatible chat endpoint (vLLM or the simulator) the way "
        "`vllm bench serve` measures: TTFT, TPOT, ITL, end-to-end latency, throughput, goodput.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    target = parser.add_argument_group("where")
    target.add_argument("--base-url", help="endpoint ending in /v1 (default: QWEN_BASE_URL)")
    target.add_argument("--model", help="served model name (default: QWEN_MODEL or Qwen/Qwen3-0.6B)")
    target.add_argument("--sim", metavar="PROFILE", help="start the simulator with this profile")
    target.add_argument("--time-scale", type=float, default=1.0, help="simulator speed-up")
    request = parser.add_argument_group("what")
    request.add_argument(
        "--path",
        choices=["lean", "langchain"],
        default="lean",
        help="lean aiohttp SSE reader, or LangChain (what users call)",
    )
    request.add_argument("--no-stream", action="store_true", help="non-streamed requests")
    request.add_argument("--max-tokens", type=int, default=128)
    request.add_argument("--thinking", choices=["on", "off", "default"], default="off")
    request.add_argument(
        "--ignore-eos", action="store_true", help="always generate --max-tokens (vLLM's ignore_eos)"
    )
    request.add_argument("--prompt", help="send this prompt every time")
    request.add_argument("--prompt-set", choices=["zh", "en", "mixed"], default="mixed")
    request.add_argument("--num-prompts", type=int, default=64, help="requests per run")
    load = parser.add_argument_group("how")
    load.add_argument("--mode", choices=["serial", "threads", "closed", "open"], default="closed")
    load.add_argument(
        "--concurrency",
        help="comma-separated; closed: one run each (default 1,4,16); threads: "
        "pool sizes (default 4); open: a cap on requests in flight (default none)",
    )
    load.add_argument("--rate", default="inf", help="open loop: comma-separated req/s, or inf")
    load.add_argument("--burstiness", type=float, default=1.0, help="1 = Poisson arrivals")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--warmup", type=int, help="uncounted requests before each run")
    load.add_argument(
        "--processes",
        type=int,
        default=1,
        help="closed/open: send each run from N load processes, each its own event loop, records "
        "merged on one clock (--concurrency is the total, split over them)",
    )
    load.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="where the load processes run: local processes, or Ray actors (several machines)",
    )
    load.add_argument("--ray-address", help="--engine ray: a Ray cluster to join (default: start Ray here)")
    slo = parser.add_argument_group("goodput objectives (ms)")
    slo.add_argument("--slo-ttft-ms", type=float)
    slo.add_argument("--slo-tpot-ms", type=float)
    slo.add_argument("--slo-e2el-ms", type=float)
    shared = parser.add_argument_group(
        "shared-prefix workloads (helpers.bench.prefix; with --sim: prefix caching on and off side by side)"
    )
    shared.add_argument(
        "--workload",
        choices=["prefix-repetition", "multi-turn"],
        help="vllm bench serve's prefix repetition, or AIPerf-style multi-turn conversations "
        "(--max-tokens: output length; --concurrency: conversations in flight)",
    )
    shared.add_argument("--num-prefixes", type=int, default=4, help="prefix-repetition: distinct prefixes")
    shared.add_argument("--prefix-len", type=int, default=1024, help="prefix-repetition: prefix tokens")
    shared.add_argument("--suffix-len", type=int, default=64, help="prefix-repetition: suffix tokens")
    shared.add_argument("--num-conversations", type=int, default=16, help="multi-turn: conversations")
    shared.add_argument("--turns", type=int, default=4, help="multi-turn: turns per conversation")
    shared.add_argument("--system-len", type=int, default=512, help="multi-turn: shared system prompt tokens")
    shared.add_argument("--user-len", type=int, default=64, help="multi-turn: tokens per question")
    shared.add_argument(
        "--num-gpu-blocks-override", type=int, help="with --sim: the simulator's KV cache size in blocks"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--name", default="bench", help="file stem of the saved results")
    out.add_argument("--results-dir", help="where to save (default: $QWEN_RESULTS_DIR, else data/results/)")
    out.add_argument("--plots", action="store_true", help="also save PNG plots")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workload:
        from helpers.bench.prefix import cli_main

        return cli_main(args)
    try:
        settings = _validated(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        endpoint, profile = _endpoint(args, stack)
        print(f"benchmarking {endpoint.base_url} (model {endpoint.model})", flush=True)
        runs = _run(args, settings, endpoint)
        slo = _slo(args)
        command = "python -m helpers.bench " + " ".join(sys.argv[1:] if argv is None else argv)
        metadata = collect_metadata(endpoint=endpoint, sim_profile=profile, extra={"command": command})
        result = BenchResult(runs, metadata, slo)
        summary = result.summary
        args.results_dir = args.results_dir or str(default_results_dir())
        paths = save_result(result, args.name, args.results_dir)
        _print_summary(summary, result.subtitle())
        print("saved: " + ", ".join(str(path) for path in paths.values()))
        if args.plots:
            _plots(args, result, profile, settings)
        if summary["completed"].sum() == 0:
            print(f"every request failed; first error: {runs[0].records[0].error}", file=sys.stderr)
            return 1
    return 0


def _validated(args: argparse.Namespace) -> dict[str, Any]:
    default = {"serial": "1", "threads": "4", "closed": "1,4,16", "open": None}[args.mode]
    text = args.concurrency or default
    concurrencies = _numbers(text, int, "--concurrency") if text else []
    rates = _numbers(args.rate, float, "--rate")
    if args.num_prompts < 1 or args.max_tokens < 1:
        raise ValueError("--num-prompts and --max-tokens must be >= 1")
    if args.mode in ("serial", "threads") and args.path == "lean":
        raise ValueError(
            f"--mode {args.mode} drives LangChain's sync API: add --path langchain "
            "(for the lean client use --mode closed --concurrency 1)"
        )
    if args.mode == "open" and len(concurrencies) > 1:
        raise ValueError("--mode open takes one --concurrency value: the cap on requests in flight")
    _check_processes(args, concurrencies)
    if (args.slo_ttft_ms or args.slo_tpot_ms) and args.no_stream:
        raise ValueError("TTFT and TPOT objectives need streamed requests: drop --no-stream")
    return {"concurrencies": concurrencies, "rates": rates}


def _check_processes(args: argparse.Namespace, concurrencies: list[int]) -> None:
    processes = args.processes
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if args.ray_address and args.engine != "ray":
        raise ValueError("--ray-address is for Ray actors: add --engine ray")
    if processes == 1 and args.engine == "local":
        return
    if args.mode in ("serial", "threads"):
        raise ValueError(
            f"--processes and --engine ray need --mode closed or open (--mode {args.mode} drives "
            "LangChain's sync API from this one process)"
        )
    if any(c < processes for c in concurrencies):
        raise ValueError(
            f"--concurrency {','.join(map(str, concurrencies))} with --processes {processes}: every "
            "process needs at least one request in flight; raise the concurrency or use fewer processes"
        )
    if args.num_prompts < processes:
        raise ValueError(
            f"--num-prompts {args.num_prompts} for --processes {processes}: give at least one prompt each"
        )


def _numbers(text: str, kind: type, flag: str) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if not values or any(not value > 0 for value in values):
        raise ValueError(f"{flag} values must be > 0, got {text!r}")
    return values


def _endpoint(args: argparse.Namespace, stack: ExitStack) -> tuple[Any, str | None]:
    from helpers.endpoint import Endpoint, resolve_endpoint

    if args.sim:
        from helpers.sim import serve

        server = stack.enter_context(serve(profile=args.sim, time_scale=args.time_scale))
        model = args.model or server.model
        return Endpoint(server.base_url, model, kind="simulator", label=args.sim), args.sim
    return resolve_endpoint(args.base_url, args.model), None


def _prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt:
        base = [args.prompt]
    else:
        from helpers.prompts import load_prompts

        base = load_prompts(args.prompt_set)
    return [base[i % len(base)] for i in range(args.num_prompts)]


def _extra_body(args: argparse.Namespace) -> dict[str, Any]:
    from helpers.chat import thinking_extra_body

    thinking = {"on": True, "off": False, "default": None}[args.thinking]
    body = thinking_extra_body(thinking, {"ignore_eos": True} if args.ignore_eos else None)
    return body or {}


def _target_factory(args: argparse.Namespace, endpoint: Any) -> TargetFactory:
    """The request path as a picklable factory: built here, or in each load process."""
    api_key = endpoint.api_key.get_secret_value()
    stream = not args.no_stream
    if args.path == "lean":
        return partial(
            LeanClient,
            endpoint.base_url,
            endpoint.model,
            api_key=api_key,
            max_tokens=args.max_tokens,
            stream=stream,
            extra_body=_extra_body(args),
        )
    return partial(
        langchain_target,
        endpoint.base_url,
        endpoint.model,
        api_key=api_key,
        stream=stream,
        thinking={"on": True, "off": False, "default": None}[args.thinking],
        max_tokens=args.max_tokens,
        max_retries=0,
        extra_body={"ignore_eos": True} if args.ignore_eos else None,
    )


def _run(args: argparse.Namespace, settings: dict, endpoint: Any) -> list[RunResult]:
    prompts = _prompts(args)
    progress = not args.no_progress
    factory = _target_factory(args, endpoint)
    warmup = args.warmup
    cap = settings["concurrencies"][0] if settings["concurrencies"] else None
    if args.processes > 1 or args.engine == "ray":
        where = {"processes": args.processes, "engine": args.engine, "ray_address": args.ray_address}
        if args.mode == "closed":
            return sweep_concurrency_processes(
                factory, prompts, settings["concurrencies"], warmup=warmup, progress=progress, **where
            )
        return sweep_rates_processes(
            factory, prompts, settings["rates"], burstiness=args.burstiness, max_concurrency=cap,
            seed=args.seed, warmup=warmup, progress=progress, **where,
        )  # fmt: skip
    target = factory()
    if args.mode == "serial":
        return [run_serial(target, prompts, warmup=warmup or 1, progress=progress)]
    if args.mode == "threads":
        return [
            run_threads(
                target, prompts, max_concurrency=c, warmup=c if warmup is None else warmup, progress=progress
            )
            for c in settings["concurrencies"]
        ]
    if args.mode == "closed":
        return asyncio.run(
            sweep_concurrency(target, prompts, settings["concurrencies"], warmup=warmup, progress=progress)
        )
    return asyncio.run(
        sweep_rates(
            target,
            prompts,
            settings["rates"],
            burstiness=args.burstiness,
            max_concurrency=cap,
            seed=args.seed,
            warmup=1 if warmup is None else warmup,
            progress=progress,
        )
    )


def _slo(args: argparse.Namespace) -> SLO | None:
    limits = (args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2el_ms)
    if all(limit is None for limit in limits):
        return None
    return SLO(*(None if limit is None else limit / 1000 for limit in limits))


def _print_summary(summary: pd.DataFrame, subtitle: str) -> None:
    columns = [c for c in SHOWN_COLUMNS if c in summary and summary[c].notna().any()]
    print(subtitle)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(summary[columns].round(2).to_string(index=False))


def _plots(args: argparse.Namespace, result: BenchResult, profile: str | None, settings: dict) -> None:
    from helpers import plots

    summary, requests, subtitle = result.summary, result.requests, result.subtitle()
    directory = args.results_dir
    saved = [f"{directory}/{args.name}-timeline.png", f"{directory}/{args.name}-cdf.png"]
    plots.plot_timeline(requests, subtitle=subtitle, path=saved[0])
    plots.plot_latency_cdf(requests, subtitle=subtitle, path=saved[1])
    x = "rate" if args.mode == "open" else "concurrency"
    if len(summary) > 1:
        ideal = None
        if profile and profile != "instant" and x == "concurrency" and summary["completed"].min() > 0:
            done = requests[requests["ok"]]
            ideal = ideal_frame(
                profile,
                settings["concurrencies"],
                time_scale=args.time_scale,
                prompt_tokens=max(1, round(done["prompt_tokens"].mean())),
                output_tokens=max(1, round(done["output_tokens"].mean())),
            )
        finite = summary[summary[x].map(math.isfinite)] if x == "rate" else summary
        metrics = ("ttft", "itl") if not args.no_stream else ("e2el",)
        saved.append(f"{directory}/{args.name}-knee.png")
        plots.plot_knee(finite, x=x, ideal=ideal, metrics=metrics, subtitle=subtitle, path=saved[-1])
        if not args.no_stream:
            saved.append(f"{directory}/{args.name}-ttft-vs-throughput.png")
            plots.plot_ttft_vs_throughput(summary, annotate=x, subtitle=subtitle, path=saved[-1])
    print("plots: " + ", ".join(saved))
