"""amap's copy of a model: OpenAI-compatible chat models without their hidden SDK retries.

For ``ChatOpenAI`` and subclasses (``helpers.chat``'s model, ``ChatDeepSeek``) amap uses a copy whose
SDK client has ``max_retries=0`` and its own connection pool (aiohttp, ``helpers.transport``), so
every request sent is one attempt amap counts. The pool stays on the event loop for the next batch
(``helpers.loop_clients``: its connections still open, idle ones closed after ``KEEPALIVE_EXPIRY_S``)
and is closed when the loop shuts down, or at once if the batch is cancelled or fails. Any other
LangChain chat model is used as it is: its own retries are invisible to amap (a warning says so).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langchain_core.runnables import Runnable

from helpers.dict_replies import dict_completions
from helpers.loop_clients import new_pool, pool_key, running_loop_clients
from helpers.openai_internals import httpx
from helpers.reasoning_model import ReasoningChatOpenAI
from helpers.runnables import chat_models, swap_language_models


def retry_free_copy(
    chat_model: Any, pools: list[httpx.AsyncClient], pool_size: int, *, reuse: bool = False
) -> Any:
    """``chat_model`` with SDK retries off and a pool of ``pool_size`` connections (added to
    ``pools``) if OpenAI-compatible; with ``reuse``, a pool kept idle on the running loop if any."""
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
        kept = running_loop_clients() if reuse else None
        pool = (kept.take_pool(pool_key(root.timeout, pool_size)) if kept else None) or new_pool(
            root.timeout, pool_size
        )
        pools.append(pool)
        client = root.copy(max_retries=0, http_client=pool)
    else:
        client = root.copy(max_retries=0)
    # helpers.chat's model reads replies as dicts; others get the SDK's resource, as ChatOpenAI has.
    completions = (
        dict_completions(lambda: client)
        if isinstance(chat_model, ReasoningChatOpenAI)
        else client.chat.completions
    )
    return chat_model.model_copy(
        update={"root_async_client": client, "async_client": completions, "max_retries": 0}
    )


@asynccontextmanager
async def model_without_hidden_retries(model: Runnable, pool_size: int) -> AsyncIterator[Runnable]:
    """A copy of ``model`` whose OpenAI-compatible chat models have SDK retries off and own pools.

    The chat models are found inside bindings, sequences, parallels and fallbacks
    (``bind_tools``, ``with_structured_output``, ``prompt | model``: ``helpers.runnables``). Each
    gets a pool of ``pool_size`` connections, one kept on the loop if there is one
    (``helpers.loop_clients``): given back on a normal exit, closed on any other, so no socket outlives
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
    pools: list[httpx.AsyncClient] = []
    copies: dict[int, Any] = {}

    def swap(chat_model: Any) -> Any:
        if id(chat_model) not in copies:
            copies[id(chat_model)] = retry_free_copy(chat_model, pools, pool_size, reuse=True)
        return copies[id(chat_model)]

    ended_normally = False
    try:
        yield swap_language_models(model, swap)
        ended_normally = True
    finally:
        kept = running_loop_clients() if pools and ended_normally else None
        for pool in pools:
            if kept is not None:
                kept.give_back(pool_key(pool.timeout, pool_size), pool)
            else:
                await pool.aclose()
