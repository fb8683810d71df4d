"""The simulator's wire format against raw exchanges recorded from a real vLLM 0.32 server.

Three server configurations, as in tests/fixtures/vllm-0.32/: `--reasoning-parser qwen3`,
`--reasoning-parser deepseek_r1`, and no parser with `--api-key sk-test-123`; all with
`max_model_len` 2048 like the recorded server.
"""

from __future__ import annotations

import re

import httpx
import orjson
import pytest
from support import load_transcript, shape, text_or_null

from helpers.sim import serve

pytestmark = pytest.mark.server

CONFIGS = {
    "qwen3-parser": {"reasoning_parser": "qwen3"},
    "deepseek-r1-parser": {"reasoning_parser": "deepseek_r1"},
    "no-parser": {"reasoning_parser": "none", "api_key": "sk-test-123"},
}
AUTH = {"Authorization": "Bearer sk-test-123"}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def sim(request):
    config = request.param
    with serve(profile="instant", max_model_len=2048, **CONFIGS[config]) as server:
        headers = AUTH if config == "no-parser" else {}
        with httpx.Client(base_url=server.root_url, headers=headers, timeout=30) as client:
            yield config, client


def replay(client: httpx.Client, name: str) -> tuple[httpx.Response, object]:
    transcript = load_transcript(name)
    if transcript.method == "GET":
        return client.get(transcript.path), transcript
    if isinstance(transcript.request, bytes):
        response = client.post(
            transcript.path, content=transcript.request, headers={"content-type": "application/json"}
        )
    else:
        response = client.post(transcript.path, json=transcript.request)
    return response, transcript


@pytest.mark.parametrize("case", ["chat-no-thinking", "chat-seed-style-extra-body", "chat-thinking"])
def test_non_streamed_body_has_the_recorded_keys_in_order(sim, case):
    config, client = sim
    response, transcript = replay(client, f"{config}-{case}")
    assert response.status_code == transcript.status == 200
    assert response.headers["content-type"] == transcript.headers["content-type"]
    assert response.headers["vary"] == "Origin"
    ours, theirs = response.json(), transcript.json()
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    assert ours["model"] == theirs["model"] == "Qwen/Qwen3-0.6B"
    assert ours["id"].startswith("chatcmpl-")
    assert ours["system_fingerprint"].startswith("vllm-0.32.0-sim")
    assert ours["usage"]["completion_tokens"] == theirs["usage"]["completion_tokens"]
    assert ours["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("case", ["stream-no-thinking", "stream-no-usage", "stream-thinking-usage"])
def test_stream_event_sequence_matches_the_recording(sim, case):
    config, client = sim
    transcript = load_transcript(f"{config}-{case}")
    with client.stream("POST", transcript.path, json=transcript.request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == transcript.headers["content-type"]
        raw = response.read()
    # Events are separated by blank lines, exactly as vLLM writes them.
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    ours = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    theirs = transcript.events()
    assert ours[-1] == theirs[-1] == b"[DONE]"
    ours_json = [orjson.loads(event) for event in ours[:-1]]
    theirs_json = [orjson.loads(event) for event in theirs[:-1]]
    # The role chunk first, byte-for-byte in structure.
    assert shape(ours_json[0]) == shape(theirs_json[0])
    assert ours_json[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_included = bool(transcript.request.get("stream_options", {}).get("include_usage"))
    token_events = ours_json[1:-1] if usage_included else ours_json[1:]
    their_tokens = theirs_json[1:-1] if usage_included else theirs_json[1:]
    # Middle chunks: same keys; delta holds exactly one text field.
    for event in token_events[:-1]:
        assert text_or_null(shape(event)) == text_or_null(shape(their_tokens[0]))
        assert len(event["choices"][0]["delta"]) == 1
    # finish_reason, stop_reason and system_fingerprint on the last token chunk only.
    last, their_last = token_events[-1], their_tokens[-1]
    assert [k for k, _ in shape(last)] == [k for k, _ in shape(their_last)]
    assert list(last["choices"][0]) == list(their_last["choices"][0])
    assert last["choices"][0]["finish_reason"] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in token_events[:-1])
    if usage_included:
        usage_event, their_usage = ours_json[-1], theirs_json[-1]
        assert usage_event["choices"] == []
        assert shape(usage_event) == shape(their_usage)
        assert usage_event["usage"]["completion_tokens"] == transcript.request["max_tokens"]


@pytest.mark.parametrize(
    "case",
    [
        "error-bad-temperature",
        "error-stream-bad-temperature",
        "error-malformed-json",
        "error-missing-messages",
        "error-unknown-model",
        "error-max-tokens-too-big",
    ],
)
def test_error_status_and_body_are_identical(sim, case):
    config, client = sim
    response, transcript = replay(client, f"{config}-{case}")
    assert response.status_code == transcript.status
    assert response.content == transcript.body
    assert response.headers["content-type"] == "application/json"


def test_prompt_over_context_gives_the_recorded_error(sim):
    config, client = sim
    response, transcript = replay(client, f"{config}-error-too-long")
    assert response.status_code == transcript.status == 400

    def numbers_masked(body: bytes) -> bytes:
        return re.sub(rb"\d+", b"N", body)

    assert numbers_masked(response.content) == numbers_masked(transcript.body)
    assert b"maximum context length is 2048 tokens" in response.content


def test_models_lists_every_served_name_with_the_recorded_keys(sim):
    config, client = sim
    response, transcript = replay(client, f"{config}-models")
    assert response.status_code == 200
    ours, theirs = response.json(), transcript.json()
    assert shape(ours) == shape(theirs)
    assert [m["id"] for m in ours["data"]] == [m["id"] for m in theirs["data"]]
    assert all(m["max_model_len"] == 2048 for m in ours["data"])


def test_health_and_version(sim):
    config, client = sim
    response, transcript = replay(client, f"{config}-health")
    assert response.status_code == 200 and response.content == b"" == transcript.body.strip()
    response, transcript = replay(client, f"{config}-version")
    assert shape(response.json()) == shape(transcript.json())
    assert response.json()["version"].startswith("0.32.0") and "sim" in response.json()["version"]


def _metric_lines(text: str) -> dict[str, set[str]]:
    """metric name -> set of label-name tuples seen (as strings)."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("vllm:"):
            continue
        name, _, rest = line.partition("{")
        labels = ",".join(sorted(part.split("=")[0] for part in rest.split("}")[0].split(",")))
        found.setdefault(name, set()).add(labels)
    return found


REQUIRED_METRICS = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:request_queue_time_seconds_bucket",
]


def test_metrics_names_labels_and_buckets_match_vllm(sim):
    config, client = sim
    client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    response, transcript = replay(client, f"{config}-metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    ours, theirs = _metric_lines(response.text), _metric_lines(transcript.text)
    for name in REQUIRED_METRICS:
        assert name in ours, name
        assert ours[name] == theirs[name], name
    for histogram in ("time_to_first_token", "inter_token_latency", "e2e_request_latency"):
        pattern = rf'vllm:{histogram}_seconds_bucket{{[^}}]*le="([^"]+)"'
        assert re.findall(pattern, response.text) == re.findall(pattern, transcript.text)
    reasons = set(re.findall(r'vllm:request_success_total{[^}]*finished_reason="(\w+)"', response.text))
    assert reasons == {"stop", "length", "abort", "error", "repetition"}
    assert 'vllm_sim:engine_lag_steps_total{engine="0",model_name="Qwen/Qwen3-0.6B"}' in response.text


def test_api_key_errors_match_the_recording():
    with serve(profile="instant", reasoning_parser="none", api_key="sk-test-123") as server:
        for case, headers in (
            ("no-parser-error-missing-api-key", {}),
            ("no-parser-error-wrong-api-key", {"Authorization": "Bearer wrong"}),
        ):
            transcript = load_transcript(case)
            response = httpx.post(
                server.base_url + "/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
                headers=headers,
            )
            assert response.status_code == transcript.status == 401
            assert response.content == transcript.body == b'{"error":"Unauthorized"}'
            assert response.headers["content-type"] == "application/json"
        assert httpx.get(server.base_url + "/models").status_code == 401
        assert httpx.get(server.base_url + "/models", headers=AUTH).status_code == 200
        # As in vLLM, the key guards /v1 only.
        for path in ("/health", "/metrics", "/version"):
            assert httpx.get(server.root_url + path).status_code == 200, path
