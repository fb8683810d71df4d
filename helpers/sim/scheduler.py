"""Continuous batching, as vLLM's scheduler does it, without any clock.

Each step the running sequences go first: a decoding sequence takes one token of the step's
budget (`max_num_batched_tokens`), a sequence still prefilling takes the next chunk of its
prompt. Waiting requests are then admitted in FIFO order while fewer than `max_num_seqs` run and
budget is left. A sequence whose prompt is fully prefilled in a step gets its first token at the
end of that step; every decoding sequence gets one token per step.

The live engine (engine.py) and the prediction (predict.py) drive this same class, one with the
wall clock and one with a virtual clock, so they cannot disagree about scheduling.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field


class Sequence:
    """What the scheduler needs to know about a request."""

    __slots__ = ("computed", "generated", "output_len", "prompt_tokens")

    def __init__(self, prompt_tokens: int, output_len: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.output_len = output_len
        self.computed = 0  # prompt tokens prefilled so far
        self.generated = 0  # output tokens so far


@dataclass
class Step:
    """One planned engine step."""

    decode: list = field(default_factory=list)
    prefill: list = field(default_factory=list)  # (sequence, prompt tokens in this chunk)
    prefill_tokens: int = 0

    @property
    def size(self) -> int:
        return len(self.decode) + len(self.prefill)


class Scheduler:
    """FIFO admission, chunked prefill, one token per running sequence per step."""

    def __init__(self, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be at least 1")
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque = deque()
        self.running: dict[int, Sequence] = {}

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop `seq` wherever it is (a client went away)."""
        if self.running.pop(id(seq), None) is None:
            with contextlib.suppress(ValueError):
                self.waiting.remove(seq)

    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def schedule(self) -> Step:
        step = Step()
        budget = self.max_num_batched_tokens
        for seq in self.running.values():
            if budget <= 0:
                break
            if seq.computed >= seq.prompt_tokens:
                step.decode.append(seq)
                budget -= 1
            else:
                chunk = min(seq.prompt_tokens - seq.computed, budget)
                step.prefill.append((seq, chunk))
                budget -= chunk
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting.popleft()
            self.running[id(seq)] = seq
            chunk = min(seq.prompt_tokens - seq.computed, budget)
            step.prefill.append((seq, chunk))
            budget -= chunk
        step.prefill_tokens = self.max_num_batched_tokens - budget - len(step.decode)
        return step

    def complete(self, step: Step) -> tuple[list, list]:
        """Apply a finished step: (sequences that got a token, sequences that are done)."""
        emitted = []
        for seq in step.decode:
            seq.generated += 1
            emitted.append(seq)
        for seq, chunk in step.prefill:
            seq.computed += chunk
            if seq.computed >= seq.prompt_tokens:
                seq.generated += 1
                emitted.append(seq)
        finished = []
        for seq in emitted:
            if seq.generated >= seq.output_len:
                finished.append(seq)
                self.running.pop(id(seq), None)
        return emitted, finished
