"""Resilience figures for ``amap`` against the simulator: faults, a server that dies, cancellation,
checkpoints, and a soak run; one block per figure. The scenarios themselves are in
``benchmarks/resilience_scenarios.py`` (the tests in ``tests/test_resilience_*.py`` run them small).

    python -m benchmarks.bench_resilience            # every figure, full size (a few minutes)
    python -m benchmarks.bench_resilience --only soak --soak-requests 2000
"""

from __future__ import annotations

import argparse

from benchmarks.report import machine_line
from benchmarks.resilience_scenarios import (
    CancelResult,
    cancel_in_kernel,
    cancel_task,
    checkpoint_resume,
    fault_matrix,
    server_gone,
    soak,
)

SCENARIOS = ("faults", "gone", "cancel", "checkpoint", "soak")
CANCEL_TARGET_S = 1.0  # a cancelled or interrupted batch hands control back within a second


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma list of {SCENARIOS}")
    parser.add_argument("--prompts", type=int, default=1000, help="fault matrix size")
    parser.add_argument("--soak-requests", type=int, default=10_000)
    parser.add_argument("--soak-concurrency", type=int, default=256)
    args = parser.parse_args(argv)
    chosen = set(args.only.split(","))
    print(f"Resilience figures ({machine_line()})")
    if "faults" in chosen:
        print(
            "\nFault matrix: 20% of requests fail (8% 500/503, 4% 429 + Retry-After, 8% cut "
            "mid-way) and 4% are delayed 5 s (> the 3 s per-request timeout); concurrency 16"
        )
        for retries in (3, 0):
            for stream in (False, True):
                print(fault_matrix(args.prompts, retries=retries, stream=stream).report())
    if "gone" in chosen:
        print("\nServer gone mid-run (profile l4, concurrency 16, checkpoint on):")
        for retries in (3, 0):
            print(server_gone(retries=retries).report())
    if "cancel" in chosen:
        print(
            "\nCancellation (profile l4, 64 prompts, concurrency 8, cancelled after 8 finished; "
            f"target: control back within {CANCEL_TARGET_S:.0f} s):"
        )
        for result in [cancel_task(), *cancel_in_kernel()]:
            print(_with_target(result))
    if "checkpoint" in chosen:
        print("\nCheckpointing (profile l4, concurrency 16):")
        print(checkpoint_resume().report())
    if "soak" in chosen:
        print("\nSoak:")
        print(soak(args.soak_requests, concurrency=args.soak_concurrency).report())


def _with_target(result: CancelResult) -> str:
    met = "met" if result.returned_s < CANCEL_TARGET_S else "MISSED"
    return f"{result.report()}\n    target < {CANCEL_TARGET_S:.0f} s: {met}"


if __name__ == "__main__":
    main()
