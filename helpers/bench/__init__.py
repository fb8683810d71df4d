"""Benchmark engine: load generators, request paths, vLLM-style metrics, results on disk.

Kept apart like vLLM's ``benchmarks/serve.py``: *targets* time one request (the lean aiohttp SSE
reader or a LangChain model), *load generators* decide when requests are sent, *metrics* turn
request records into per-run figures, *results* save and load them with their metadata;
*timing* notes when the calls of LangChain's own ``batch``/``abatch`` ran, for timelines;
*multiproc* sends one closed- or open-loop run from several load processes, merged on one clock.

Example (in a notebook cell; in a script wrap it in ``asyncio.run``)::

    from helpers.bench import LeanClient, run_closed_loop, summarize
    client = LeanClient(endpoint.base_url, endpoint.model, max_tokens=128)
    run = await run_closed_loop(client, ["你是谁?"] * 20, concurrency=20)
    summarize(run)["request_throughput"]
"""

from helpers.extras import require_extra

require_extra("bench", ["numpy", "pandas", "orjson"], needed_for="the benchmark engine (helpers.bench)")


from helpers.bench.lean_client import LeanClient
from helpers.bench.load import (
    arrival_offsets,
    run_closed_loop,
    run_open_loop,
    run_serial,
    run_threads,
)
from helpers.bench.metrics import (
    SLO,
    max_concurrency,
    percentile_table,
    requests_frame,
    summarize,
    summary_frame,
)
from helpers.bench.multiproc import (
    LoadProcessError,
    langchain_target,
    run_closed_loop_processes,
    run_open_loop_processes,
)
from helpers.bench.records import RequestRecord, RunResult
from helpers.bench.results import (
    BenchResult,
    collect_metadata,
    default_results_dir,
    describe_metadata,
    load_result,
    machine_info,
    save_result,
)
from helpers.bench.sweep import (
    ideal_frame,
    sweep_concurrency,
    sweep_concurrency_processes,
    sweep_rates,
    sweep_rates_processes,
)
from helpers.bench.targets import LangChainTarget
from helpers.bench.timing import RequestTimer, TimedBatch, timed_abatch, timed_batch

__all__ = [
    "SLO",
    "BenchResult",
    "LangChainTarget",
    "LeanClient",
    "LoadProcessError",
    "RequestRecord",
    "RequestTimer",
    "RunResult",
    "TimedBatch",
    "arrival_offsets",
    "collect_metadata",
    "default_results_dir",
    "describe_metadata",
    "ideal_frame",
    "langchain_target",
    "load_result",
    "machine_info",
    "max_concurrency",
    "percentile_table",
    "requests_frame",
    "run_closed_loop",
    "run_closed_loop_processes",
    "run_open_loop",
    "run_open_loop_processes",
    "run_serial",
    "run_threads",
    "save_result",
    "summarize",
    "summary_frame",
    "sweep_concurrency",
    "sweep_concurrency_processes",
    "sweep_rates",
    "sweep_rates_processes",
    "timed_abatch",
    "timed_batch",
]
