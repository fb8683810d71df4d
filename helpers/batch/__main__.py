"""`python -m helpers.batch INPUT.jsonl OUTPUT.jsonl ...`: see helpers/batch/__init__.py."""

from __future__ import annotations

import argparse
import asyncio
import sys

from helpers.batch import ENGINES, arun_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.batch",
        description="Run an OpenAI Batch file (as vllm run-batch reads it) against QWEN_BASE_URL "
        "(unset: the embedded simulator); output lines are appended as requests finish.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("input", help="input JSONL: OpenAI Batch lines or {'prompt': ...} lines")
    parser.add_argument("output", help="output JSONL (appended; a re-run skips what it already answered)")
    parser.add_argument("--engine", choices=ENGINES, default="local", help="where the requests are sent from")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (engine ray)")
    parser.add_argument("--ray-address", default=None, help="a Ray cluster to join (default: start Ray here)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per process")
    parser.add_argument("--retries", type=int, default=2, help="retries of transient errors per request")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = asyncio.run(
            arun_batch(
                args.input,
                args.output,
                engine=args.engine,
                workers=args.workers,
                ray_address=args.ray_address,
                concurrency=args.concurrency,
                retries=args.retries,
                timeout_s=args.timeout,
                progress=not args.no_progress,
            )
        )
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 1 if summary.failed or summary.bad_lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
