"""The live engine: one asyncio task steps the scheduler on the wall clock.

Each step lasts `profile.step_time(...) / time_scale`. Steps are timed against absolute deadlines
so timer jitter does not add up, but a schedule that has fallen behind by more than half a step
restarts from now: missed steps are never run back to back in a burst. A step that ends more
than `LAG_TOLERANCE_S` after its deadline means the simulator itself is too slow (or starved of
CPU): it is counted in /metrics (`vllm_sim:engine_lag_*`) and logged (at most every 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from helpers.sim.kv_cache import KVCache
from helpers.sim.metrics import SimMetrics
from helpers.sim.profiles import Profile
from helpers.sim.scheduler import Scheduler, Sequence

log = logging.getLogger("helpers.sim")

LAG_TOLERANCE_S = 0.002
EARLY_WAKE_S = 0.0005  # uvloop timers have millisecond resolution
LAG_LOG_INTERVAL_S = 10.0


class EngineRequest(Sequence):
    """A request inside the engine, with its timings and a future the HTTP handler awaits."""

    __slots__ = (
        "aborted",
        "arrival",
        "finished",
        "first_token_at",
        "last_token_at",
        "queued_at",
        "ready_at",
        "stream",
        "waiter",
    )

    def __init__(
        self,
        prompt_tokens: int,
        output_len: int,
        stream: bool,
        arrival: float,
        ready_at: float,
        tokens: list | None = None,
    ) -> None:
        super().__init__(prompt_tokens, output_len, tokens)
        self.stream = stream
        self.waiter: asyncio.Future | None = None
        self.arrival = arrival  # perf_counter() when the HTTP request was received
        self.ready_at = ready_at  # when the frontend hands it to the scheduler
        self.queued_at = 0.0
        self.first_token_at = 0.0
        self.last_token_at = 0.0
        self.finished = False
        self.aborted = False

    async def wait(self) -> None:
        """Until the engine has something new for this request."""
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter


class Engine:
    """Runs steps while there is work; sleeps on an event when idle."""

    def __init__(
        self,
        profile: Profile,
        metrics: SimMetrics,
        *,
        time_scale: float = 1.0,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        kv_cache: KVCache | None = None,
    ) -> None:
        self.profile = profile
        self.metrics = metrics
        self.time_scale = time_scale
        self.kv_cache = kv_cache
        self.scheduler = Scheduler(
            max_num_seqs or profile.max_num_seqs,
            max_num_batched_tokens or profile.max_num_batched_tokens,
            kv_cache,
        )
        self._work = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._late_steps = 0
        self._late_seconds = 0.0
        self._last_lag_log = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, request: EngineRequest) -> None:
        request.queued_at = time.perf_counter()
        self.scheduler.add(request)
        self.metrics.waiting.set(len(self.scheduler.waiting))
        self._work.set()

    def abort(self, request: EngineRequest) -> None:
        if request.finished or request.aborted:
            return
        request.aborted = True
        self.scheduler.abort(request)
        self.metrics.success["abort"].inc()

    async def _run(self) -> None:
        clock = time.perf_counter
        scheduler, profile, metrics = self.scheduler, self.profile, self.metrics
        deadline = model_deadline = clock()
        while True:
            if not scheduler.has_work():
                metrics.running.set(0)
                metrics.waiting.set(0)
                if self.kv_cache is not None:  # aborted requests freed theirs
                    metrics.kv_usage.set(self.kv_cache.usage())
                self._work.clear()
                await self._work.wait()
                if not scheduler.has_work():
                    continue
                # The first step runs from when the request was due at the scheduler: a late
                # wake-up of its frontend sleep is absorbed (within the lag tolerance).
                now = clock()
                deadline = max(min(now, scheduler.waiting[0].ready_at), now - LAG_TOLERANCE_S)
                model_deadline = deadline
            step = scheduler.schedule()
            metrics.running.set(len(scheduler.running))
            metrics.waiting.set(len(scheduler.waiting))
            self._count_cache(step)
            duration = profile.step_time(step.size, step.prefill_tokens) / self.time_scale
            start = clock()
            deadline += duration
            model_deadline += duration  # the model's schedule, for the lag count only
            if deadline - start < duration / 2:
                # Behind schedule by more than half a step (a stall, a busy machine): start
                # afresh instead of running the missed steps back to back in a burst.
                deadline = start + duration
            delay = deadline - start
            if delay <= EARLY_WAKE_S:
                await asyncio.sleep(0)  # let the HTTP side run
            while delay > EARLY_WAKE_S:  # timers may fire early: sleep again if so
                await asyncio.sleep(delay)
                delay = deadline - clock()
            now = clock()
            late = now - model_deadline
            if late > LAG_TOLERANCE_S:
                self._record_lag(late, now)
                model_deadline = now
            self._finish_step(step, now)

    def _count_cache(self, step) -> None:
        metrics = self.metrics
        if step.preempted:
            metrics.preemptions.inc(len(step.preempted))
        if step.prefix_queries:
            metrics.prefix_queries.inc(step.prefix_queries)
        if step.prefix_hits:
            metrics.prefix_hits.inc(step.prefix_hits)
            metrics.prompt_tokens_cached.inc(step.prefix_hits)
            metrics.prompt_tokens_cached_device.inc(step.prefix_hits)

    def _finish_step(self, step, now: float) -> None:
        metrics = self.metrics
        metrics.steps.inc()
        emitted, finished = self.scheduler.complete(step)
        if self.kv_cache is not None:  # as vLLM's scheduler stats: after the step's finished are freed
            metrics.kv_usage.set(self.kv_cache.usage())
        if emitted:
            metrics.generation_tokens.inc(len(emitted))
        ttft, itl = metrics.ttft, metrics.itl
        for request in emitted:
            if request.aborted:
                continue
            if request.generated == 1:
                request.first_token_at = now
                ttft.observe(now - request.arrival)
                metrics.queue_time.observe(now - request.queued_at)
                metrics.prompt_tokens.inc(request.prompt_tokens)
                metrics.prefill_kv_computed.observe(request.prompt_tokens - max(request.num_cached, 0))
            else:
                itl.observe(now - request.last_token_at)
            request.last_token_at = now
            if request.stream:
                _wake(request)
        for request in finished:
            if request.aborted:
                continue
            request.finished = True
            metrics.e2e.observe(now - request.arrival)
            metrics.request_preemptions.observe(request.num_preemptions)
            _wake(request)

    def _record_lag(self, late: float, now: float) -> None:
        self.metrics.lag_steps.inc()
        self.metrics.lag_seconds.inc(late)
        self._late_steps += 1
        self._late_seconds += late
        if now - self._last_lag_log >= LAG_LOG_INTERVAL_S:
            log.warning(
                "simulator lag: %d engine steps ended late by %.3f s in total (profile %s, "
                "time_scale %g). The simulator's CPU, not the modelled GPU, is the limit now: "
                "lower the concurrency or the time_scale. See vllm_sim:engine_lag_* in /metrics.",
                self._late_steps,
                self._late_seconds,
                self.profile.name,
                self.time_scale,
            )
            self._last_lag_log = now
            self._late_steps = 0
            self._late_seconds = 0.0


def _wake(request: EngineRequest) -> None:
    waiter = request.waiter
    if waiter is not None:
        request.waiter = None
        if not waiter.done():
            waiter.set_result(None)
