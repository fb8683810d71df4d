"""The async HTTP clients of each event loop, made on first use and closed when the loop shuts down.

One registry for the whole kit: ``helpers.reasoning_model`` gives each model one openai client per
loop on a connection pool shared by the loop's models (one per timeout), and ``helpers.amap_models``
keeps amap's pools on the loop between batches. httpx and the openai SDK have no hook for a loop's
end, but ``asyncio.run()`` (and ``asyncio.Runner``, pytest-asyncio, ``helpers.loop``) close the
async generators still open before closing a loop (``loop.shutdown_asyncgens()``): one of ours,
started on the loop's first use and suspended until then, closes every pool of the loop while it
still runs. No task of the kit stays pending. Jupyter's loop never closes: its clients live as long
as the kernel, idle connections expire on their own (``KEEPALIVE_EXPIRY_S``, before vLLM's 5 s
keep-alive).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any

from helpers.endpoint import KEEPALIVE_EXPIRY_S
from helpers.openai_internals import httpx
from helpers.transport import aiohttp_client

PoolKey = tuple[Any, int]  # ((connect, read, write, pool) timeouts, connections)
# The SDK's limits, idle connections closed before vLLM's 5 s keep-alive closes them.
_SHARED_POOL_LIMITS = httpx.Limits(
    max_connections=1000, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_EXPIRY_S
)


def pool_key(timeout: Any, connections: int) -> PoolKey:
    """What tells pools apart: their timeouts (a number, None or a Timeout) and size."""
    timeout = httpx.Timeout(timeout)
    return (timeout.connect, timeout.read, timeout.write, timeout.pool), connections


def new_pool(timeout: Any, connections: int) -> httpx.AsyncClient:
    """An aiohttp pool of ``connections`` connections, idle ones closed after ``KEEPALIVE_EXPIRY_S``."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    return aiohttp_client(timeout=timeout, limits=limits)


class LoopClients:
    """The clients of one event loop: shared pools, per-model openai clients, amap's idle pools."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.shared_pools: dict[Any, httpx.AsyncClient] = {}
        self.sdk_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.idle_pools: dict[PoolKey, list[httpx.AsyncClient]] = {}
        self._open = self._open_until_shutdown(loop)  # kept: the loop holds its generators weakly
        _start(self._open)

    def shared_pool(self, timeout: Any) -> httpx.AsyncClient:
        """The pool the loop's models share for ``timeout`` (the SDK's limits)."""
        key = pool_key(timeout, 0)
        client = self.shared_pools.get(key)
        if client is None:
            client = self.shared_pools[key] = aiohttp_client(timeout=timeout, limits=_SHARED_POOL_LIMITS)
        return client

    def take_pool(self, key: PoolKey) -> httpx.AsyncClient | None:
        """An idle pool kept for ``key`` by an earlier batch, if any (no two batches share one)."""
        idle = self.idle_pools.get(key)
        return idle.pop() if idle else None

    def give_back(self, key: PoolKey, pool: httpx.AsyncClient) -> None:
        """Keep ``pool`` with its connections open for the next batch."""
        self.idle_pools.setdefault(key, []).append(pool)

    async def _open_until_shutdown(self, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None]:
        try:
            yield  # until loop.shutdown_asyncgens() closes this generator
        finally:
            _clients_by_loop.pop(loop, None)
            self.sdk_clients.clear()
            pools = [
                *self.shared_pools.values(),
                *(pool for idle in self.idle_pools.values() for pool in idle),
            ]
            self.shared_pools, self.idle_pools = {}, {}
            for pool in pools:
                await pool.aclose()


def _start(generator: AsyncGenerator[None]) -> None:
    """Run ``generator`` to its first ``yield`` without awaiting; the running loop's asyncgen hook
    (called on this first step) registers it for ``shutdown_asyncgens()``."""
    try:
        generator.asend(None).send(None)
    except StopIteration:
        return
    raise RuntimeError("the generator awaited before its first yield")


_clients_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClients] = (
    weakref.WeakKeyDictionary()
)
_clients_by_loop_lock = threading.Lock()


def running_loop_clients() -> LoopClients | None:
    """The clients of the running event loop (created on first use), None outside a loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    clients = _clients_by_loop.get(loop)
    if clients is None:
        with _clients_by_loop_lock:
            clients = _clients_by_loop.get(loop)
            if clients is None:
                clients = _clients_by_loop[loop] = LoopClients(loop)
    return clients
