"""Batch jobs in the OpenAI Batch file format against a vLLM endpoint, locally or on Ray.

``python -m helpers.batch INPUT.jsonl OUTPUT.jsonl [--engine local|ray] [--workers N] [--ray-address ADDR]
[--concurrency C]`` reads the lines ``vllm run-batch`` reads (and short ``{"prompt": ...}`` lines), sends
them to the endpoint (``QWEN_BASE_URL``: a router or one server; unset: the embedded simulator) through the
kit's LangChain chat model, and appends one OpenAI Batch output line per request as it finishes, Qwen3's
reasoning kept in the body. A re-run skips every ``custom_id`` already answered; bad input lines are
reported with their line number and do not stop the job. File formats: ``helpers.batch.files``.

Example (a notebook cell)::

    from helpers.batch import arun_batch
    summary = await arun_batch("data/batch/in.jsonl", "results/out.jsonl", concurrency=32)
    print(summary)      # lines, ok / truncated / failed, tokens, throughput
"""

from __future__ import annotations

import time
from pathlib import Path

from helpers.batch.engines import ENGINES, Settings, run_local, run_ray
from helpers.batch.files import BadLine, BatchRequest, OutputFile, answered, read_output, read_requests
from helpers.batch.summary import BatchSummary
from helpers.endpoint import Endpoint, resolve_endpoint
from helpers.loop import run

__all__ = [
    "ENGINES",
    "BadLine",
    "BatchRequest",
    "BatchSummary",
    "arun_batch",
    "read_output",
    "read_requests",
    "run_batch",
]


async def arun_batch(
    input_path: str | Path,
    output_path: str | Path,
    *,
    engine: str = "local",
    workers: int = 2,
    ray_address: str | None = None,
    concurrency: int = 32,
    retries: int = 2,
    timeout_s: float | None = 600.0,
    endpoint: Endpoint | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Run the batch in ``input_path``, appending to ``output_path``; return what happened.

    ``concurrency`` is per process: ``engine="ray"`` keeps up to ``workers * concurrency`` in flight.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "ray" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    requests, bad_lines = read_requests(input_path)
    done = {custom_id for custom_id, record in read_output(output_path).items() if answered(record)}
    pending = [request for request in requests if request.custom_id not in done]
    summary = BatchSummary(str(output_path), engine, lines=len(requests) + len(bad_lines))
    summary.skipped, summary.bad_lines = len(requests) - len(pending), bad_lines
    if not pending:
        return summary
    endpoint = endpoint or resolve_endpoint()
    settings = Settings(concurrency, retries, timeout_s, progress)
    started = time.perf_counter()
    with OutputFile(output_path) as output:

        def on_line(record: dict) -> None:
            output.append(record)
            summary.count(record)

        if engine == "local":
            await run_local(pending, endpoint, settings, on_line)
        else:
            await run_ray(pending, endpoint, settings, on_line, workers=workers, ray_address=ray_address)
    summary.elapsed_s = time.perf_counter() - started
    return summary


def run_batch(input_path: str | Path, output_path: str | Path, **options: object) -> BatchSummary:
    """:func:`arun_batch` from sync code (a script, or a notebook cell without ``await``)."""
    return run(arun_batch(input_path, output_path, **options))
