"""Resilience scenarios for ``amap`` against the simulator: faults, a server that dies,
cancellation, checkpoints, and a soak run. Each scenario is a function that measures and returns a
result with a ``report()``; nothing here prints.

Repo tooling, not part of the ``helpers`` package: ``benchmarks/bench_resilience.py`` runs the
scenarios at full size and prints the figures, and ``tests/test_resilience_*.py`` run them small
and check them (the repo root is on ``sys.path`` under pytest, from the root ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import signal
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from helpers.chat import make_chat_model
from helpers.concurrency import BatchCancelled, amap
from helpers.endpoint import Endpoint
from helpers.outcomes import Outcome
from helpers.prompts import load_prompts
from helpers.retry import Backoff
from helpers.sim import SimServer, SimServerError, serve

ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = ROOT / "data" / "runs"
SHORT_REPLIES = {"think_tokens_mean": 16, "answer_tokens_mean": 16}
FAULT_KINDS = ("500", "503", "429", "disconnect", "latency_spike")
REFUSALS = ("500", "503", "429")  # answered at once with an error status


# --- shared measurement helpers ------------------------------------------------------------------


def numbered_prompts(count: int) -> list[str]:
    """``count`` distinct prompts (the shipped zh/en set, numbered) so order is checkable."""
    base = load_prompts("mixed")
    return [f"[{index}] {base[index % len(base)]}" for index in range(count)]


def start_simulator(log_name: str = "resilience-sim", **settings: object) -> SimServer:
    """``helpers.sim.serve(...)`` with the simulator's stderr appended to ``data/runs/<log_name>.log``.

    The simulator logs every client that hangs up mid-request (which these scenarios do on
    purpose); the log file keeps the figures readable. Use it as ``with start_simulator(...)``.
    """
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    return serve(log_file=RUNS_DIR / f"{log_name}.log", **settings)  # type: ignore[arg-type]


def server_counts(server: SimServer) -> Counter[str]:
    """From ``/metrics``: finished requests by reason (``finished:stop``...) and injected faults."""
    counts: Counter[str] = Counter()
    text = httpx.get(f"{server.root_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:request_success_total":
                counts[f"finished:{sample.labels['finished_reason']}"] += int(sample.value)
            elif sample.name == "vllm_sim:injected_faults_total":
                counts[sample.labels["kind"]] += int(sample.value)
    return counts


def requests_received(counts: Counter[str]) -> int:
    """Requests the server took: finished for any reason (cuts and aborts too) plus refusals."""
    finished = sum(value for key, value in counts.items() if key.startswith("finished:"))
    return finished + sum(counts[kind] for kind in REFUSALS)


def settled_counts(server: SimServer, expected_requests: int, wait_s: float) -> Counter[str]:
    """Server counts once every request the client gave up on has ended server-side too."""
    deadline = time.monotonic() + wait_s
    counts = server_counts(server)
    while requests_received(counts) < expected_requests and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = server_counts(server)
    return counts


def fault_of(outcome: Outcome) -> str | None:
    """The injected fault a failed outcome's error names, or None if it names none."""
    text = outcome.error or ""
    if outcome.error_type == "RequestTimeout":
        return "timeout"  # a latency spike, or a reply slowed by an overloaded machine
    if match := re.search(r"\b(500|503|429)\b", text):
        return match.group(1)
    if outcome.error_type == "IncompleteStream" or re.search(
        r"RemoteProtocolError|peer closed|incomplete|Connection reset", text
    ):
        return "disconnect"
    return None


def order_kept(outcomes: list[Outcome], prompts: list[str]) -> bool:
    return [(o.index, o.prompt) for o in outcomes] == list(enumerate(prompts))


def lost(outcomes: list[Outcome], prompts: list[str]) -> int:
    """Prompts without an outcome, or with a failure that does not say what happened."""
    answered = {o.index for o in outcomes if (o.ok and o.answer) or (o.error_type and o.error)}
    return len(prompts) - len(answered)


def kit_model(server: SimServer, **kwargs: object):
    """The kit's chat model (thinking on, short replies) pointed at ``server``."""
    return make_chat_model(
        thinking=kwargs.pop("thinking", True),  # type: ignore[arg-type]
        endpoint=Endpoint(server.base_url),
        max_tokens=kwargs.pop("max_tokens", 256),  # type: ignore[arg-type]
        **kwargs,
    )


# --- fault matrix ---------------------------------------------------------------------------------


@dataclass
class MatrixResult:
    label: str
    prompts: int
    ok: int
    lost: int
    order_kept: bool
    attempts: int
    server_requests: int
    faults: Counter[str]
    failure_causes: Counter[str]
    failures_without_cause: int
    elapsed_s: float

    @property
    def ok_share(self) -> float:
        return self.ok / self.prompts

    def report(self) -> str:
        injected = sum(self.faults[kind] for kind in FAULT_KINDS)
        faults = ", ".join(f"{kind} x{self.faults[kind]}" for kind in FAULT_KINDS)
        causes = ", ".join(f"{kind} x{n}" for kind, n in sorted(self.failure_causes.items())) or "-"
        return "\n".join(
            [
                f"  {self.label}: {self.prompts} prompts in {self.elapsed_s:.1f} s",
                f"    ok {self.ok} ({100 * self.ok_share:.1f}%), failed {self.prompts - self.ok}, "
                f"lost {self.lost}, order kept: {self.order_kept}",
                f"    requests sent {self.attempts} (server received {self.server_requests}); "
                f"faults injected {injected} ({100 * injected / max(1, self.server_requests):.1f}% "
                f"of requests): {faults}",
                f"    failures by the cause their error names (timeout: a spike, or an overloaded "
                f"machine): {causes}; "
                f"failures naming no cause: {self.failures_without_cause}",
            ]
        )


def fault_matrix(
    count: int = 1000,
    *,
    retries: int = 3,
    stream: bool = False,
    concurrency: int = 16,
    timeout_s: float = 3.0,
    spike_s: float = 5.0,
    seed: int = 0,
) -> MatrixResult:
    """``count`` prompts through amap with 20% of requests failing (500/503, 429, cut) plus spikes.

    Faults per request: 8% 500/503, 4% 429 with ``Retry-After: 1``, 8% connection cut mid-way;
    independently, 4% wait ``spike_s`` before being scheduled, longer than amap's ``timeout_s``
    (a spike on a request that also gets an error status is not counted: the error comes first).
    """
    prompts = numbered_prompts(count)
    with start_simulator(
        profile="instant",
        fail_rate=0.08,
        rate_limit_rate=0.04,
        disconnect_rate=0.08,
        latency_spike_rate=0.04,
        latency_spike_s=spike_s,
        fault_seed=seed,
        **SHORT_REPLIES,
    ) as server:
        model = kit_model(server)
        started = time.perf_counter()
        outcomes = asyncio.run(
            amap(
                model,
                prompts,
                concurrency=concurrency,
                retries=retries,
                timeout=timeout_s,
                stream=stream,
                backoff=Backoff(base_s=0.2, max_s=2.0, seed=seed),
                progress=False,
            )
        )
        elapsed = time.perf_counter() - started
        attempts = sum(o.attempts for o in outcomes)
        counts = settled_counts(server, attempts, wait_s=spike_s + 2)
    failed = [o for o in outcomes if not o.ok]
    causes = Counter(fault_of(o) for o in failed)
    without_cause = causes.pop(None, 0)
    mode = "streamed" if stream else "non-streamed"
    return MatrixResult(
        label=f"{mode}, retries={retries}",
        prompts=count,
        ok=len(outcomes) - len(failed),
        lost=lost(outcomes, prompts),
        order_kept=order_kept(outcomes, prompts),
        attempts=attempts,
        server_requests=requests_received(counts),
        faults=Counter({kind: counts[kind] for kind in FAULT_KINDS}),
        failure_causes=causes,  # type: ignore[arg-type]  # None was popped
        failures_without_cause=without_cause,
        elapsed_s=elapsed,
    )


# --- server gone mid-run ------------------------------------------------------------------------


@dataclass
class GoneResult:
    retries: int
    prompts: int
    finished_before_kill: int
    kept: bool
    lost: int
    order_kept: bool
    restart_s: float
    ok_first_try: int
    ok_after_retry: int
    retried_types: Counter[str]
    failed_types: Counter[str]
    failure_example: str
    elapsed_s: float

    def report(self) -> str:
        retried = ", ".join(f"{k} x{v}" for k, v in self.retried_types.most_common()) or "-"
        failed = ", ".join(f"{k} x{v}" for k, v in self.failed_types.most_common()) or "none"
        lines = [
            f"  retries={self.retries}: {self.prompts} prompts, simulator killed (SIGKILL) after "
            f"{self.finished_before_kill} had finished, back on the same port {self.restart_s:.2f} s "
            f"later; batch took {self.elapsed_s:.1f} s",
            f"    finished before the kill kept unchanged: {self.kept}; lost {self.lost}; "
            f"order kept: {self.order_kept}",
            f"    after the kill: ok on first try {self.ok_first_try}, ok after retrying "
            f"{self.ok_after_retry} (retried: {retried}); failed: {failed}",
        ]
        if self.failure_example:
            lines.append(f"    e.g. {self.failure_example}")
        return "\n".join(lines)


def server_gone(count: int = 200, *, retries: int = 3, concurrency: int = 16) -> GoneResult:
    """Kill the simulator half-way through a batch, restart it on the same port, look at outcomes."""
    prompts = numbered_prompts(count)
    settings = {"profile": "l4", "answer_tokens_mean": 60}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.jsonl"
        with start_simulator(**settings) as first:
            port = first.port
            model = kit_model(first, thinking=False, max_tokens=120)
            killed: dict[int, dict] = {}

            async def kill_half_way_and_restart() -> tuple[SimServer, float]:
                while not path.exists() or len(path.read_text().splitlines()) < count // 2:
                    await asyncio.sleep(0.005)
                os.kill(first.pid, signal.SIGKILL)
                killed.update(_finished_lines(path))
                gone = time.perf_counter()
                restarted = await asyncio.to_thread(_start_on_port, port, settings)
                return restarted, time.perf_counter() - gone

            async def run_batch() -> tuple[list[Outcome], SimServer, float]:
                restarter = asyncio.create_task(kill_half_way_and_restart())
                batch = await amap(
                    model,
                    prompts,
                    concurrency=concurrency,
                    retries=retries,
                    timeout=30,
                    checkpoint=path,
                    progress=False,
                )
                restarted, restart_s = await restarter
                return batch, restarted, restart_s

            started = time.perf_counter()
            outcomes, second, restart_s = asyncio.run(run_batch())
            elapsed = time.perf_counter() - started
        second.stop()
    before = set(killed)
    after = [o for o in outcomes if o.index not in before]
    failed = [o for o in after if not o.ok]
    return GoneResult(
        retries=retries,
        prompts=count,
        finished_before_kill=len(before),
        kept=all(outcomes[i].to_json_dict() == record for i, record in killed.items()),
        lost=lost(outcomes, prompts),
        order_kept=order_kept(outcomes, prompts),
        restart_s=restart_s,
        ok_first_try=sum(o.ok and not o.retried for o in after),
        ok_after_retry=sum(o.ok and bool(o.retried) for o in after),
        retried_types=Counter(kind for o in after for kind in o.retried),
        failed_types=Counter(_with_root_cause(o) for o in failed),
        failure_example=f"{failed[-1].error_type}: {failed[-1].error}" if failed else "",
        elapsed_s=elapsed,
    )


def _with_root_cause(outcome: Outcome) -> str:
    """``OpenAIConnectionError <- ConnectError``: the error type and the root cause's type."""
    match = re.search(r"caused by (\w+)", outcome.error or "")
    return f"{outcome.error_type} <- {match.group(1)}" if match else str(outcome.error_type)


def _finished_lines(path: Path) -> dict[int, dict]:
    import json

    records = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        records[record["index"]] = record
    return records


def _start_on_port(port: int, settings: dict) -> SimServer:
    """Restart the simulator on ``port`` (the killed one's), retrying while the port is still held."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return start_simulator(port=port, **settings)
        except SimServerError:  # the old socket may still hold the port for a moment
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- cancellation ---------------------------------------------------------------------------------


@dataclass
class CancelResult:
    how: str
    prompts: int
    returned_s: float
    finished: int
    kept: int
    in_flight_sockets: int
    pending_tasks: int
    open_sockets: int
    error_type: str

    def report(self) -> str:
        return (
            f"  {self.how}: returned in {self.returned_s:.3f} s with {self.error_type}; "
            f"{self.kept} finished outcomes kept (checkpoint had {self.finished}); "
            f"sockets to the server {self.in_flight_sockets} before -> {self.open_sockets} after; "
            f"pending tasks left {self.pending_tasks}"
        )


def sockets_to(port: int, pid: int | None = None) -> int:
    """Open TCP connections from process ``pid`` (default: this one) to ``port``."""
    process = psutil.Process(pid)
    return sum(1 for c in process.net_connections(kind="tcp") if c.raddr and c.raddr.port == port)


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def cancel_task(count: int = 64, *, cancel_after: int = 8, concurrency: int = 8) -> CancelResult:
    """``task.cancel()`` on a running amap once ``cancel_after`` prompts have finished."""
    prompts = numbered_prompts(count)
    with (
        tempfile.TemporaryDirectory() as folder,
        start_simulator(profile="l4", answer_tokens_mean=100) as server,
    ):
        path = Path(folder) / "run.jsonl"
        model = kit_model(server, thinking=False, max_tokens=120)

        async def cancel_mid_batch() -> CancelResult:
            before = asyncio.all_tasks()
            task = asyncio.create_task(
                amap(model, prompts, concurrency=concurrency, checkpoint=path, progress=False)
            )
            while _lines(path) < cancel_after:
                await asyncio.sleep(0.005)
            in_flight = sockets_to(server.port)
            task.cancel()
            started = time.perf_counter()
            try:
                await task
            except BatchCancelled as cancelled:
                returned = time.perf_counter() - started
                outcomes = cancelled.outcomes
                error_type = type(cancelled).__name__
            else:
                raise RuntimeError("amap finished before it was cancelled; use more prompts")
            return CancelResult(
                how="task.cancel() on await amap(...)",
                prompts=count,
                returned_s=returned,
                finished=_lines(path),
                kept=sum(not o.cancelled for o in outcomes),
                in_flight_sockets=in_flight,
                pending_tasks=len(asyncio.all_tasks() - before),
                open_sockets=sockets_to(server.port),
                error_type=error_type,
            )

        return asyncio.run(cancel_mid_batch())


_KERNEL_SETUP = """
import asyncio, sys, psutil
from helpers.chat import make_chat_model
from helpers.concurrency import amap, map_prompts
from helpers.endpoint import Endpoint
from helpers.loop import run
model = make_chat_model(thinking=False, endpoint=Endpoint({base_url!r}), max_tokens=120)
prompts = {prompts!r}
"""
_KERNEL_CHECK = """
async def _pending_on_helpers_loop():
    return len(asyncio.all_tasks()) - 1
_error = sys.last_value
_kept = sum(not o.cancelled for o in getattr(_error, "outcomes", []))
_pending = len(asyncio.all_tasks()) - 1 - _tasks_before + run(_pending_on_helpers_loop())
_sockets = sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == {port})
print(type(_error).__name__, _kept, _pending, _sockets)
"""
_KERNEL_CELLS = {
    "KeyboardInterrupt (kernel interrupt) on `await amap(...)` in a Jupyter cell": (
        "outcomes = await amap(model, prompts, concurrency={concurrency}, checkpoint={path!r}, "
        "progress=False)"
    ),
    "KeyboardInterrupt (kernel interrupt) on `map_prompts(...)` in a Jupyter cell": (
        "outcomes = map_prompts(model, prompts, concurrency={concurrency}, checkpoint={path!r}, "
        "progress=False)"
    ),
}


def cancel_in_kernel(count: int = 64, *, cancel_after: int = 8, concurrency: int = 8) -> list[CancelResult]:
    """Interrupt a real Jupyter kernel (``km.interrupt_kernel()``) while a cell runs a batch."""
    from jupyter_client.manager import start_new_kernel

    results = []
    prompts = numbered_prompts(count)
    with (
        tempfile.TemporaryDirectory() as folder,
        start_simulator(profile="l4", answer_tokens_mean=100) as server,
    ):
        manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
        try:
            _execute(client, _KERNEL_SETUP.format(base_url=server.base_url, prompts=prompts))
            for how, template in _KERNEL_CELLS.items():
                path = Path(folder) / f"run{len(results)}.jsonl"
                _execute(client, "_tasks_before = len(asyncio.all_tasks()) - 1")
                # stop_on_error=False: an interrupted cell must not make the kernel abort the check
                # cell sent right after it (ipykernel's default), which failed this run at random.
                msg_id = client.execute(
                    template.format(concurrency=concurrency, path=str(path)),
                    store_history=False,
                    stop_on_error=False,
                )
                while _lines(path) < cancel_after:
                    time.sleep(0.005)
                in_flight = sockets_to(server.port, manager.provisioner.process.pid)
                started = time.perf_counter()
                manager.interrupt_kernel()
                reply = _reply_to(client, msg_id)
                returned = time.perf_counter() - started
                error_type, kept, pending, sockets = _execute(
                    client, _KERNEL_CHECK.format(port=server.port)
                ).split()
                results.append(
                    CancelResult(
                        how=how,
                        prompts=count,
                        returned_s=returned,
                        finished=_lines(path),
                        kept=int(kept),
                        in_flight_sockets=in_flight,
                        pending_tasks=int(pending),
                        open_sockets=int(sockets),
                        error_type=f"{reply['content'].get('ename')} (sys.last_value {error_type})",
                    )
                )
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    return results


def _execute(client, code: str) -> str:
    """Run ``code`` in the kernel; return its stdout, raise with the traceback on error."""
    printed: list[str] = []

    def collect(message: dict) -> None:
        if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
            printed.append(message["content"]["text"])

    reply = client.execute_interactive(code, timeout=120, output_hook=collect, store_history=False)
    if reply["content"]["status"] != "ok":
        raise RuntimeError("\n".join(reply["content"].get("traceback", [])))
    return "".join(printed)


def _reply_to(client, msg_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if message["parent_header"].get("msg_id") == msg_id:
            return message


# --- checkpointing --------------------------------------------------------------------------------


@dataclass
class CheckpointResult:
    prompts: int
    lines_while_running: list[int]
    finished_first_run: int
    sent_first_run: int
    sent_second_run: int
    expected_second_run: int
    from_checkpoint: int
    all_ok: bool
    path: str

    def report(self) -> str:
        growth = " -> ".join(str(n) for n in self.lines_while_running)
        return "\n".join(
            [
                f"  {self.prompts} prompts, checkpoint {self.path}: lines while the batch ran "
                f"{growth}; cancelled with {self.finished_first_run} finished "
                f"({self.sent_first_run} requests reached the server)",
                f"  re-run: {self.from_checkpoint} outcomes loaded from the checkpoint, "
                f"{self.sent_second_run} requests sent (server /metrics), expected "
                f"{self.expected_second_run} (prompts without a successful outcome); all ok: "
                f"{self.all_ok}",
            ]
        )


def checkpoint_resume(
    count: int = 200, *, path: Path | None = None, concurrency: int = 16
) -> CheckpointResult:
    """Cancel a long batch half-way, re-run it with the same checkpoint, count what is re-sent."""
    import json

    path = path or RUNS_DIR / "resilience-checkpoint.jsonl"
    path.unlink(missing_ok=True)
    prompts = numbered_prompts(count)
    with start_simulator(profile="l4", answer_tokens_mean=60) as server:
        model = kit_model(server, thinking=False, max_tokens=120)

        async def first_run() -> list[int]:
            seen: list[int] = []
            task = asyncio.create_task(
                amap(model, prompts, concurrency=concurrency, checkpoint=path, progress=False)
            )
            while (lines := _lines(path)) < count // 2:
                if not seen or seen[-1] != lines:
                    seen.append(lines)
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(BatchCancelled):
                await task
            return [*seen, _lines(path)]

        lines_seen = asyncio.run(first_run())
        time.sleep(0.5)  # the server ends the cancelled requests (abort) within its sweep
        sent_first = requests_received(server_counts(server))
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        done = {r["index"] for r in records if r["ok"]}
        again = asyncio.run(amap(model, prompts, concurrency=concurrency, checkpoint=path, progress=False))
        sent_total = requests_received(server_counts(server))
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    sample = lines_seen if len(lines_seen) <= 6 else [*lines_seen[:3], *lines_seen[-3:]]
    return CheckpointResult(
        prompts=count,
        lines_while_running=sample,
        finished_first_run=len(records),
        sent_first_run=sent_first,
        sent_second_run=sent_total - sent_first,
        expected_second_run=count - len(done),
        from_checkpoint=sum(o.from_checkpoint for o in again),
        all_ok=all(o.ok for o in again),
        path=str(shown),
    )


# --- soak -----------------------------------------------------------------------------------------


@dataclass
class SoakResult:
    requests: int
    concurrency: int
    ok: int
    elapsed_s: float
    rss_growth_mb: float
    fds_before: int
    fds_after: int
    warnings: list[str] = field(default_factory=list)

    def report(self) -> str:
        shown = "; ".join(self.warnings[:3]) or "none"
        return (
            f"  {self.requests} requests at concurrency {self.concurrency} (profile instant): "
            f"{self.ok} ok in {self.elapsed_s:.1f} s ({self.requests / self.elapsed_s:.0f} req/s); "
            f"client RSS growth {self.rss_growth_mb:.1f} MB; open fds {self.fds_before} before, "
            f"{self.fds_after} after; warnings and warning logs (ResourceWarning, unclosed...): "
            f"{len(self.warnings)} ({shown})"
        )


class _Records(logging.Handler):
    """Collects log records (asyncio logs "Unclosed ..." and "Task was destroyed ..." this way)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def soak(requests: int = 10_000, *, concurrency: int = 256, warmup: int = 300) -> SoakResult:
    """Many requests through one model; client memory, file descriptors, warnings and logs after.

    File descriptors are compared with the count before any request; memory with the count after
    a warm-up batch (first-use imports and caches are not growth).
    """
    process = psutil.Process()
    logs = _Records()
    logging.getLogger().addHandler(logs)
    try:
        with start_simulator(profile="instant", think_tokens_mean=8, answer_tokens_mean=8) as server:
            model = kit_model(server, thinking=False, max_tokens=32)
            gc.collect()  # what earlier code left behind is not this run's to report
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                gc.collect()
                fds_before = process.num_fds()
                asyncio.run(amap(model, numbered_prompts(warmup), concurrency=concurrency, progress=False))
                gc.collect()
                rss_before = process.memory_info().rss
                started = time.perf_counter()
                outcomes = asyncio.run(
                    amap(model, numbered_prompts(requests), concurrency=concurrency, progress=False)
                )
                elapsed = time.perf_counter() - started
                ok = sum(o.ok for o in outcomes)
                del outcomes, model
                gc.collect()
                rss_after = process.memory_info().rss
                fds_after = process.num_fds()
    finally:
        logging.getLogger().removeHandler(logs)
    return SoakResult(
        requests=requests,
        concurrency=concurrency,
        ok=ok,
        elapsed_s=elapsed,
        rss_growth_mb=(rss_after - rss_before) / 2**20,
        fds_before=fds_before,
        fds_after=fds_after,
        warnings=[f"{w.category.__name__}: {w.message}" for w in caught]
        + [f"log {r.name} {r.levelname}: {r.getMessage()}" for r in logs.records],
    )
