"""Send many prompts through a LangChain chat model, at most ``concurrency`` at a time, losing none.

``amap`` returns one :class:`~helpers.outcomes.Outcome` per prompt, in input order: the answer
(and reasoning) or the error that ended it. Around each request it adds what LangChain's
``abatch`` does not: a per-request timeout, retries of transient errors only (connection
reset/refused, timeouts, 429 honouring ``Retry-After``, 5xx, a stream cut mid-way) with
exponential backoff and jitter, a progress bar with ok/failed/retries counts, an optional JSONL
checkpoint to resume from, an ``on_outcome`` callback as each prompt finishes, and a clean
cancellation that keeps the finished outcomes.

Retries are counted honestly: OpenAI-compatible models are used without their hidden SDK retries
(``helpers.amap_models``); any other LangChain chat model works too, but its own internal retries
are invisible to amap: construct it with ``max_retries=0`` (a warning says so). The batch itself
runs in ``helpers.amap_batch``.

Cancellation: if the task running ``amap`` is cancelled (``task.cancel()``, the notebook's
interrupt button on a cell that awaits it, Ctrl-C through :func:`map_prompts`), in-flight requests
are cancelled and their connections closed, then :class:`BatchCancelled` is raised. It is an
``asyncio.CancelledError`` (so cancellation propagates as usual) carrying ``.outcomes``: every
prompt, the finished ones as they were, the rest with ``error_type="Cancelled"``. On Python 3.11
``asyncio.timeout()`` and ``TaskGroup`` compare the exception type exactly, so a deadline put
around amap surfaces as ``BatchCancelled`` rather than ``TimeoutError``; use a checkpoint for long
batches in any case.

Example::

    from helpers import amap, summarize_outcomes
    outcomes = await amap(model, ["你好", "1+1=?"], concurrency=16, checkpoint="data/run.jsonl")
    print(summarize_outcomes(outcomes))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig

from helpers.amap_batch import Batch, BatchCancelled
from helpers.checkpoint import Checkpoint
from helpers.inputs import checked_items
from helpers.loop import run
from helpers.outcomes import Outcome
from helpers.retry import Backoff
from helpers.runnables import starts_with_language_model

PromptInput = Any  # str | message list | PromptValue | dict of template variables (helpers.inputs)
P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["BatchCancelled", "amap", "map_prompts"]


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
    batch = Batch(
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


def _same_parameters_as(source: Callable[P, Any]) -> Callable[[Callable[..., T]], Callable[P, T]]:
    """Give the decorated function ``source``'s parameters (for ``help()``, IDEs and type checkers)."""

    def decorate(target: Callable[..., T]) -> Callable[P, T]:
        signature = inspect.signature(source)
        target.__signature__ = signature.replace(  # type: ignore[attr-defined]
            return_annotation=inspect.signature(target).return_annotation
        )
        return target

    return decorate


@_same_parameters_as(amap)
def map_prompts(model: Runnable, prompts: Sequence[PromptInput], **options: Any) -> list[Outcome]:
    """Sync :func:`amap` for scripts and plain notebook cells (runs on ``helpers.loop.run``); takes
    amap's arguments.

    Ctrl-C (or the notebook's interrupt button) cancels the batch and raises
    :class:`BatchCancelled` with the outcomes so far. ``on_outcome`` runs on the background
    loop's thread.
    """
    arguments = inspect.signature(amap).bind(model, prompts, **options)
    arguments.apply_defaults()
    settings = arguments.arguments
    _check_model(model)
    items = _checked_items(model, prompts)
    _check_settings(settings["concurrency"], settings["retries"], settings["timeout"])
    _check_on_outcome(settings["on_outcome"])
    return run(amap(**{**settings, "prompts": items}))
