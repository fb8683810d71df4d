"""The batch files: OpenAI Batch input lines in, OpenAI Batch output lines out (as `vllm run-batch` does).

Input, one JSON object per line, either the OpenAI Batch form
``{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [...], ...}}``
or the short form ``{"prompt": "你好", "custom_id": "r1", "max_tokens": 64}`` (``custom_id`` optional:
``line-N``; every other key is a request parameter). A line that cannot be sent is a ``BadLine`` with its
line number and why; it never stops the job.

Output, one JSON object per finished request, appended (and flushed) as each finishes, so a killed job
keeps every finished line: ``{"id": "batch_req_...", "custom_id": ..., "response": {"status_code": 200,
"request_id": ..., "body": {...}}, "error": null}``; a request the server refused gets its HTTP status and
``body: {"error": {...}}``; one that got no HTTP answer (connection refused, timeout, cut stream)
``response: null`` and ``error: {code, message}``.
A re-run skips every ``custom_id`` the file already answered with status 200; later lines for the same
``custom_id`` supersede earlier ones (``read_output`` keeps the last).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHAT_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class BatchRequest:
    """One line to send: its 1-based line number, ``custom_id`` and chat completions body."""

    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BadLine:
    """An input line that cannot be sent, and why."""

    line: int
    reason: str
    custom_id: str | None = None

    def __str__(self) -> str:
        which = f" ({self.custom_id})" if self.custom_id else ""
        return f"line {self.line}{which}: {self.reason}"


def read_requests(path: str | Path) -> tuple[list[BatchRequest], list[BadLine]]:
    """Every sendable line of ``path`` and every bad one (blank lines are skipped)."""
    requests: list[BatchRequest] = []
    bad: list[BadLine] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            parsed = _parse_line(number, text)
            if isinstance(parsed, BadLine):
                bad.append(parsed)
            elif parsed.custom_id in first_line:
                reason = f"custom_id {parsed.custom_id!r} repeats line {first_line[parsed.custom_id]}"
                bad.append(BadLine(number, reason, parsed.custom_id))
            else:
                first_line[parsed.custom_id] = number
                requests.append(parsed)
    return requests, bad


def _parse_line(number: int, text: str) -> BatchRequest | BadLine:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return BadLine(number, f"not JSON ({error.msg} at column {error.colno})")
    if not isinstance(record, dict):
        return BadLine(number, f"a JSON object is expected, got {type(record).__name__}")
    custom_id = record.get("custom_id", f"line-{number}" if "prompt" in record else None)
    if not isinstance(custom_id, str) or not custom_id:
        return BadLine(number, "custom_id is missing or not a non-empty string")
    if "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            return BadLine(number, "prompt must be a non-empty string", custom_id)
        params = {key: value for key, value in record.items() if key not in ("prompt", "custom_id")}
        body = {"messages": [{"role": "user", "content": prompt}], **params}
    else:
        if record.get("method", "POST") != "POST":
            return BadLine(number, f"method must be POST, got {record.get('method')!r}", custom_id)
        if record.get("url") != CHAT_URL:
            return BadLine(number, f"url must be {CHAT_URL}, got {record.get('url')!r}", custom_id)
        body = record.get("body")
        if not isinstance(body, dict):
            return BadLine(number, "body must be a JSON object (the chat completions request)", custom_id)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return BadLine(number, "body.messages must be a non-empty list", custom_id)
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return BadLine(number, f"body.messages[{index}] needs a role", custom_id)
    if body.get("stream"):
        return BadLine(number, "streaming is not supported in a batch: drop stream", custom_id)
    return BatchRequest(number, custom_id, body)


def read_output(path: str | Path) -> dict[str, dict[str, Any]]:
    """The output lines already in ``path``, last one per ``custom_id`` (a cut last line is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    if not Path(path).exists():
        return records
    with open(path, encoding="utf-8") as lines:
        for text in lines:
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue  # a line cut when a job was killed mid-write
            if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                records[record["custom_id"]] = record
    return records


def answered(record: dict[str, Any]) -> bool:
    """True for an output line with an HTTP 200 response (a re-run does not send it again)."""
    response = record.get("response")
    return isinstance(response, dict) and response.get("status_code") == 200


class OutputFile:
    """Appends output lines to ``path``, one flushed write per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def __enter__(self) -> OutputFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        if cut:
            self._file.write("\n")  # after a line cut by a killed job
        return self

    def append(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "use OutputFile in a with block"
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"
