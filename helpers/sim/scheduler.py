"""Continuous batching, as vLLM V1's scheduler does it, without any clock.

Each step the running sequences go first, in the order they were admitted: each schedules the
tokens it has not computed yet within the step's budget (`max_num_batched_tokens`): one for a
decoding sequence, the next chunk of its prompt for a prefilling one. When the KV cache cannot
give a running sequence the block it needs, the most recently admitted running sequence is
preempted (vLLM V1's recompute preemption): its blocks are freed, it goes back to the front of
the waiting queue with nothing computed, and later prefills its prompt plus the tokens it had
generated again (the prefix cache often still holds most of them); its client only sees a delay.
If nothing was preempted, waiting requests are then admitted in FIFO order while fewer than
`max_num_seqs` run, budget is left and the KV cache has the blocks for them; an admitted request
starts from its longest cached prefix (whole blocks). A sequence whose tokens are all computed at
the end of a step gets its next token then.

The live engine (engine.py) and the prediction (predict.py) drive this same class, one with the
wall clock and one with a virtual clock, so they cannot disagree about scheduling.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field

from helpers.sim.kv_cache import KVCache


class Sequence:
    """What the scheduler needs to know about a request.

    `tokens` are its token ids (any hashable values: prompt, then the output it will generate), used
    for prefix caching; None means a prompt nothing else shares.
    """

    __slots__ = (
        "computed",
        "generated",
        "kv_slots",
        "num_cached",
        "num_preemptions",
        "output_len",
        "prompt_tokens",
        "tokens",
    )

    def __init__(self, prompt_tokens: int, output_len: int, tokens: list | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.output_len = output_len
        self.tokens = tokens
        self.computed = 0  # tokens (prompt, then output) whose KV is computed
        self.generated = 0  # output tokens so far
        self.num_cached = -1  # prompt tokens found in the prefix cache when first admitted
        self.num_preemptions = 0
        self.kv_slots = 0  # token slots of the KV blocks it holds (kept by the scheduler)


@dataclass
class Step:
    """One planned engine step."""

    decode: list = field(default_factory=list)
    prefill: list = field(default_factory=list)  # (sequence, tokens computed in this chunk)
    prefill_tokens: int = 0
    preempted: list = field(default_factory=list)
    prefix_queries: int = 0  # prompt tokens looked up in the prefix cache (first admissions)
    prefix_hits: int = 0  # of which found cached

    @property
    def size(self) -> int:
        return len(self.decode) + len(self.prefill)


class Scheduler:
    """FIFO admission, chunked prefill, one token per running sequence per step, KV blocks.

    Without a `kv_cache` the KV cache never runs out and nothing is cached.
    """

    def __init__(
        self, max_num_seqs: int, max_num_batched_tokens: int, kv_cache: KVCache | None = None
    ) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be at least 1")
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.kv_cache = kv_cache
        self.waiting: deque = deque()
        self.running: dict[int, Sequence] = {}

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop `seq` wherever it is (a client went away)."""
        if self.running.pop(id(seq), None) is None:
            with contextlib.suppress(ValueError):
                self.waiting.remove(seq)
        if self.kv_cache is not None:
            self.kv_cache.free(seq)

    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def schedule(self) -> Step:
        step = Step()
        budget = self.max_num_batched_tokens
        kv = self.kv_cache
        size = kv.block_size if kv is not None else 0
        order = list(self.running.values())
        end = len(order)
        index = 0
        while index < end and budget > 0:
            seq = order[index]
            new = seq.prompt_tokens + seq.generated - seq.computed
            if new > budget:
                new = budget
            if kv is not None:
                start = seq.computed
                # A call only when the chunk needs a new block or fills one (to cache it).
                if start + new > seq.kv_slots or (start + new) // size != start // size:
                    while not kv.allocate(seq, seq.tokens, start, new):
                        end -= 1
                        victim = order[end]
                        self._preempt(victim)
                        step.preempted.append(victim)
                        if victim is seq:
                            break
                    if step.preempted and step.preempted[-1] is seq:
                        break
                    seq.kv_slots = kv.blocks_of(seq) * size
            if new == 1 and seq.generated:
                step.decode.append(seq)
            else:
                step.prefill.append((seq, new))
            budget -= new
            index += 1
        if not step.preempted:
            self._admit(step, budget)
        step.prefill_tokens = sum(chunk for _, chunk in step.prefill)
        return step

    def _admit(self, step: Step, budget: int) -> None:
        kv = self.kv_cache
        waiting, running = self.waiting, self.running
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            seq = waiting[0]
            num_tokens = seq.prompt_tokens + seq.generated
            hits = kv.lookup(seq, seq.tokens, num_tokens) if kv is not None and seq.tokens else []
            computed = len(hits) * kv.block_size if hits else 0
            new = min(num_tokens - computed, budget)
            if kv is not None and not kv.allocate(seq, seq.tokens, computed, new, hits):
                break  # FIFO: the head waits for blocks, nobody overtakes it
            waiting.popleft()
            running[id(seq)] = seq
            seq.computed = computed
            if kv is not None:
                seq.kv_slots = kv.blocks_of(seq) * kv.block_size
            if seq.num_cached < 0:
                seq.num_cached = computed
                if kv is not None and kv.enable_prefix_caching:
                    step.prefix_queries += num_tokens
                    step.prefix_hits += computed
            step.prefill.append((seq, new))
            budget -= new

    def _preempt(self, seq: Sequence) -> None:
        del self.running[id(seq)]
        self.kv_cache.free(seq)
        seq.computed = seq.kv_slots = 0
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)

    def complete(self, step: Step) -> tuple[list, list]:
        """Apply a finished step: (sequences that got a token, sequences that are done)."""
        emitted = []
        for seq in step.decode:
            seq.computed += 1
            seq.generated += 1
            emitted.append(seq)
        for seq, chunk in step.prefill:
            seq.computed += chunk
            if seq.computed >= seq.prompt_tokens + seq.generated:
                seq.generated += 1
                emitted.append(seq)
        finished = []
        kv = self.kv_cache
        for seq in emitted:
            if seq.generated >= seq.output_len:
                finished.append(seq)
                self.running.pop(id(seq), None)
                if kv is not None:
                    kv.free(seq)
        return emitted, finished
