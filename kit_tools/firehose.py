"""A server that is rarely the limit: replays a canned vLLM-format chat stream as fast as it can.

Used to measure the CLIENT: how many SSE chunks per second one Python process can read through a
given path (the lean aiohttp reader, openai, LangChain). Each reply is rendered once at start-up;
a streamed reply is written ``events_per_write`` events at a time, in the exact wire format of
vLLM 0.32 (role chunk, one chunk per token, finish chunk, usage chunk, ``[DONE]``). It runs in its
own process and costs 4-5 us of CPU per event (one write each, measured on a 2-core machine): a
reader past ~200,000 chunks/s meets the server's limit, and then the client's chunks per CPU-second
still give the client's own pace.

Example:
    >>> with serve_firehose(chunks=200) as server:                    # doctest: +SKIP
    ...     client = LeanClient(server.base_url, "firehose")
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

MODEL = "firehose"


def render_stream(chunks: int, events_per_write: int = 1) -> list[bytes]:
    """The byte writes of one streamed reply with ``chunks`` token events."""

    def event(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {
            "id": "chatcmpl-firehose",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [choice],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": f" tok{i}"}) for i in range(chunks - 1)]
    events.append(event({"content": " end"}, finish="length"))
    usage = {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": chunks + 10}
    events.append(
        b"data: "
        + orjson.dumps({"id": "chatcmpl-firehose", "choices": [], "model": MODEL, "usage": usage})
        + b"\n\n"
    )
    events.append(b"data: [DONE]\n\n")
    return [b"".join(events[i : i + events_per_write]) for i in range(0, len(events), events_per_write)]


def render_completion(chunks: int) -> bytes:
    """The body of one non-streamed reply with ``chunks`` tokens."""
    message = {"role": "assistant", "content": "".join(f" tok{i}" for i in range(chunks))}
    return orjson.dumps(
        {
            "id": "chatcmpl-firehose",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": chunks + 10},
        }
    )


def make_app(chunks: int, events_per_write: int):
    """The Starlette app: ``POST /v1/chat/completions``, ``GET /version``, ``GET /health``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    stream_writes = render_stream(chunks, events_per_write)
    completion = render_completion(chunks)

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if not body.get("stream"):
            return Response(completion, media_type="application/json")

        async def writes():
            for write in stream_writes:
                yield write

        return StreamingResponse(writes(), media_type="text/event-stream")

    async def version(_: Request) -> Response:
        return JSONResponse({"version": "firehose"})

    async def health(_: Request) -> Response:
        return Response(b"")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/version", version),
            Route("/health", health),
        ]
    )


@dataclass
class FirehoseServer:
    """A running firehose process; stop it with :meth:`stop` or a ``with`` block."""

    base_url: str
    process: subprocess.Popen
    chunks: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> FirehoseServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_firehose(chunks: int = 200, events_per_write: int = 1) -> FirehoseServer:
    """Start the firehose in a child process on a free local port; return once it answers."""
    if chunks < 1 or events_per_write < 1:
        raise ValueError("chunks and events_per_write must be >= 1")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    port = listener.getsockname()[1]
    command = [
        sys.executable, "-m", "kit_tools.firehose", "--fd", str(listener.fileno()),
        "--chunks", str(chunks), "--events-per-write", str(events_per_write),
    ]  # fmt: skip
    root = str(Path(__file__).resolve().parents[1])  # kit_tools importable in the child, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.getenv("PYTHONPATH")]))}
    process = subprocess.Popen(command, pass_fds=[listener.fileno()], env=env)
    listener.close()
    server = FirehoseServer(f"http://127.0.0.1:{port}/v1", process, chunks)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the firehose server exited with code {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
            return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("the firehose server did not answer within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a canned vLLM-format stream, fast.")
    parser.add_argument("--fd", type=int, help="listening socket inherited from the parent")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--events-per-write", type=int, default=1)
    args = parser.parse_args()
    import uvicorn

    app = make_app(args.chunks, args.events_per_write)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=120)
    if args.fd is None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", args.port))
    else:
        # socket(fileno=...) detects AF_INET, so asyncio sets TCP_NODELAY on accepted connections
        # (uvicorn's own fd= option assumes AF_UNIX and leaves Nagle on: 40 ms stalls).
        listener = socket.socket(fileno=args.fd)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
