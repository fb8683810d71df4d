"""The tool-calling transcripts (``hermes-qwen3-*``, ``noflags-qwen3-*``) read and replayed.

17 of them were recorded with bare ``\\n`` line ends where the earlier ones have HTTP's ``\\r\\n``,
which ``support.load_transcript`` does not split. This reads both; once ``support.py`` accepts
``\\n``-only transcripts, these two functions are ``load_transcript`` and ``replay_transport``.
"""

from __future__ import annotations

import re

import orjson
from langchain_openai._compat import httpx as sdk_httpx
from support import FIXTURES, Transcript


def load_tool_transcript(name: str) -> Transcript:
    """``support.load_transcript`` for transcripts with ``\\r\\n`` or ``\\n`` line ends."""
    raw = (FIXTURES / f"{name}.http").read_bytes()
    head, _, raw = raw.partition(b"\n\n")
    lines = head.decode().splitlines()
    method, path = lines[0].removeprefix("### ").split(" ", 1)
    request = orjson.loads(lines[1].removeprefix("### request: ")) if len(lines) > 1 else None
    response_head, body = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)
    response_lines = response_head.decode().splitlines()
    headers = {}
    for line in response_lines[1:]:
        key, _, value = line.partition(": ")
        headers[key.lower()] = value
    return Transcript(method, path, request, int(response_lines[0].split()[1]), headers, body)


def replay_tool_transport(name: str, seen: list[dict] | None = None) -> sdk_httpx.MockTransport:
    """A transport of the openai SDK's httpx answering every request with one transcript."""
    transcript = load_tool_transcript(name)
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
