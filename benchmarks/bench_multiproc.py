"""The measuring client scales with processes: streamed chunks/s read by 1 vs 2 load processes.

The same closed-loop load (``helpers.bench.multiproc``, lean client, 128 streams in all) sent from one
and from two load processes against the firehose server (``kit_tools.firehose``, never the limit:
each reply is pre-rendered, 4000 chunks long and written 1000 events at a time, so the server's CPU
per chunk is a fraction of the client's: its cost is mostly per request and per write, and at 1000
chunks a reply it took 0.27 core beside two lean clients, at 4000 0.15-0.17). Rounds alternate 1 and 2
processes; the figure is the median over the rounds.
Target: 2 processes read >= 1.8x the chunks/s of one. The client cores each setting used are
printed with it: on a 2-core machine the second process only helps as far as a second core is
free (the server needs ~0.08 core per client core here, and any other work on the machine counts).
The LangChain ``astream`` path is measured the same way (32 streams and fewer requests: it reads
~30x fewer chunks per CPU-second).

Run: ``python -m benchmarks.bench_multiproc`` (about three minutes).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from functools import partial

import psutil

from benchmarks.report import Report, machine_line
from helpers.bench import LeanClient, langchain_target, run_closed_loop_processes
from helpers.bench.multiproc import TargetFactory
from kit_tools.firehose import FirehoseServer, serve_firehose

CHUNKS = 4000  # token events per reply: long replies, so the server's per-request CPU is spread thin
EVENTS_PER_WRITE = 1000  # and its per-write CPU too (4 writes a reply)
ROUNDS = 7  # the lean path's; one run is ~3 s, and a 2-vCPU VM's per-core speed drifts between runs
TARGET = 1.8


@dataclass
class ClientPath:
    name: str
    factory: TargetFactory
    concurrency: int  # streams in flight in all, split over the processes (16 each was too few
    # for the lean client to keep its core busy: it waited on the server's writes)
    requests: int  # per run: a few seconds of load from one process
    rounds: int


@dataclass
class Measured:
    chunks_per_s: float
    client_cores: float  # the load processes' CPU seconds per second of run
    server_cores: float  # the firehose's CPU over the call (warm-up too) per second of run


def measure(server: FirehoseServer, path: ClientPath, processes: int) -> Measured:
    firehose = psutil.Process(server.process.pid)
    before = sum(firehose.cpu_times()[:2])
    run = run_closed_loop_processes(
        path.factory,
        ["p"] * path.requests,
        concurrency=path.concurrency,
        processes=processes,
        warmup=path.concurrency,
    )
    server_cpu = sum(firehose.cpu_times()[:2]) - before
    assert run.failed == 0, run.records[0].error if run.records else "no records"
    chunks = sum(record.chunks for record in run.records)
    return Measured(chunks / run.duration_s, run.cpu_s / run.duration_s, server_cpu / run.duration_s)


def compare(server: FirehoseServer, path: ClientPath) -> dict[int, list[Measured]]:
    """Interleaved rounds: 1 process, 2 processes, 1, 2, ..."""
    measured: dict[int, list[Measured]] = {1: [], 2: []}
    for round_number in range(path.rounds):
        for processes in (1, 2):
            figures = measure(server, path, processes)
            measured[processes].append(figures)
            print(
                f"  {path.name}, round {round_number + 1}, {processes} process(es): "
                f"{figures.chunks_per_s:9,.0f} chunks/s, client {figures.client_cores:.2f} cores, "
                f"server {figures.server_cores:.2f} cores, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return measured


def main() -> Report:
    report = Report("bench_multiproc")
    print(f"machine: {machine_line()}")
    print(
        f"streamed chunks/s read by 1 vs 2 load processes (firehose: {CHUNKS} chunks a reply, "
        f"{EVENTS_PER_WRITE} events a write; median of interleaved rounds)"
    )
    with serve_firehose(chunks=CHUNKS, events_per_write=EVENTS_PER_WRITE) as server:
        lean = partial(LeanClient, server.base_url, "firehose", max_tokens=CHUNKS)
        langchain = partial(langchain_target, server.base_url, "firehose", max_retries=0)
        paths = [ClientPath("lean", lean, 128, 384, ROUNDS), ClientPath("langchain", langchain, 32, 64, 3)]
        for path in paths:
            measured = compare(server, path)
            one, two = (statistics.median(m.chunks_per_s for m in measured[n]) for n in (1, 2))
            ratios = [b.chunks_per_s / a.chunks_per_s for a, b in zip(measured[1], measured[2], strict=True)]
            ratio = two / one
            cores = [statistics.median(m.client_cores for m in measured[n]) for n in (1, 2)]
            server_cores = statistics.median(m.server_cores for m in measured[2])
            print(
                f"  {path.name}: 1 process {one:,.0f} chunks/s, 2 processes {two:,.0f}: {ratio:.2f}x "
                f"(per-round ratios {min(ratios):.2f}-{max(ratios):.2f}); client cores "
                f"{cores[0]:.2f} / {cores[1]:.2f}, server {server_cores:.2f} cores with 2"
            )
            met = ratio >= TARGET if path.name == "lean" else None
            report.add(
                f"streamed chunks/s, {path.name} path, {path.concurrency} streams: 1 / 2 load processes "
                "(ratio of medians; rounds; client cores used)",
                f"{one:,.0f} / {two:,.0f} ({ratio:.2f}x; {min(ratios):.2f}-{max(ratios):.2f}x; "
                f"{cores[0]:.2f} / {cores[1]:.2f})",
                f">= {TARGET}x" if met is not None else "",
                met,
            )
    report.print()
    return report


if __name__ == "__main__":
    main()
