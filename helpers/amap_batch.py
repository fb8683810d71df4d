"""One amap call at work: workers, attempts, retries, outcomes, progress bar and checkpoint.

``helpers.concurrency.amap`` checks its arguments and hands them to :class:`Batch`; each worker takes
the next prompt, tries it (per-attempt timeout, a cut stream is ``IncompleteStream``), retries
transient errors with backoff (``helpers.retry``) and records one :class:`~helpers.outcomes.Outcome`.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import AddableDict
from tqdm.auto import tqdm

from helpers.amap_models import model_without_hidden_retries
from helpers.checkpoint import Checkpoint
from helpers.inputs import as_record
from helpers.outcomes import CANCELLED, TRUNCATED, Outcome
from helpers.replies import (
    ReplyContent,
    ReplyProblem,
    ReplyWatcher,
    finish_reason,
    problem_from_error,
    read_reply,
    watched,
)
from helpers.retry import Backoff, IncompleteStream, RequestTimeout, Verdict, classify, describe
from helpers.runnables import binds_tools, chat_models


class BatchCancelled(asyncio.CancelledError):
    """amap was cancelled; ``outcomes`` holds every prompt (unfinished: ``error_type="Cancelled"``)."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        finished = sum(not outcome.cancelled for outcome in outcomes)
        super().__init__(
            f"batch cancelled: {finished} of {len(outcomes)} prompts finished. The finished "
            "outcomes are in this exception's .outcomes (the others have error_type='Cancelled'); "
            "with checkpoint=... a re-run sends only the unfinished prompts."
        )


def _joined(chunks: list[Any]) -> Any:
    """All streamed chunks as one result, or None if none came.

    Message chunks are merged (one merge, not one per chunk), as are the dicts a
    ``RunnableParallel`` streams (``include_raw=True``); a parser's stream of ever more complete
    objects ends with the whole one.
    """
    if not chunks:
        return None
    if isinstance(chunks[0], AIMessageChunk):
        return chunks[0] + chunks[1:]
    if isinstance(chunks[0], AddableDict):
        return functools.reduce(operator.add, chunks)
    return chunks[-1]


class Batch:
    """State of one amap call: outcomes so far, counters, progress bar, checkpoint."""

    def __init__(
        self,
        items: list[Any],
        *,
        retries: int,
        timeout: float | None,
        backoff: Backoff,
        stream: bool,
        config: RunnableConfig | None,
        store: Checkpoint | None,
        on_outcome: Callable[[Outcome], None] | None,
        accept_truncated: bool,
        retry_invalid: bool,
    ) -> None:
        self.items = items
        self.records = [as_record(item) for item in items]
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.stream = stream
        self.config = config
        self.store = store
        self.on_outcome = on_outcome
        self.accept_truncated = accept_truncated
        self.retry_invalid = retry_invalid
        self.outcomes: list[Outcome | None] = [None] * len(items)
        self.ok = self.failed = self.truncated = self.retried = 0
        self.on_outcome_calls = self.on_outcome_failures = 0
        self.bar: Any = None
        self.model: Runnable | None = None
        self.tools_bound = False
        self.streams_under_the_hood = False
        self.watch_messages = True

    async def _ask(self, item: Any, config: RunnableConfig, watcher: ReplyWatcher) -> Any:
        """One attempt's raw result, or an exception (IncompleteStream for a cut stream)."""
        assert self.model is not None
        if self.stream:
            kwargs = {"stream_usage": True} if hasattr(self.model, "stream_usage") else {}
            chunks = [chunk async for chunk in self.model.astream(item, config, **kwargs)]
            result = _joined(chunks)
            message = result if isinstance(result, BaseMessage) else watcher.message
            if (message is None and result is None) or (message is not None and not finish_reason(message)):
                raise IncompleteStream(
                    f"the stream ended after {len(chunks)} chunks without a finish_reason (cut "
                    "mid-way); the partial answer was discarded"
                )
            return result
        result = await self.model.ainvoke(item, config)
        message = result if isinstance(result, BaseMessage) else watcher.message
        if self.streams_under_the_hood and message is not None and not finish_reason(message):
            raise IncompleteStream("the reply ended without a finish_reason (stream cut mid-way)")
        return result

    async def _attempt(self, item: Any) -> ReplyContent:
        """One attempt: a usable ReplyContent, or an exception (a ReplyProblem for an unusable reply)."""
        watcher = ReplyWatcher()
        # A chat model's own result is its message; a chain's message is seen by the watcher.
        config = watched(self.config, watcher) if self.watch_messages else self.config
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                result = await self._ask(item, config, watcher)
        except TimeoutError:
            if deadline.expired():
                raise RequestTimeout(
                    f"no complete reply within {self.timeout:g} s (amap's per-request timeout)"
                ) from None
            raise
        except Exception as exc:
            problem = problem_from_error(
                exc, watcher.message, tools_bound=self.tools_bound, accept_truncated=self.accept_truncated
            )
            if problem is not None:
                raise problem from exc
            raise
        return read_reply(
            result,
            raw=watcher.message,
            tools_bound=self.tools_bound,
            accept_truncated=self.accept_truncated,
        )

    def _retryable(self, exc: Exception) -> Verdict:
        if isinstance(exc, ReplyProblem):
            return Verdict(retryable=self.retry_invalid)
        return classify(exc)

    async def _run_one(self, index: int) -> Outcome:
        item, record = self.items[index], self.records[index]
        started = time.perf_counter()
        retried: list[str] = []
        attempts = 0
        try:
            while True:
                attempts += 1
                try:
                    reply = await self._attempt(item)
                except Exception as exc:  # every error becomes this prompt's outcome
                    verdict = self._retryable(exc)
                    kind = exc.kind if isinstance(exc, ReplyProblem) else type(exc).__name__
                    if not verdict.retryable or attempts > self.retries:
                        return Outcome(
                            index=index,
                            prompt=record,
                            ok=False,
                            error_type=kind,
                            error=str(exc) if isinstance(exc, ReplyProblem) else describe(exc),
                            attempts=attempts,
                            latency_s=time.perf_counter() - started,
                            retried=retried,
                            **_partial(exc),
                        )
                    retried.append(kind)
                    self.retried += 1
                    self._show_counts()
                    await asyncio.sleep(self.backoff.delay(attempts, verdict.retry_after_s))
                    continue
                return Outcome(
                    index=index,
                    prompt=record,
                    ok=True,
                    answer=reply.answer,
                    reasoning=reply.reasoning,
                    attempts=attempts,
                    latency_s=time.perf_counter() - started,
                    usage=reply.usage,
                    finish_reason=reply.finish_reason,
                    retried=retried,
                    parsed=reply.parsed,
                )
        except asyncio.CancelledError:
            self.outcomes[index] = Outcome(
                index=index,
                prompt=record,
                ok=False,
                error_type=CANCELLED,
                error=f"cancelled while in flight (attempt {attempts})",
                attempts=attempts,
                latency_s=time.perf_counter() - started,
                retried=retried,
            )
            raise

    async def _worker(self, indices: Iterator[int]) -> None:
        for index in indices:
            outcome = await self._run_one(index)
            self.outcomes[index] = outcome
            if outcome.ok:
                self.ok += 1
            elif outcome.error_type == TRUNCATED:
                self.truncated += 1
            else:
                self.failed += 1
            if self.store is not None:
                self.store.append(outcome)
            self._show_counts()
            self.bar.update(1)
            self._report(outcome)

    def _report(self, outcome: Outcome) -> None:
        """Call ``on_outcome``; an exception from it is warned about, never lets an outcome go."""
        if self.on_outcome is None:
            return
        self.on_outcome_calls += 1
        try:
            self.on_outcome(outcome)
        except Exception as exc:
            self.on_outcome_failures += 1
            if self.on_outcome_failures == 1:
                warnings.warn(
                    f"on_outcome raised {type(exc).__name__}: {exc} for prompt {outcome.index}; "
                    "the outcome is kept and amap goes on (it keeps calling on_outcome; further "
                    "failures are counted at the end, not shown one by one).",
                    stacklevel=1,
                )

    def _warn_on_outcome_failures(self) -> None:
        if self.on_outcome_failures > 1:
            warnings.warn(
                f"on_outcome raised for {self.on_outcome_failures} of {self.on_outcome_calls} outcomes; "
                "every outcome is still in amap's result (or in BatchCancelled.outcomes).",
                stacklevel=1,
            )

    def _show_counts(self) -> None:
        if self.bar.disable:
            return
        counts = {"ok": self.ok, "failed": self.failed, "retries": self.retried}
        if self.truncated:
            counts = {"ok": self.ok, "truncated": self.truncated, **counts}
        self.bar.set_postfix(counts, refresh=False)

    def _all_outcomes(self) -> list[Outcome]:
        return [
            outcome
            or Outcome(
                index=index,
                prompt=record,
                ok=False,
                error_type=CANCELLED,
                error="not sent: the batch was cancelled first",
            )
            for index, (outcome, record) in enumerate(zip(self.outcomes, self.records, strict=True))
        ]

    async def run(self, model: Runnable, concurrency: int, progress: bool) -> list[Outcome]:
        if self.store is not None:
            resumed = self.store.load_successes(self.records, accept_truncated=self.accept_truncated)
            for index, outcome in resumed.items():
                self.outcomes[index] = outcome
        todo = [index for index, outcome in enumerate(self.outcomes) if outcome is None]
        self.ok = len(self.items) - len(todo)
        found = chat_models(model)
        self.tools_bound = binds_tools(model)
        # A callback handler costs LangChain a check per request (a runtime Protocol isinstance).
        self.watch_messages = not isinstance(model, BaseChatModel)
        self.streams_under_the_hood = any(getattr(m, "streaming", False) for m in found)
        self.bar = tqdm(
            total=len(self.items), initial=self.ok, desc="amap", unit="prompt", disable=not progress
        )
        self._show_counts()
        try:
            async with model_without_hidden_retries(model, concurrency) as self.model:
                indices = iter(todo)
                try:
                    async with asyncio.TaskGroup() as workers:
                        for _ in range(min(concurrency, len(todo))):
                            workers.create_task(self._worker(indices))
                except asyncio.CancelledError:
                    raise BatchCancelled(self._all_outcomes()) from None
        finally:
            self.bar.close()
            if self.store is not None:
                self.store.close()
            self._warn_on_outcome_failures()
        return self._all_outcomes()


def _partial(exc: Exception) -> dict[str, Any]:
    """What an unusable reply had (partial answer, reasoning, usage, finish_reason), else nothing."""
    if not isinstance(exc, ReplyProblem):
        return {}
    return {
        "answer": exc.answer,
        "reasoning": exc.reasoning,
        "usage": exc.usage,
        "finish_reason": exc.finish_reason,
    }
