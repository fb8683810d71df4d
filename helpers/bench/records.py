"""What one request and one run produced: plain data, no measuring and no reporting.

Times are seconds from ``time.perf_counter()``; a finished run shifts them so that 0 is the run start.

Example:
    >>> r = RequestRecord(index=0, start_s=0.0, end_s=1.0, ttft_s=0.1, output_tokens=10)
    >>> round(r.tpot_s, 3)
    0.1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class RequestRecord:
    """One request as the client saw it (the definitions of ``vllm bench serve``).

    ``ttft_s``: send to the first event carrying choices; ``ttfa_s``: send to the first answer token
    (after any reasoning); ``itl_s``: gaps between successive events carrying choices; ``end_s``: the
    last event carrying a token (streamed) or the full response (not streamed). A failed request keeps
    ``ok=False`` and the error text; it is counted, never dropped.

    ``attempts``: 2 when the request was sent again because the server had closed the reused
    connection before answering (``start_s`` stays the first send, so the lost time is counted).
    ``client_queue_s``: from the request's arrival to its send, the time it waited in the client
    for a concurrency slot (``client_queue_time`` of ``vllm bench serve``; not part of TTFT or
    E2EL). ``tokens_from_chunks``: the stream carried no ``usage``, so ``output_tokens`` counts the
    events that carried text (one token each in vLLM's streaming, so an estimate, not the
    tokenizer's count).
    """

    index: int
    start_s: float
    end_s: float
    ok: bool = True
    error: str = ""
    streamed: bool = False
    ttft_s: float | None = None
    ttfa_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    chunks: int = 0
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    attempts: int = 1
    client_queue_s: float | None = None
    tokens_from_chunks: bool = False

    @property
    def latency_s(self) -> float:
        """End-to-end latency (E2EL)."""
        return self.end_s - self.start_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (E2EL - TTFT) / (output_tokens - 1)."""
        if self.ttft_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1)

    def shifted(self, origin: float, index: int | None = None) -> RequestRecord:
        """A copy with times measured from ``origin`` (and a new index if given)."""
        return replace(
            self,
            index=self.index if index is None else index,
            start_s=self.start_s - origin,
            end_s=self.end_s - origin,
        )

    def as_row(self) -> dict[str, Any]:
        """A flat dict for a DataFrame row (``itl_s`` stays a list)."""
        return {
            "index": self.index,
            "ok": self.ok,
            "error": self.error,
            "streamed": self.streamed,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "latency_s": self.latency_s,
            "ttft_s": _nan(self.ttft_s),
            "ttfa_s": _nan(self.ttfa_s),
            "tpot_s": _nan(self.tpot_s),
            "chunks": self.chunks,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "tokens_from_chunks": self.tokens_from_chunks,
            "attempts": self.attempts,
            "client_queue_s": _nan(self.client_queue_s),
            "itl_s": list(self.itl_s),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RequestRecord:
        """Inverse of :meth:`as_row` (NaN and missing values become ``None``)."""
        return cls(
            index=int(row["index"]),
            start_s=float(row["start_s"]),
            end_s=float(row["end_s"]),
            ok=bool(row["ok"]),
            error=_text(row.get("error")),
            streamed=bool(row.get("streamed", False)),
            ttft_s=_none(row.get("ttft_s")),
            ttfa_s=_none(row.get("ttfa_s")),
            itl_s=[float(x) for x in row.get("itl_s") or []],
            chunks=int(row.get("chunks") or 0),
            prompt_tokens=_int_or_none(row.get("prompt_tokens")),
            output_tokens=_int_or_none(row.get("output_tokens")),
            reasoning_tokens=_int_or_none(row.get("reasoning_tokens")),
            tokens_from_chunks=_flag(row.get("tokens_from_chunks")),
            attempts=_int_or_none(row.get("attempts")) or 1,
            client_queue_s=_none(row.get("client_queue_s")),
        )


@dataclass
class RunResult:
    """All the requests of one run (warm-up excluded) and how the run was driven.

    ``duration_s`` is the wall time from the first send to the last answer; ``cpu_s`` the client
    process's CPU time over the same span; ``settings`` says how the load was generated (generator,
    path, concurrency, rate, burstiness, stream, max_tokens, warmup...).
    """

    records: list[RequestRecord]
    duration_s: float
    cpu_s: float = math.nan
    settings: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if self.duration_s < 0:
            raise ValueError(f"duration_s must be >= 0, got {self.duration_s}")
        if not self.label:
            self.label = describe_settings(self.settings)

    @property
    def completed(self) -> int:
        return sum(r.ok for r in self.records)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.records)

    @property
    def retried(self) -> int:
        """Requests sent twice because the server closed their reused connection first."""
        return sum(r.attempts > 1 for r in self.records)


def tokens_from_chunks(chunks: int) -> dict[str, Any]:
    """No usage in the stream: count the events after the role chunk (vLLM: one per engine step).

    ``vllm bench serve`` re-tokenizes the text instead; without the model's tokenizer this is the
    estimate, and the record says so (``tokens_from_chunks``).
    """
    return {"output_tokens": max(chunks - 1, 0), "tokens_from_chunks": True}


def describe_settings(settings: dict[str, Any]) -> str:
    """A short label such as ``closed c=8`` or ``open 4.0 req/s``."""
    generator = settings.get("generator", "run")
    if settings.get("rate") is not None:
        return f"{generator} {settings['rate']} req/s"
    if settings.get("concurrency") is not None:
        return f"{generator} c={settings['concurrency']}"
    return str(generator)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _int_or_none(value: Any) -> int | None:
    number = _none(value)
    return None if number is None else int(number)


def _flag(value: Any) -> bool:
    """A saved boolean (missing or NaN in files written before the column existed: False)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value).lower() in ("true", "1", "1.0")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
