"""LangChain's own ways of running a batch, for the tests that compare amap with them, and a look
at the pools amap keeps on a loop. Test support, not part of the kit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from tqdm.auto import tqdm

from helpers.concurrency import _check_settings, _checked_items
from helpers.loop_clients import _clients_by_loop

PromptInput = Any


def kept_pools() -> list[Any]:
    """The pools amap keeps on the running loop, idle between batches."""
    clients = _clients_by_loop.get(asyncio.get_running_loop())
    return [pool for idle in clients.idle_pools.values() for pool in idle] if clients else []


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
