"""A real local HTTP server (aiohttp.web) that answers every request with an httpx-style handler.

The lean client speaks aiohttp, which has no mock transport: its tests send real requests over
loopback to this server instead. The handler is written as for ``httpx.MockTransport``
(``httpx.Request`` in, ``httpx.Response`` out); a streamed response is written one HTTP chunk per
part its content yields, as vLLM writes one chunk per event.

Example:
    >>> async def handler(request: httpx.Request) -> httpx.Response:   # doctest: +SKIP
    ...     return httpx.Response(200, json={"choices": [...]})
    >>> client = LeanClient(serve_handler(handler), "m")               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from aiohttp import web

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
_SKIPPED_HEADERS = {"content-length", "transfer-encoding", "connection"}
_serving: set[asyncio.Task] = set()


def serve_handler(handler: Handler) -> str:
    """Serve ``handler`` on a free loopback port from the running loop; return its ``/v1`` URL.

    The port listens at once (requests sent before the server task runs wait in the backlog);
    the server closes when the loop shuts down (``asyncio.run``, pytest-asyncio).
    """
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        mock = httpx.Request(
            request.method, str(request.url), headers=dict(request.headers), content=await request.read()
        )
        response = await handler(mock)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _SKIPPED_HEADERS}
        if response.is_stream_consumed:  # built from bytes: one body
            return web.Response(status=response.status_code, body=response.content, headers=headers)
        reply = web.StreamResponse(status=response.status_code, headers=headers)
        reply.enable_chunked_encoding()
        await reply.prepare(request)
        async for part in response.aiter_raw():
            await reply.write(part)
        await reply.write_eof()
        return reply

    server = web.Server(answer, handler_cancellation=True)  # a client gone cancels its handler
    task = loop.create_task(_serve_until_shutdown(loop, server, listener), name=f"local_http:{port}")
    _serving.add(task)  # the loop keeps only a weak reference to its tasks
    task.add_done_callback(_serving.discard)
    return f"http://127.0.0.1:{port}/v1"


async def _serve_until_shutdown(
    loop: asyncio.AbstractEventLoop, server: web.Server, listener: socket.socket
) -> None:
    listening = await loop.create_server(server, sock=listener)
    try:
        await loop.create_future()  # never set: cancelled when the loop shuts down
    finally:
        listening.close()
        await server.shutdown(1.0)


def server_side_tasks() -> set[asyncio.Task]:
    """The running loop's tasks that serve requests (aiohttp.web's own), not the client's."""
    return {task for task in asyncio.all_tasks() if _started_in_aiohttp_web(task)}


def _started_in_aiohttp_web(task: asyncio.Task) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and Path(code.co_filename).parent.name == "aiohttp" and "web_" in code.co_filename
