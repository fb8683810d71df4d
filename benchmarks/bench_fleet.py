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
import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.report import Report, machine_line
from helpers.batch import arun_batch, read_output
from helpers.bench.lean_client import LeanClient
from helpers.bench.load import run_closed_loop
from helpers.bench.metrics import summarize
from helpers.endpoint import Endpoint
from helpers.ray_start import start_ray
from helpers.server_metrics import metrics_delta
from helpers.sim import predict
from helpers.sim.fleet import serve_fleet

PROFILE = "t4"
OUTPUT_TOKENS = 64
PER_REPLICA = 32
ROUNDS = 6  # requests per client slot
# (replicas, model clock, through the router): 1 / 2 / 4 replicas behind the router, then two runs
# that say where a shortfall at 4 comes from: the same 4 replicas with the client sending to each
# directly (one closed loop per replica, in one process: no router), and the 4 behind the router at
# half the model's speed (half the requests/s through this machine; the ideal is on the same clock).
FLEET_RUNS = ((1, 1.0, True), (2, 1.0, True), (4, 1.0, True), (4, 1.0, False), (4, 0.5, True))
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
LONG_ANSWERS = {"think_tokens_mean": 0, "answer_tokens_mean": 10_000}  # every reply runs to max_tokens


@dataclass
class FleetRun:
    """One fleet size's closed loop: throughput against the ideal, and where this machine's CPU went."""

    replicas: int
    time_scale: float
    via_router: bool
    measured: float  # requests/s
    ideal: float  # N x one replica's predicted requests/s
    wall_s: float
    cpu_s: dict[str, float]  # replicas / router / client: CPU seconds over the run (warm-up included)
    machine_busy: float  # every process on the machine (this run's and others'): share of all cores busy
    late_steps: float  # simulator engine steps that ended later than the model says (its CPU was busy)
    lag_s: float  # their summed lateness

    @property
    def share(self) -> float:
        return self.measured / self.ideal

    @property
    def run_busy(self) -> float:
        """The CPU this run's processes used, as a share of all this machine's cores."""
        return sum(self.cpu_s.values()) / (self.wall_s * (os.cpu_count() or 1))

    @property
    def label(self) -> str:
        clock = "" if self.time_scale == 1 else f", model clock x{self.time_scale:g}"
        return f"{self.replicas} replica(s){clock}, " + ("via the router" if self.via_router else "no router")

    def line(self) -> str:
        cpu = ", ".join(f"{name} {seconds / self.wall_s:.0%}" for name, seconds in self.cpu_s.items())
        return (
            f"{self.label}: {self.measured:7.1f} requests/s, "
            f"ideal {self.ideal:7.1f}: {self.share:.1%} | CPU of one core: {cpu}; cores busy: this run "
            f"{self.run_busy:.0%}, whole machine {self.machine_busy:.0%} | late sim steps "
            f"{self.late_steps:.0f} ({self.lag_s:.2f} s)"
        )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (the router runs under a guard)."""
    parent = psutil.Process(pid)
    total = 0.0
    for process in (parent, *parent.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def fleet_throughput(replicas: int, time_scale: float = 1.0, via_router: bool = True) -> FleetRun:
    """A closed loop of ``PER_REPLICA`` x N (through the router, or to each replica directly), and
    what it cost each process."""
    ideal = predict(
        profile=PROFILE,
        concurrency=PER_REPLICA,
        prompt_tokens=20,
        output_tokens=OUTPUT_TOKENS,
        time_scale=time_scale,
    )
    options = {**LONG_ANSWERS, "time_scale": time_scale}
    router = "vllm-router" if via_router else None
    with serve_fleet(replicas, router=router, profile=PROFILE, policy="round_robin", **options) as fleet:
        urls = [fleet.base_url] if via_router else fleet.replica_urls
        in_flight = PER_REPLICA * replicas // len(urls)
        pids = {"replicas": [replica.pid for replica in fleet.replicas]}
        if fleet.router is not None:
            pids["router"] = [fleet.router.pid]
        before = {name: sum(map(_cpu_seconds, group)) for name, group in pids.items()}
        sim_before, client_before, wall_before = fleet.metrics(), time.process_time(), time.perf_counter()
        psutil.cpu_percent()  # starts the machine-wide count
        runs = asyncio.run(_closed_loops(urls, fleet.model, in_flight))
        wall = time.perf_counter() - wall_before
        cpu = {name: sum(map(_cpu_seconds, group)) - before[name] for name, group in pids.items()}
        cpu["client"] = time.process_time() - client_before
        machine_busy = psutil.cpu_percent() / 100
        sim = metrics_delta(sim_before, fleet.metrics())
    figures = [summarize(run) for run in runs]
    assert all(f["failed"] == 0 for f in figures), figures
    return FleetRun(
        replicas,
        time_scale,
        via_router,
        sum(f["request_throughput"] for f in figures),
        replicas * ideal.request_throughput,
        wall,
        cpu,
        machine_busy,
        sim.get("vllm_sim:engine_lag_steps_total", 0.0),
        sim.get("vllm_sim:engine_lag_seconds_total", 0.0),
    )


async def _closed_loops(urls: list[str], model: str, in_flight: int) -> list:
    """One closed loop of ``in_flight`` per URL, side by side in this process."""

    def loop(url: str):
        client = LeanClient(
            url, model, max_tokens=OUTPUT_TOKENS, stream=False, extra_body={**NO_THINKING, "ignore_eos": True}
        )
        prompts = [f"request {index}" for index in range(in_flight * ROUNDS)]
        return run_closed_loop(client, prompts, concurrency=in_flight, warmup=in_flight)

    return await asyncio.gather(*(loop(url) for url in urls))


def batch_file(path: Path, count: int, max_tokens: int = 240) -> Path:
    with path.open("w", encoding="utf-8") as lines:
        for index in range(count):
            body = {"messages": [{"role": "user", "content": f"问题 {index}"}], "max_tokens": max_tokens}
            record = {"custom_id": f"q{index}", "method": "POST", "url": "/v1/chat/completions"}
            lines.write(json.dumps({**record, "body": {**body, **NO_THINKING}}, ensure_ascii=False) + "\n")
    return path


def batch_rates(folder: Path, count: int = 300) -> dict[str, float]:
    """Requests/s of the same batch through a 2-replica fleet, engine local vs ray (2 workers)."""
    rates = {}
    inputs = batch_file(folder / "in.jsonl", count)
    with serve_fleet(2, profile="l4", answer_tokens_mean=40, think_tokens_mean=0) as fleet:
        endpoint = Endpoint(fleet.base_url, fleet.model)
        ray = start_ray(num_cpus=2)
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
    for replicas, time_scale, via_router in FLEET_RUNS:
        run = fleet_throughput(replicas, time_scale, via_router)
        print("  " + run.line())
        report.add(
            f"fleet throughput, {run.label}, vs N x one replica's ideal",
            f"{run.share:.1%} (cores busy: run {run.run_busy:.0%}, machine {run.machine_busy:.0%})",
            ">= 90%",
            run.share >= 0.9,
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
