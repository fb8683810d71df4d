"""Past one server: a simulated fleet behind the real vllm-router, and batch jobs through it.

1. Fleet throughput at 1 / 2 / 4 replicas (`t4`, non-streamed, closed loop, 32 in flight per replica,
   lean client) against N times one replica's ideal from `predict()`: target >= 90%.
2. A batch job through the router (2 replicas), LangChain path (`helpers.batch`): engine local vs Ray
   with 2 workers, requests/s side by side.
3. A replica killed mid-batch: every line answered (the router and amap retry), 0 lost.

Run: `python -m benchmarks.bench_fleet` (a couple of minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.report import Report, machine_line
from helpers.batch import arun_batch, read_output
from helpers.bench.lean_client import LeanClient
from helpers.bench.load import run_closed_loop
from helpers.bench.metrics import summarize
from helpers.endpoint import Endpoint
from helpers.sim import predict
from helpers.sim.fleet import serve_fleet

PROFILE = "t4"
OUTPUT_TOKENS = 64
PER_REPLICA = 32
ROUNDS = 6  # requests per client slot
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
LONG_ANSWERS = {"think_tokens_mean": 0, "answer_tokens_mean": 10_000}  # every reply runs to max_tokens


def fleet_throughput(replicas: int) -> tuple[float, float]:
    """(measured requests/s, N x one replica's ideal) for one fleet size."""
    ideal = predict(profile=PROFILE, concurrency=PER_REPLICA, prompt_tokens=20, output_tokens=OUTPUT_TOKENS)
    concurrency = PER_REPLICA * replicas
    with serve_fleet(replicas, profile=PROFILE, policy="round_robin", **LONG_ANSWERS) as fleet:
        client = LeanClient(
            fleet.base_url,
            fleet.model,
            max_tokens=OUTPUT_TOKENS,
            stream=False,
            extra_body={**NO_THINKING, "ignore_eos": True},
        )
        prompts = [f"request {index}" for index in range(concurrency * ROUNDS)]
        run = asyncio.run(run_closed_loop(client, prompts, concurrency=concurrency, warmup=concurrency))
    figures = summarize(run)
    assert figures["failed"] == 0, figures
    return figures["request_throughput"], replicas * ideal.request_throughput


def batch_file(path: Path, count: int, max_tokens: int = 240) -> Path:
    with path.open("w", encoding="utf-8") as lines:
        for index in range(count):
            body = {"messages": [{"role": "user", "content": f"问题 {index}"}], "max_tokens": max_tokens}
            record = {"custom_id": f"q{index}", "method": "POST", "url": "/v1/chat/completions"}
            lines.write(json.dumps({**record, "body": {**body, **NO_THINKING}}, ensure_ascii=False) + "\n")
    return path


def batch_rates(folder: Path, count: int = 300) -> dict[str, float]:
    """Requests/s of the same batch through a 2-replica fleet, engine local vs ray (2 workers)."""
    import ray

    rates = {}
    inputs = batch_file(folder / "in.jsonl", count)
    with serve_fleet(2, profile="l4", answer_tokens_mean=40, think_tokens_mean=0) as fleet:
        endpoint = Endpoint(fleet.base_url, fleet.model)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for engine in ("local", "ray"):
                output = folder / f"out-{engine}.jsonl"
                summary = asyncio.run(
                    arun_batch(
                        inputs,
                        output,
                        engine=engine,
                        workers=2,
                        concurrency=64,
                        endpoint=endpoint,
                        progress=False,
                    )
                )
                assert summary.ok == count, str(summary)
                rates[engine] = summary.sent / summary.elapsed_s
        finally:
            ray.shutdown()
    return rates


def killed_replica(folder: Path, count: int = 120) -> tuple[int, int, int]:
    """(lines written, custom_ids answered, lines lost) when one of two replicas dies mid-batch."""
    inputs = batch_file(folder / "kill-in.jsonl", count)
    output = folder / "kill-out.jsonl"
    with serve_fleet(2, profile="l4", answer_tokens_mean=60, think_tokens_mean=0) as fleet:
        victim = fleet.replicas[1]

        def kill_when_a_quarter_is_done() -> None:
            while len(read_output(output)) < count // 4:
                time.sleep(0.05)
            os.kill(victim.pid, signal.SIGKILL)  # no goodbye, as an evicted pod

        killer = threading.Thread(target=kill_when_a_quarter_is_done, daemon=True)
        killer.start()
        summary = asyncio.run(
            arun_batch(
                inputs,
                output,
                concurrency=16,
                retries=3,
                endpoint=Endpoint(fleet.base_url, fleet.model),
                progress=False,
            )
        )
        killer.join(5)
    answered = read_output(output)
    ok = sum(1 for record in answered.values() if (record.get("response") or {}).get("status_code") == 200)
    print(f"  killed replica: {summary}".replace("\n", "\n  "))
    return len(answered), ok, count - len(answered)


def main() -> Report:
    report = Report("bench_fleet")
    print(f"machine: {machine_line()}")
    print(
        f"1. fleet throughput ({PROFILE}, {OUTPUT_TOKENS} output tokens, {PER_REPLICA} in flight per replica)"
    )
    for replicas in (1, 2, 4):
        measured, ideal = fleet_throughput(replicas)
        share = measured / ideal
        print(f"  {replicas} replicas: {measured:7.1f} requests/s, ideal {ideal:7.1f}: {share:.1%}")
        report.add(
            f"fleet throughput, {replicas} replica(s) vs N x one replica's ideal",
            f"{share:.1%}",
            ">= 90%",
            share >= 0.9,
        )
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        folder = Path(scratch)
        rates = batch_rates(folder)
        print(
            f"2. batch through the router: local {rates['local']:.1f} requests/s, ray x2 {rates['ray']:.1f}"
        )
        report.add(
            "batch job (LangChain path, 2 replicas): local / Ray 2 workers",
            f"{rates['local']:.1f} / {rates['ray']:.1f} requests/s",
        )
        written, ok, lost = killed_replica(folder)
        print(f"3. replica killed mid-batch: {written} lines, {ok} answered 200, {lost} lost")
        report.add("replica killed mid-batch: lines lost", str(lost), "0", lost == 0)
    report.print()
    return report


if __name__ == "__main__":
    main()
