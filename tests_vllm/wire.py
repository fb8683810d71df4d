"""Replay a recorded request (tests/fixtures/vllm-0.32/) against the live server and compare shapes.

Shapes, not text: keys in order, value types, nulls, status codes, content types, the parser's
split between `reasoning` and `content`, tool-call structure. The random model's text differs from
the recording, so `content`/`reasoning` may be text or null on either side; where the recording's
output was not forced (tool_choice "auto" without a regex; "required", whose grammar-forced JSON may be
cut by max_tokens), whether the output parses as a tool call is the model's business and `tool_calls`
is left out of the comparison. In streams, a text-only delta may carry `reasoning` or `content`
(the noise writes `</think>` or not; the parser split is checked by its own tests), and the last chunk
may be the empty-delta one vLLM sends when the model stops on <|im_end|> before max_tokens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from support import Transcript, load_transcript, shape, text_or_null

from kit_tools import vllm_cpu

# The recording's tiny model had other token ids: its logit_bias keys mean these tokens.
RECORDED_TOKEN_IDS = {"468": "</think>", "469": "<tool_call>"}


def token_ids(model_dir: Path) -> dict[str, int]:
    """Added tokens of the tiny model's tokenizer, by text."""
    added = json.loads((model_dir / "tokenizer.json").read_text())["added_tokens"]
    return {token["content"]: token["id"] for token in added}


def live_request(transcript: Transcript, model_dir: Path) -> bytes | dict | None:
    """The recorded request body, with logit_bias keys moved to the live tokenizer's ids."""
    request = transcript.request
    if isinstance(request, dict) and "logit_bias" in request:
        ids = token_ids(model_dir)
        request = {
            **request,
            "logit_bias": {
                str(ids[RECORDED_TOKEN_IDS[key]]): bias for key, bias in request["logit_bias"].items()
            },
        }
    return request


def send(
    server: vllm_cpu.Server,
    method: str,
    path: str,
    body: bytes | dict | None,
    api_key: str | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=server.root_url, timeout=120) as client:
        if isinstance(body, bytes):
            headers["Content-Type"] = "application/json"
            return client.request(method, path, content=body, headers=headers)
        return client.request(method, path, json=body, headers=headers)


def replay(server: vllm_cpu.Server, name: str, model_dir: Path) -> tuple[httpx.Response, Transcript]:
    transcript = load_transcript(name)
    key = server.api_key if transcript.path.startswith("/v1") else None
    response = send(server, transcript.method, transcript.path, live_request(transcript, model_dir), key)
    return response, transcript


def _unforced_tools(request: object) -> bool:
    if not isinstance(request, dict) or not request.get("tools"):
        return False
    choice = request.get("tool_choice", "auto")
    return choice == "required" or (choice == "auto" and "structured_outputs" not in request)


def _drop(tree: object, names: tuple[str, ...]) -> object:
    """`shape()` output without the given keys anywhere."""
    if isinstance(tree, list):
        return [
            (item[0], _drop(item[1], names)) if isinstance(item, tuple) else _drop(item, names)
            for item in tree
            if not (isinstance(item, tuple) and item[0] in names)
        ]
    return tree


def normalised(value: object, request: object) -> object:
    tree = text_or_null(shape(value))
    return _drop(tree, ("tool_calls",)) if _unforced_tools(request) else tree


TEXT_DELTA = "text-delta"


def _text_deltas_alike(tree: object) -> object:
    """A delta holding only `reasoning` or only `content` becomes one kind, `text-delta`."""
    if isinstance(tree, list):
        return [
            (item[0], TEXT_DELTA)
            if isinstance(item, tuple)
            and item[0] == "delta"
            and item[1] in ([("reasoning", "text-or-null")], [("content", "text-or-null")])
            else (item[0], _text_deltas_alike(item[1]))
            if isinstance(item, tuple)
            else _text_deltas_alike(item)
            for item in tree
        ]
    return tree


# The finishing chunk when the model stops on its own (<|im_end|>): empty delta, finish_reason "stop".
STOPPED_ON_EOS = [
    ("id", "str"),
    ("object", "str"),
    ("created", "int"),
    ("model", "str"),
    (
        "choices",
        [
            [
                ("index", "int"),
                ("delta", []),
                ("logprobs", None),
                ("finish_reason", "str"),
                ("stop_reason", None),
                ("token_ids", None),
            ]
        ],
    ),
    ("system_fingerprint", "str"),
]


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+)", text, flags=re.MULTILINE))


def assert_conforms(response: httpx.Response, transcript: Transcript) -> None:
    """The live response has the recording's status, content type and shape."""
    request = transcript.request
    assert response.status_code == transcript.status, response.text[:500]
    recorded_type = transcript.headers.get("content-type", "").split(";")[0]
    assert response.headers.get("content-type", "").split(";")[0] == recorded_type
    if transcript.path == "/metrics":
        missing = metric_names(transcript.text) - metric_names(response.text)
        assert not missing, f"metrics the recording has and the live server lacks: {sorted(missing)}"
    elif recorded_type == "text/event-stream":
        assert_stream_conforms(response, transcript)
    elif recorded_type == "application/json":
        live, recorded = normalised(response.json(), request), normalised(transcript.json(), request)
        assert live == recorded, f"live:\n{live}\nrecorded:\n{recorded}"
    else:
        assert response.content == transcript.body


def _events(body: bytes) -> list[dict]:
    lines = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert lines and lines[-1] == b"[DONE]", "the stream must end with data: [DONE]"
    return [json.loads(line) for line in lines[:-1]]


def _with_delta_calls(event: list, call: object) -> list:
    """`event` (a chunk's shape) with its one choice's delta carrying only `call` in `tool_calls`."""

    def delta(items: list) -> list:
        return [(key, [call] if key == "tool_calls" else value) for key, value in items]

    def choice(items: list) -> list:
        return [(key, delta(value) if key == "delta" else value) for key, value in items]

    return [(key, [choice(value[0])] if key == "choices" else value) for key, value in event]


def _one_tool_call_per_chunk(event: list) -> list[list]:
    """A chunk whose delta carries several `tool_calls` entries, as one chunk per entry.

    vLLM's hermes parser sends a call's name and its arguments as separate entries; when one engine
    step yields the tokens of both (a loaded machine), they arrive in one chunk. Each entry's shape
    must be one the recording has, whether merged or not."""
    choices = dict(item for item in event if isinstance(item, tuple)).get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        return [event]
    delta = dict(choices[0]).get("delta")
    calls = dict(delta).get("tool_calls") if isinstance(delta, list) else None
    if not isinstance(calls, list) or len(calls) < 2:
        return [event]
    return [_with_delta_calls(event, call) for call in calls]


def assert_stream_conforms(response: httpx.Response, transcript: Transcript) -> None:
    """First chunk (role), the finishing chunk, the usage chunk (with stream_options) as recorded;
    every live chunk's shape is one the recording has."""
    request = transcript.request
    live = [_text_deltas_alike(normalised(event, request)) for event in _events(response.content)]
    recorded = [_text_deltas_alike(normalised(event, request)) for event in transcript.sse_events()]
    assert live[0] == recorded[0], "first chunk (role)"
    wants_usage = isinstance(request, dict) and (request.get("stream_options") or {}).get("include_usage")
    if wants_usage:
        assert live[-1] == recorded[-1], "usage chunk"
    else:
        assert all("usage" not in dict(item for item in event if isinstance(item, tuple)) for event in live)
    known = [part for event in [*recorded, STOPPED_ON_EOS] for part in _one_tool_call_per_chunk(event)]
    unknown = [part for event in live for part in _one_tool_call_per_chunk(event) if part not in known]
    assert not unknown, f"{len(unknown)} chunk shape(s) the recording never had, e.g. {unknown[0]}"


def transcripts(prefix: str) -> list[str]:
    from support import FIXTURES

    return sorted(path.stem for path in FIXTURES.glob(f"{prefix}*.http"))
