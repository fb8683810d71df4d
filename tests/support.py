"""Shared test support: the real vLLM 0.32 transcripts (read and replayed), a lean streaming
client for the simulator tests, a web server that is not an OpenAI API, and a free port.

The transcripts come from a real server running a tiny, randomly initialised Qwen3-shaped model:
the text is noise, the wire format is real.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
from langchain_openai._compat import httpx as sdk_httpx

FIXTURES = Path(__file__).parent / "fixtures" / "vllm-0.32"


@dataclass
class Transcript:
    """One recorded exchange with a real vLLM 0.32 server."""

    method: str
    path: str
    request: dict | bytes | None
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def events(self) -> list[bytes]:
        """The SSE `data:` payloads, in order, `[DONE]` included."""
        return [line[6:] for line in self.body.split(b"\n") if line.startswith(b"data: ")]

    def sse_events(self) -> list[dict]:
        """The SSE `data:` payloads parsed as JSON, `[DONE]` excluded."""
        return [orjson.loads(event) for event in self.events() if event != b"[DONE]"]


def load_transcript(name: str) -> Transcript:
    """Parse `### METHOD path`, `### request: ...` (optional), then the raw HTTP response.

    Two transcripts (the API-key errors) were recorded without those lines: method and path
    are empty. A request body that is not JSON (the malformed-JSON case) stays bytes.
    """
    raw = (FIXTURES / f"{name}.http").read_bytes()
    method = path = ""
    request: dict | bytes | None = None
    if raw.startswith(b"### "):
        head, _, raw = raw.partition(b"\n\n")
        lines = head.decode().splitlines()
        method, path = lines[0].removeprefix("### ").split(" ", 1)
        if len(lines) > 1 and lines[1].startswith("### request: "):
            text = lines[1].removeprefix("### request: ").encode()
            try:
                request = orjson.loads(text)
            except orjson.JSONDecodeError:
                request = text
    # Most transcripts end HTTP lines with CRLF; the regex-forced and noflags ones with bare LF.
    response_head, body = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)
    response_lines = response_head.decode().splitlines()
    status = int(response_lines[0].split()[1])
    headers = {}
    for line in response_lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return Transcript(method, path, request, status, headers, body)


def replay_transport(name: str, seen: list[dict] | None = None) -> sdk_httpx.MockTransport:
    """A transport of the openai SDK's httpx flavour answering every request with one transcript.

    Request bodies are appended to `seen` so tests can check what the client sent.
    """
    transcript = load_transcript(name)
    headers = {
        key: value
        for key, value in transcript.headers.items()
        if key not in ("content-length", "transfer-encoding")
    }

    def handler(request: sdk_httpx.Request) -> sdk_httpx.Response:
        if seen is not None and request.content:
            seen.append(orjson.loads(request.content))
        return sdk_httpx.Response(transcript.status, headers=headers, content=transcript.body)

    return sdk_httpx.MockTransport(handler)


@dataclass
class StreamTiming:
    ttft: float  # POST to the first event with choices (the role chunk)
    token_times: list[float]  # arrival of each event carrying a token, from the POST
    usage: dict | None

    @property
    def mean_itl(self) -> float:
        times = self.token_times
        return (times[-1] - times[0]) / (len(times) - 1)


async def timed_stream(client: httpx.AsyncClient, payload: dict) -> StreamTiming:
    """Stream one chat completion and time its events (raw lines, no SDK overhead)."""
    start = time.perf_counter()
    ttft = None
    token_times: list[float] = []
    usage = None
    async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            now = time.perf_counter() - start
            event = orjson.loads(line[6:])
            if event["choices"]:
                if ttft is None:
                    ttft = now
                delta = event["choices"][0]["delta"]
                if "role" not in delta:
                    token_times.append(now)
            elif event.get("usage"):
                usage = event["usage"]
    assert ttft is not None, "the stream carried no choices"
    return StreamTiming(ttft, token_times, usage)


async def closed_loop(root_url: str, payload: dict, concurrency: int, rounds: int) -> list[StreamTiming]:
    """`concurrency` clients, each streaming `rounds` requests back to back."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=root_url, limits=limits, timeout=60) as client:

        async def worker() -> list[StreamTiming]:
            return [await timed_stream(client, payload) for _ in range(rounds)]

        results = await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [timing for per_client in results for timing in per_client]


def shape(value: object) -> object:
    """The structure of a JSON value: keys in order, types, and nulls (texts and ids ignored)."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(item) for item in value]
    if value is None:
        return None
    return type(value).__name__


def text_or_null(tree: object, names: tuple[str, ...] = ("content", "reasoning")) -> object:
    """`shape()` output with the given keys' values collapsed (a text may legitimately be null)."""
    if isinstance(tree, list):
        return [
            (item[0], "text-or-null")
            if isinstance(item, tuple) and item[0] in names
            else (item[0], text_or_null(item[1]))
            if isinstance(item, tuple)
            else text_or_null(item)
            for item in tree
        ]
    return tree


class _HtmlPage(BaseHTTPRequestHandler):
    """Answers every GET and POST with 200 and an HTML page, like a web server on the wrong port."""

    def _page(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def html_server() -> Iterator[str]:
    """A plain-HTTP web server that is not an OpenAI API; yields its ``127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


MOCK_ENDPOINT_KEY = "sk-test-123"


def replayed_model(name: str, seen: list[dict] | None = None, **kwargs):
    """The kit's chat model with every request answered by one transcript (sync and async)."""
    from helpers.chat import make_chat_model
    from helpers.endpoint import Endpoint

    return make_chat_model(
        endpoint=Endpoint("http://vllm.test/v1", "Qwen-0.6B", api_key=MOCK_ENDPOINT_KEY),
        http_client=sdk_httpx.Client(transport=replay_transport(name, seen)),
        http_async_client=sdk_httpx.AsyncClient(transport=replay_transport(name, seen)),
        max_retries=0,
        **kwargs,
    )


TOOL_FLAGS = {"enable_auto_tool_choice": True, "tool_call_parser": "hermes"}


@contextmanager
def tool_simulator_client() -> Iterator[httpx.Client]:
    """An httpx client on a simulator started with vLLM's tool flags (the transcripts' server)."""
    from helpers.sim import serve

    with (
        serve(profile="instant", max_model_len=2048, think_tokens_mean=24, **TOOL_FLAGS) as server,
        httpx.Client(base_url=server.root_url, timeout=120) as client,
    ):
        yield client
