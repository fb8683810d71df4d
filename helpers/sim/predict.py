"""What the engine will produce, from the same scheduler and step-time model, on a virtual clock.

`predict()` runs a closed loop of `concurrency` clients, each sending the next request as soon as
its previous one finishes, and reports steady-state means (the first round of requests is a
warm-up and is not counted). The KV cache is the engine's: the profile's capacity (or
`num_gpu_blocks`), so at high concurrency with long sequences preemption, not `max_num_seqs`, can
be what binds; requests share their first `prefix_tokens` prompt tokens (a system prompt; all of
them: identical prompts), which prefix caching (on by default, as vLLM) does not prefill again.
Requests reach the scheduler `frontend_s` after they are sent; an idle engine starts a step as
soon as one arrives, and requests that arrive while a step runs join the next one, exactly as in
engine.py.

Example:
    >>> round(predict(profile="l4", concurrency=1, prompt_tokens=256, output_tokens=128).ttft_s, 3)
    0.027
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass

from helpers.sim.kv_cache import KVCache
from helpers.sim.profiles import Profile, get_profile
from helpers.sim.scheduler import Scheduler, Sequence


@dataclass(frozen=True)
class Prediction:
    """Steady-state means of a closed loop (seconds, wall clock after `time_scale`)."""

    profile: str
    concurrency: int
    prompt_tokens: int
    output_tokens: int
    time_scale: float
    ttft_s: float
    itl_s: float
    tpot_s: float
    e2e_s: float
    request_throughput: float  # requests per second
    output_throughput: float  # tokens per second
    mean_running: float  # sequences per engine step
    decode_step_s: float  # a step with every running sequence decoding
    kv_cache_tokens: int = 0  # token slots of the KV cache's usable blocks
    preemptions_per_request: float = 0.0
    cached_tokens: float = 0.0  # mean prompt tokens found in the prefix cache

    def as_dict(self) -> dict:
        return asdict(self)


class _Client(Sequence):
    __slots__ = ("first_at", "gaps", "last_at", "sent_at")

    def __init__(self, prompt_tokens: int, output_tokens: int, sent_at: float, tokens: list | None) -> None:
        super().__init__(prompt_tokens, output_tokens, tokens)
        self.sent_at = sent_at
        self.first_at = 0.0
        self.last_at = 0.0
        self.gaps = 0.0


def predict(
    profile: str | Profile = "l4",
    concurrency: int = 32,
    prompt_tokens: int = 256,
    output_tokens: int = 128,
    time_scale: float = 1.0,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    rounds: int = 4,
    *,
    prefix_tokens: int = 0,
    enable_prefix_caching: bool = True,
    block_size: int = 16,
    num_gpu_blocks: int | None = None,
    gpu_memory_utilization: float = 0.9,
) -> Prediction:
    """Predict TTFT, ITL, E2E and throughput of a closed loop of requests sharing `prefix_tokens`."""
    if concurrency < 1 or prompt_tokens < 1 or output_tokens < 1:
        raise ValueError("concurrency, prompt_tokens and output_tokens must be at least 1")
    if not 0 <= prefix_tokens <= prompt_tokens:
        raise ValueError("prefix_tokens must be between 0 and prompt_tokens")
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    blocks = num_gpu_blocks or prof.num_gpu_blocks(block_size, gpu_memory_utilization)
    kv_cache = KVCache(blocks, block_size, enable_prefix_caching)
    if prompt_tokens + output_tokens > kv_cache.capacity_tokens:
        raise ValueError(
            f"one request ({prompt_tokens} + {output_tokens} tokens) does not fit the KV cache "
            f"({kv_cache.capacity_tokens} tokens): give it more blocks"
        )
    scheduler = Scheduler(
        max_num_seqs or prof.max_num_seqs, max_num_batched_tokens or prof.max_num_batched_tokens, kv_cache
    )
    prefix = [("prefix", index) for index in range(prefix_tokens)]
    warmup, measured = concurrency, concurrency * rounds
    arrivals: list[tuple[float, int, _Client]] = []
    counter = 0

    def send(at: float) -> None:
        nonlocal counter
        # After the shared prefix one value repeated: the hash chain makes the blocks unique.
        tokens = (
            prefix + [counter] * (prompt_tokens + output_tokens - prefix_tokens) if prefix_tokens else None
        )
        client = _Client(prompt_tokens, output_tokens, at, tokens)
        heapq.heappush(arrivals, (at + prof.frontend_s, counter, client))
        counter += 1

    for _ in range(concurrency):
        send(0.0)
    now, done, window_start = 0.0, 0, None
    ttft = itl = e2e = 0.0
    gaps = steps = batch = preemptions = cached = 0
    while done < warmup + measured:
        if not scheduler.has_work():
            # An idle engine starts a step for the first arrival alone: requests never reach
            # the server at exactly the same instant, the others join the next step.
            now = max(now, arrivals[0][0])
            scheduler.add(heapq.heappop(arrivals)[2])
        else:
            while arrivals and arrivals[0][0] <= now:
                scheduler.add(heapq.heappop(arrivals)[2])
        step = scheduler.schedule()
        duration = prof.step_time(step.size, step.prefill_tokens)
        if duration == 0.0:
            duration = 1e-9  # 'instant': keep the virtual clock moving
        now += duration
        steps += 1
        batch += step.size
        emitted, finished = scheduler.complete(step)
        for client in emitted:
            if client.generated == 1:
                client.first_at = now
            else:
                client.gaps += now - client.last_at
            client.last_at = now
        for client in finished:
            done += 1
            if done == warmup:
                window_start = now
            elif done > warmup:
                ttft += client.first_at - client.sent_at
                e2e += client.last_at - client.sent_at
                itl += client.gaps
                gaps += client.generated - 1
                preemptions += client.num_preemptions
                cached += client.num_cached
            send(now)
    duration = now - (window_start or 0.0)
    scale = 1.0 / time_scale
    running = min(concurrency, scheduler.max_num_seqs)
    return Prediction(
        profile=prof.name,
        concurrency=concurrency,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        time_scale=time_scale,
        ttft_s=ttft / measured * scale,
        itl_s=(itl / gaps if gaps else 0.0) * scale,
        tpot_s=(itl / gaps if gaps else 0.0) * scale,
        e2e_s=e2e / measured * scale,
        request_throughput=measured / duration / scale if duration else float("inf"),
        output_throughput=measured * output_tokens / duration / scale if duration else float("inf"),
        mean_running=batch / steps if steps else 0.0,
        decode_step_s=prof.step_time(running, 0) * scale,
        kv_cache_tokens=kv_cache.capacity_tokens,
        preemptions_per_request=preemptions / measured,
        cached_tokens=cached / measured,
    )
