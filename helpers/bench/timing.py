"""When each call of LangChain's ``batch``/``abatch`` ran: a callback handler and two wrappers.

``batch`` returns only the replies; to see how the calls overlapped, :class:`RequestTimer` (a
LangChain callback handler) notes the start and end of every chat-model call, and
:func:`timed_batch` / :func:`timed_abatch` run a batch with it and return one row per input, ready
for :func:`helpers.plots.plot_timeline`.

Example:
    >>> result = timed_batch(model, prompts, max_concurrency=4)      # doctest: +SKIP
    >>> result.requests[["index", "start_s", "latency_s"]]            # doctest: +SKIP
    >>> plot_timeline(result.requests)                                # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

import pandas as pd
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable

INDEX_KEY = "request_index"  # the input's position, passed to the timer in each call's metadata
PROMPT_CHARS = 80
COLUMNS = ["label", "index", "prompt", "start_s", "end_s", "latency_s", "ok", "error", "output_tokens"]


class RequestTimer(BaseCallbackHandler):
    """Notes when each chat-model call starts and ends, in seconds since the timer was made.

    Pass it in ``config={"callbacks": [timer]}``; LangChain calls it from the worker thread
    (``batch``) or the event loop (``abatch``) that sends the request.
    """

    run_inline = True  # async runs: call it in the loop, not in an executor thread (exact times)

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self._spans: dict[UUID, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        now = time.perf_counter() - self.origin
        content = messages[0][-1].content if messages and messages[0] else ""
        prompt = content if isinstance(content, str) else str(content)
        if len(prompt) > PROMPT_CHARS:
            prompt = prompt[: PROMPT_CHARS - 3] + "..."
        with self._lock:
            self._spans[run_id] = {
                "index": (metadata or {}).get(INDEX_KEY),
                "prompt": prompt,
                "start_s": now,
                "end_s": float("nan"),
                "ok": False,
                "error": "",
                "output_tokens": None,
            }

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        now = time.perf_counter() - self.origin
        with self._lock:
            span = self._spans.get(run_id)
            if span is not None:
                span.update(end_s=now, ok=True, output_tokens=_output_tokens(response))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        now = time.perf_counter() - self.origin
        with self._lock:
            span = self._spans.get(run_id)
            if span is not None:
                span.update(end_s=now, ok=False, error=f"{type(error).__name__}: {error}")

    def frame(self, label: str = "") -> pd.DataFrame:
        """One row per call, by input position (or by start time when positions are unknown)."""
        with self._lock:
            rows = sorted(self._spans.values(), key=lambda span: span["start_s"])
        if any(row["index"] is None for row in rows):
            rows = [{**row, "index": i} for i, row in enumerate(rows)]
        frame = pd.DataFrame(rows, columns=COLUMNS[1:]).sort_values("index", ignore_index=True)
        frame["latency_s"] = frame["end_s"] - frame["start_s"]
        frame["output_tokens"] = frame["output_tokens"].astype("Int64")
        frame.insert(0, "label", label)
        return frame[COLUMNS]


class TimedBatch(NamedTuple):
    """What :func:`timed_batch` returns; unpacks as ``replies, requests, total_s``."""

    replies: list[Any]
    requests: pd.DataFrame
    total_s: float


def timed_batch(
    model: Runnable,
    inputs: Sequence[Any],
    *,
    max_concurrency: int,
    return_exceptions: bool = False,
    label: str | None = None,
) -> TimedBatch:
    """``model.batch(inputs)`` on a pool of ``max_concurrency`` threads, each call timed.

    As with ``batch``, a failed call raises unless ``return_exceptions=True`` (then the exception
    takes the reply's place and its row has ``ok=False`` and the error).
    """
    timer, configs = _timer_and_configs(inputs, max_concurrency)
    replies = model.batch(list(inputs), config=configs, return_exceptions=return_exceptions)
    total_s = time.perf_counter() - timer.origin
    return TimedBatch(replies, timer.frame(label or f"batch(max_concurrency={max_concurrency})"), total_s)


async def timed_abatch(
    model: Runnable,
    inputs: Sequence[Any],
    *,
    max_concurrency: int,
    return_exceptions: bool = False,
    label: str | None = None,
) -> TimedBatch:
    """``await model.abatch(inputs)`` with at most ``max_concurrency`` calls in flight, each timed."""
    timer, configs = _timer_and_configs(inputs, max_concurrency)
    replies = await model.abatch(list(inputs), config=configs, return_exceptions=return_exceptions)
    total_s = time.perf_counter() - timer.origin
    return TimedBatch(replies, timer.frame(label or f"abatch(max_concurrency={max_concurrency})"), total_s)


def _timer_and_configs(inputs: Sequence[Any], max_concurrency: int) -> tuple[RequestTimer, list[dict]]:
    if isinstance(inputs, (str, BaseMessage)):
        raise TypeError("inputs must be a list of inputs, not one prompt: pass [prompt]")
    if not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a whole number >= 1, got {max_concurrency!r}")
    timer = RequestTimer()
    configs = [
        {"max_concurrency": max_concurrency, "callbacks": [timer], "metadata": {INDEX_KEY: i}}
        for i in range(len(inputs))
    ]
    return timer, configs


def _output_tokens(response: LLMResult) -> int | None:
    try:
        usage = response.generations[0][0].message.usage_metadata  # type: ignore[attr-defined]
    except (IndexError, AttributeError):
        return None
    return usage.get("output_tokens") if usage else None
