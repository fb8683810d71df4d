"""Send many prompts through a LangChain chat model, at most ``concurrency`` at a time, losing none.

``amap`` returns one :class:`~helpers.outcomes.Outcome` per prompt, in input order: the answer
(and reasoning) or the error that ended it. Around each request it adds what LangChain's
``abatch`` does not: a per-request timeout, retries of transient errors only (connection
reset/refused, timeouts, 429 honouring ``Retry-After``, 5xx, a stream cut mid-way) with
exponential backoff and jitter, a progress bar with ok/failed/retries counts, an optional JSONL
checkpoint to resume from, an ``on_outcome`` callback as each prompt finishes, and a clean
cancellation that keeps the finished outcomes.

Retries are counted honestly: for OpenAI-compatible models (``ChatOpenAI`` and subclasses such as
``helpers.chat``'s model or ``ChatDeepSeek``) amap uses a copy of the model whose SDK client has
``max_retries=0`` and its own connection pool (aiohttp, ``helpers.transport``), so every request
sent is one attempt here. The pool stays on the event loop for the next batch (its connections
still open, idle ones closed after ``KEEPALIVE_EXPIRY_S``, before vLLM's 5 s keep-alive closes
them) and is closed when the loop shuts down, or at once if the batch is cancelled or fails.
Any other LangChain chat model works too, but its own internal retries are invisible to amap:
construct it with ``max_retries=0`` (a warning says so).

Cancellation: if the task running ``amap`` is cancelled (``task.cancel()``, the notebook's
interrupt button on a cell that awaits it, Ctrl-C through :func:`map_prompts`), in-flight requests
are cancelled and their connections closed, then :class:`BatchCancelled` is raised. It is an
``asyncio.CancelledError`` (so cancellation propagates as usual) carrying ``.outcomes``: every
prompt, the finished ones as they were, the rest with ``error_type="Cancelled"``. On Python 3.11
``asyncio.timeout()`` and ``TaskGroup`` compare the exception type exactly, so a deadline put
around amap surfaces as ``BatchCancelled`` rather than ``TimeoutError``; use a checkpoint for long
batches in any case.

Example::

    from helpers.concurrency import amap, summarize
    outcomes = await amap(model, ["你好", "1+1=?"], concurrency=16, checkpoint="data/run.jsonl")
    print(summarize(outcomes))
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import operator
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import AddableDict
from langchain_openai._compat import httpx  # the httpx flavour the openai SDK is built on
from tqdm.auto import tqdm

from helpers.chat import ReasoningChatOpenAI, dict_completions
from helpers.checkpoint import Checkpoint
from helpers.endpoint import KEEPALIVE_EXPIRY_S
from helpers.inputs import as_record, checked_items
from helpers.loop import run
from helpers.outcomes import CANCELLED, TRUNCATED, Outcome, outcomes_to_frame, summarize
from helpers.replies import (
    Reply,
    ReplyProblem,
    ReplyWatcher,
    finish_reason,
    problem_from_error,
    read_reply,
    watched,
)
from helpers.retry import Backoff, IncompleteStream, RequestTimeout, Verdict, classify, describe
from helpers.runnables import binds_tools, chat_models, starts_with_language_model, swap_language_models
from helpers.transport import aiohttp_client

PromptInput = Any  # str | message list | PromptValue | dict of template variables (helpers.inputs)

__all__ = [
    "BatchCancelled",
    "Outcome",
    "abatch_as_completed_progress",
    "abatch_limited",
    "amap",
    "map_prompts",
    "outcomes_to_frame",
    "summarize",
]


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


def _check_model(model: object) -> None:
    if isinstance(model, type):
        raise TypeError(
            f"model must be a chat model instance, got the class {model.__name__}; "
            f"create one first, e.g. {model.__name__}(base_url=..., model=...)."
        )
    if not callable(getattr(model, "ainvoke", None)):
        raise TypeError(
            f"model must be a LangChain chat model (with .ainvoke), got {type(model).__name__}; "
            "for example helpers.chat.make_chat_model() or ChatOpenAI(base_url=..., model=...)."
        )


def _check_on_outcome(on_outcome: object) -> None:
    if on_outcome is None:
        return
    if not callable(on_outcome):
        raise TypeError(
            f"on_outcome must be a function that takes an Outcome, got {type(on_outcome).__name__}."
        )
    if inspect.iscoroutinefunction(on_outcome):
        raise TypeError(
            "on_outcome is called without await as each prompt finishes; pass a plain function. "
            "For async work, hand the outcome over, e.g. on_outcome=queue.put_nowait with an "
            "asyncio.Queue read by your own task."
        )


def _check_settings(concurrency: int, retries: int, timeout: float | None) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(f"concurrency must be an int >= 1, got {concurrency!r}.")
    if concurrency < 1:
        raise ValueError(
            f"concurrency must be >= 1 (requests in flight at once), got {concurrency}. "
            "Use 1 to send the prompts one after another."
        )
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"retries must be an int >= 0, got {retries!r}.")
    if retries < 0:
        raise ValueError(f"retries must be >= 0 (0 turns retrying off), got {retries}.")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be seconds (a number > 0) or None, got {timeout!r}.")
        if not timeout > 0:
            raise ValueError(
                f"timeout must be > 0 seconds per request, got {timeout}; use None for no limit."
            )


_PoolKey = tuple[Any, int]  # ((connect, read, write, pool) timeouts, connections)


class _KeptPools:
    """amap's pools on one event loop between batches, by timeout and size; closed at its shutdown.

    A batch takes a kept pool (or makes one) for each chat model and, if it ends normally, gives
    it back with its connections open for the next batch; batches running at once never share
    one, so a cancelled batch can close its pools without touching another's requests.
    ``asyncio.run()`` (and ``asyncio.Runner``, pytest-asyncio, ``helpers.loop``) close the async
    generators still open before closing a loop (``loop.shutdown_asyncgens()``); ours, started on
    first use and kept in ``_kept_pools_by_loop``, closes the kept pools then, so no task of ours
    is pending in the loop. Jupyter's loop never closes: idle connections expire on their own.
    """

    def __init__(self) -> None:
        self.idle: dict[_PoolKey, list[httpx.AsyncClient]] = {}
        self._shutdown: AsyncGenerator[None] | None = None

    def take(self, key: _PoolKey) -> httpx.AsyncClient | None:
        idle = self.idle.get(key)
        return idle.pop() if idle else None

    def give_back(self, key: _PoolKey, pool: httpx.AsyncClient) -> None:
        self.idle.setdefault(key, []).append(pool)

    async def close_at_shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        async def open_until_shutdown() -> AsyncGenerator[None]:
            try:
                yield
            finally:
                _kept_pools_by_loop.pop(loop, None)
                pools = [pool for idle in self.idle.values() for pool in idle]
                self.idle = {}
                for pool in pools:
                    await pool.aclose()

        self._shutdown = open_until_shutdown()
        await anext(self._shutdown)


_kept_pools_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _KeptPools] = (
    weakref.WeakKeyDictionary()
)


async def _running_loop_kept_pools() -> _KeptPools:
    loop = asyncio.get_running_loop()
    kept = _kept_pools_by_loop.get(loop)
    if kept is None:
        kept = _kept_pools_by_loop[loop] = _KeptPools()
        await kept.close_at_shutdown(loop)
    return kept


def _kept_pools() -> list[httpx.AsyncClient]:
    """The pools kept on the running loop, idle between batches (for tests)."""
    kept = _kept_pools_by_loop.get(asyncio.get_running_loop())
    return [pool for idle in kept.idle.values() for pool in idle] if kept else []


def _pool_key(timeout: Any, pool_size: int) -> _PoolKey:
    timeout = httpx.Timeout(timeout)  # a number, None or a Timeout, as the pool keeps it
    return (timeout.connect, timeout.read, timeout.write, timeout.pool), pool_size


def _new_pool(timeout: Any, pool_size: int) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=KEEPALIVE_EXPIRY_S
    )
    return aiohttp_client(timeout=timeout, limits=limits)


def _retry_free_copy(
    chat_model: Any, pools: list[httpx.AsyncClient], pool_size: int, kept: _KeptPools | None = None
) -> Any:
    """``chat_model`` with SDK retries off and a pool of ``pool_size`` connections (one of
    ``kept`` if there is one, else a new one; added to ``pools``) if OpenAI-compatible."""
    root = getattr(chat_model, "root_async_client", None)
    if root is None or not hasattr(root, "copy"):
        if getattr(chat_model, "max_retries", None):
            warnings.warn(
                f"{type(chat_model).__name__} retries internally (max_retries="
                f"{chat_model.max_retries}) where amap cannot count it; build it with "
                "max_retries=0 so that amap's attempts and retries are the real ones.",
                stacklevel=5,
            )
        return chat_model
    if getattr(chat_model, "http_async_client", None) is None:
        pool = (kept.take(_pool_key(root.timeout, pool_size)) if kept else None) or _new_pool(
            root.timeout, pool_size
        )
        pools.append(pool)
        client = root.copy(max_retries=0, http_client=pool)
    else:
        client = root.copy(max_retries=0)
    # helpers.chat's model reads replies as dicts; others get the SDK's resource, as ChatOpenAI has.
    completions = (
        dict_completions(client) if isinstance(chat_model, ReasoningChatOpenAI) else client.chat.completions
    )
    return chat_model.model_copy(
        update={"root_async_client": client, "async_client": completions, "max_retries": 0}
    )


@asynccontextmanager
async def _model_without_hidden_retries(model: Runnable, pool_size: int) -> AsyncIterator[Runnable]:
    """A copy of ``model`` whose OpenAI-compatible chat models have SDK retries off and own pools.

    The chat models are found inside bindings, sequences, parallels and fallbacks
    (``bind_tools``, ``with_structured_output``, ``prompt | model``: ``helpers.runnables``). Each
    gets a pool of ``pool_size`` connections, one kept on the loop if there is one
    (:class:`_KeptPools`): given back on a normal exit, closed on any other, so no socket outlives
    a cancelled or failed batch; a model built with the user's own ``http_async_client`` keeps it
    (the user owns it). Other chat models are kept, with a warning if they retry internally; a
    Runnable with no chat model amap can see (a model called inside a ``RunnableLambda``) gets a
    warning too.
    """
    if not chat_models(model):
        warnings.warn(
            f"amap found no chat model inside {type(model).__name__}, so it cannot turn off "
            "retries hidden inside it; if it calls a model (e.g. from a RunnableLambda), build that "
            "model with max_retries=0 so that amap's attempts and retries are the real ones.",
            stacklevel=4,
        )
    kept = await _running_loop_kept_pools()
    pools: list[httpx.AsyncClient] = []
    copies: dict[int, Any] = {}

    def swap(chat_model: Any) -> Any:
        if id(chat_model) not in copies:
            copies[id(chat_model)] = _retry_free_copy(chat_model, pools, pool_size, kept)
        return copies[id(chat_model)]

    ended_normally = False
    try:
        yield swap_language_models(model, swap)
        ended_normally = True
    finally:
        for pool in pools:
            if ended_normally:
                kept.give_back(_pool_key(pool.timeout, pool_size), pool)
            else:
                await pool.aclose()


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


class _Batch:
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

    async def _attempt(self, item: Any) -> Reply:
        """One attempt: a usable Reply, or an exception (a ReplyProblem for an unusable reply)."""
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
            async with _model_without_hidden_retries(model, concurrency) as self.model:
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


def _checked_items(model: Runnable, prompts: Sequence[PromptInput]) -> list[PromptInput]:
    return checked_items(prompts, takes_variables=not starts_with_language_model(model))


async def amap(
    model: Runnable,
    prompts: Sequence[PromptInput],
    *,
    concurrency: int = 8,
    retries: int = 3,
    timeout: float | None = 60.0,
    backoff: Backoff | None = None,
    progress: bool = True,
    stream: bool = False,
    checkpoint: str | Path | None = None,
    config: RunnableConfig | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    accept_truncated: bool = False,
    retry_invalid: bool = False,
) -> list[Outcome]:
    """Send every prompt through ``model``, at most ``concurrency`` at once; one Outcome each, in order.

    - ``model``: a LangChain chat model or any Runnable around one (``model.bind_tools(tools)``,
      ``model.with_structured_output(Person)``, ``prompt | model``); its OpenAI-compatible chat
      models are used without their hidden SDK retries (see ``helpers.runnables``).
    - ``prompts``: each a string, a message list (LangChain messages or OpenAI-style dicts), a
      ``PromptValue``, or, for a chain that starts with a prompt template, a dict of its
      variables (see ``helpers.inputs``).
    - ``retries``: retries per prompt for transient errors (0: none); 4xx errors are never retried.
    - ``timeout``: seconds per attempt (None: no limit); an expired attempt is a transient error.
    - ``backoff``: :class:`helpers.retry.Backoff` (exponential with jitter; ``seed=`` for
      reproducible waits); ``Retry-After`` is honoured.
    - ``stream``: consume ``astream`` per prompt; a stream without ``finish_reason`` counts as
      cut (``IncompleteStream``, retried), never as an answer. For a structured chain the last
      streamed object is the result (LangChain's streaming parsers tolerate partial JSON, so
      prefer ``stream=False`` there).
    - ``checkpoint``: a ``.jsonl`` path; finished outcomes are appended as they finish, and a
      re-run loads the successful ones instead of sending them (see ``helpers.checkpoint``).
    - ``config``: a LangChain ``RunnableConfig`` passed to every call (callbacks, tags).
    - ``on_outcome``: a plain function called with each prompt's final Outcome as it finishes
      (completion order; after the checkpoint line is written), e.g. to log or save it. Not
      called for outcomes loaded from the checkpoint, nor for prompts cancelled unfinished. It
      runs on amap's event loop, so keep it quick. If it raises, the outcome is kept, the batch
      goes on and amap warns (the first error in full, then a count at the end).
    - ``accept_truncated``: keep replies cut by ``max_tokens`` as ok (``finish_reason="length"``)
      instead of ``error_type="Truncated"``; a cut structured reply still cannot parse.
    - ``retry_invalid``: retry (up to ``retries``) replies that are ``InvalidOutput``,
      ``MalformedToolCall`` or ``Truncated``: a sampled model may do better next time. Off by
      default: the same request usually fails the same way.

    Bad arguments raise TypeError/ValueError before any request is sent; an empty list returns
    ``[]``. Cancelling raises :class:`BatchCancelled` carrying the outcomes so far.

    Example::

        outcomes = await amap(model, prompts, concurrency=32, retries=3, timeout=30)
        failed = [o for o in outcomes if not o.ok]
        people = await amap(model.with_structured_output(Person), records)  # o.parsed: Person
    """
    _check_model(model)
    items = _checked_items(model, prompts)
    _check_settings(concurrency, retries, timeout)
    _check_on_outcome(on_outcome)
    store = Checkpoint(checkpoint) if checkpoint is not None else None
    if not items:
        return []
    batch = _Batch(
        items,
        retries=retries,
        timeout=timeout,
        backoff=backoff or Backoff(),
        stream=stream,
        config=config,
        store=store,
        on_outcome=on_outcome,
        accept_truncated=accept_truncated,
        retry_invalid=retry_invalid,
    )
    return await batch.run(model, concurrency, progress)


def map_prompts(
    model: Runnable,
    prompts: Sequence[PromptInput],
    *,
    concurrency: int = 8,
    retries: int = 3,
    timeout: float | None = 60.0,
    backoff: Backoff | None = None,
    progress: bool = True,
    stream: bool = False,
    checkpoint: str | Path | None = None,
    config: RunnableConfig | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    accept_truncated: bool = False,
    retry_invalid: bool = False,
) -> list[Outcome]:
    """Sync :func:`amap` for scripts and plain notebook cells (runs on ``helpers.loop.run``).

    Ctrl-C (or the notebook's interrupt button) cancels the batch and raises
    :class:`BatchCancelled` with the outcomes so far. ``on_outcome`` runs on the background
    loop's thread.
    """
    _check_model(model)
    items = _checked_items(model, prompts)
    _check_settings(concurrency, retries, timeout)
    _check_on_outcome(on_outcome)
    return run(
        amap(
            model,
            items,
            concurrency=concurrency,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            progress=progress,
            stream=stream,
            checkpoint=checkpoint,
            config=config,
            on_outcome=on_outcome,
            accept_truncated=accept_truncated,
            retry_invalid=retry_invalid,
        )
    )


async def abatch_limited(model: Runnable, prompts: Sequence[PromptInput], max_concurrency: int) -> list[Any]:
    """LangChain's own way, for comparison: ``abatch`` with ``config={"max_concurrency": n}``.

    Results come back in input order; with ``return_exceptions=True`` a failed prompt is its
    exception in place of the message. No per-request timeout, no retries beyond the model's own
    ``max_retries`` (invisible), no progress, and on cancellation the finished results are lost.
    """
    items = _checked_items(model, prompts)
    _check_settings(max_concurrency, 0, None)
    return await model.abatch(items, config={"max_concurrency": max_concurrency}, return_exceptions=True)


async def abatch_as_completed_progress(
    model: Runnable,
    prompts: Sequence[PromptInput],
    max_concurrency: int | None = None,
    *,
    progress: bool = True,
) -> list[Any]:
    """LangChain's ``abatch_as_completed`` with a tqdm bar, results put back in input order.

    ``abatch_as_completed`` yields ``(index, output)`` as requests finish, which is what a
    progress bar needs; a failed prompt is its exception in place of the message.
    """
    items = _checked_items(model, prompts)
    if max_concurrency is not None:
        _check_settings(max_concurrency, 0, None)
    results: list[Any] = [None] * len(items)
    config: RunnableConfig = {"max_concurrency": max_concurrency} if max_concurrency else {}
    with tqdm(total=len(items), desc="abatch_as_completed", disable=not progress) as bar:
        async for index, output in model.abatch_as_completed(items, config=config, return_exceptions=True):
            results[index] = output
            bar.update(1)
    return results
