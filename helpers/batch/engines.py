"""Where a batch runs: ``local`` (``amap`` here) or ``ray`` (shards on Ray workers, each running ``amap``).

Both call ``on_line(record)`` with each output line as its request finishes; the caller appends it to the
output file, so what finished is on disk whatever happens next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableLambda

from helpers.batch.bodies import call_params, completion_body, error_line, params_key, success_line
from helpers.batch.files import BatchRequest
from helpers.concurrency import amap
from helpers.endpoint import Endpoint
from helpers.outcomes import Outcome
from helpers.ray_start import start_ray

ENGINES = ("local", "ray")
Line = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """How each request is sent (the same on every engine)."""

    concurrency: int = 32
    retries: int = 2
    timeout_s: float | None = 600.0
    progress: bool = True


def chat_model_for(endpoint: Endpoint) -> Any:
    """The kit's chat model for ``endpoint``: thinking, ``max_tokens`` and retries left to the body and to
    amap; a body without ``temperature``/``top_p`` gets the Qwen3 model card's recommendation."""
    from helpers.chat import make_chat_model

    return make_chat_model(None, endpoint, temperature=None, top_p=None, max_tokens=None, max_retries=0)


async def run_local(
    requests: list[BatchRequest], endpoint: Endpoint, settings: Settings, on_line: Callable[[Line], None]
) -> None:
    """Send ``requests`` through the kit's chat model with ``amap``; requests sharing their parameters run
    together (one ``amap`` each, one after another)."""
    model = chat_model_for(endpoint)
    groups: dict[str, list[tuple[BatchRequest, list[dict], dict]]] = {}
    for request in requests:
        messages, kwargs = call_params(request.body)
        groups.setdefault(params_key(kwargs), []).append((request, messages, kwargs))
    for group in groups.values():
        chain = model.bind(**group[0][2]) | RunnableLambda(completion_body)

        def write(outcome: Outcome, group: list = group) -> None:
            custom_id = group[outcome.index][0].custom_id
            on_line(success_line(custom_id, outcome.parsed) if outcome.ok else error_line(custom_id, outcome))

        await amap(
            chain,
            [messages for _, messages, _ in group],
            concurrency=settings.concurrency,
            retries=settings.retries,
            timeout=settings.timeout_s,
            progress=settings.progress,
            on_outcome=write,
            accept_truncated=True,  # a cut reply is the server's answer: a 200 line, counted truncated
        )


async def run_ray(
    requests: list[BatchRequest],
    endpoint: Endpoint,
    settings: Settings,
    on_line: Callable[[Line], None],
    *,
    workers: int,
    ray_address: str | None,
) -> None:
    """Shard ``requests`` round-robin over ``workers`` Ray actors, each running :func:`run_local` on its
    share with ``settings.concurrency`` in flight; their lines stream back here as they finish.

    Ray is started or joined by ``helpers.ray_start.start_ray``: locally (``num_cpus=workers``, no
    dashboard, a start the machine is too busy for retried) unless ``ray_address`` or ``RAY_ADDRESS``
    names a cluster or Ray is already initialised. The workers must reach ``endpoint`` (on a cluster: a
    router or server address, not this machine's localhost).
    """
    ray = start_ray(num_cpus=workers, address=ray_address)
    worker_class = ray.remote(num_cpus=1)(_BatchWorker)
    actors = [worker_class.remote() for _ in range(workers)]
    shards = [requests[index::workers] for index in range(workers)]
    shipped = (endpoint.base_url, endpoint.model, endpoint.api_key.get_secret_value())
    quiet = Settings(settings.concurrency, settings.retries, settings.timeout_s, progress=False)
    streams = [
        actor.run.options(num_returns="streaming").remote(shard, shipped, quiet)
        for actor, shard in zip(actors, shards, strict=True)
        if shard
    ]

    async def drain(stream: Any) -> None:
        async for ref in stream:
            on_line(await ref)

    try:
        await asyncio.gather(*(drain(stream) for stream in streams))
    finally:
        for actor in actors:
            ray.kill(actor)


class _BatchWorker:
    """A Ray actor: one event loop running amap over its shard, yielding each output line."""

    async def run(self, requests: list[BatchRequest], shipped: tuple[str, str, str], settings: Settings):
        base_url, model, api_key = shipped
        lines: asyncio.Queue = asyncio.Queue()
        done = object()

        async def work() -> None:
            try:
                endpoint = Endpoint(base_url, model, api_key=api_key)
                await run_local(requests, endpoint, settings, lines.put_nowait)
            finally:
                lines.put_nowait(done)

        task = asyncio.create_task(work())
        while (line := await lines.get()) is not done:
            yield line
        await task  # re-raise what failed outside amap's per-request handling
