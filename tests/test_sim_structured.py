"""Structured output in the simulator against raw exchanges with a real vLLM 0.32 (raw httpx):
`response_format` json_schema / json_object, `structured_outputs` json / regex / choice.

The recorded model is random noise constrained by the grammar, so its JSON is valid but its values
are not; the simulator's values come from the prompt (guided.py). Compared: the body's structure,
finish reasons, validity for the constraint, the streamed chunk sequence, the errors byte for byte.
"""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import orjson
import pytest
from support import load_transcript, shape, text_or_null, tool_simulator_client

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client():
    with tool_simulator_client() as client:
        yield client


def post(client: httpx.Client, name: str, **changes) -> tuple[dict, dict, object]:
    transcript = load_transcript(name)
    payload = {k: v for k, v in {**transcript.request, **changes}.items() if v is not None}
    response = client.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200, response.text
    return response.json(), transcript.json(), transcript


def schema_of(request: dict) -> dict:
    return request["response_format"]["json_schema"]["schema"]


@pytest.mark.parametrize(
    "case",
    [
        "structured-json-schema",
        "structured-json-schema-enum",
        "structured-json-schema-thinking",
        "structured-json-schema-enum-thinking",
    ],
)
def test_json_schema_content_is_valid_for_the_schema(client, case):
    ours, theirs, transcript = post(client, f"hermes-qwen3-{case}", max_tokens=2000)
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    message = ours["choices"][0]["message"]
    jsonschema.validate(json.loads(message["content"]), schema_of(transcript.request))
    assert ours["choices"][0]["finish_reason"] == "stop"
    thinking = "chat_template_kwargs" not in transcript.request
    # With thinking on, the reasoning is free text and the grammar applies after </think>.
    assert bool(message["reasoning"]) == thinking
    assert (ours["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0) == thinking


def test_values_come_from_the_prompt(client):
    ours, _, _ = post(client, "hermes-qwen3-structured-json-schema")
    person = json.loads(ours["choices"][0]["message"]["content"])
    assert person == {"name": "张三", "age": 28, "skills": ["Python", "SQL"]}


def test_max_tokens_cuts_the_json_with_finish_length(client):
    ours, theirs, _ = post(client, "hermes-qwen3-structured-json-schema-cut")
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    choice = ours["choices"][0]
    assert choice["finish_reason"] == theirs["choices"][0]["finish_reason"] == "length"
    assert ours["usage"]["completion_tokens"] == theirs["usage"]["completion_tokens"] == 6
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])


def test_json_object_gives_a_json_object(client):
    ours, theirs, _ = post(client, "hermes-qwen3-structured-json-object")
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    assert isinstance(json.loads(ours["choices"][0]["message"]["content"]), dict)
    assert ours["choices"][0]["finish_reason"] == "stop"


def test_regex_content_matches_the_pattern(client):
    ours, theirs, transcript = post(client, "hermes-qwen3-structured-regex")
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    pattern = transcript.request["structured_outputs"]["regex"]
    assert re.fullmatch(pattern, ours["choices"][0]["message"]["content"])


def test_choice_content_is_one_of_the_choices(client):
    ours, theirs, transcript = post(client, "hermes-qwen3-structured-choice")
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    assert ours["choices"][0]["message"]["content"] in transcript.request["structured_outputs"]["choice"]
    assert ours["choices"][0]["finish_reason"] == "stop"


def test_structured_outputs_json_takes_a_schema_too(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ours, _, _ = post(
        client,
        "hermes-qwen3-structured-regex",
        structured_outputs={"json": schema},
        messages=[{"role": "user", "content": "北京今天天气怎么样?"}],
    )
    assert json.loads(ours["choices"][0]["message"]["content"]) == {"city": "北京"}


def test_the_older_guided_fields_are_ignored_as_vllm_032_ignores_them(client):
    ours, _, _ = post(
        client,
        "hermes-qwen3-structured-regex",
        structured_outputs=None,
        guided_regex="[0-9]{3}",
        max_tokens=30,
    )
    content = ours["choices"][0]["message"]["content"]
    assert not re.fullmatch("[0-9]{3}", content)
    assert "simulat" in content or "模拟" in content


def test_strict_or_not_the_schema_applies(client):
    transcript = load_transcript("hermes-qwen3-structured-json-schema")
    response_format = json.loads(json.dumps(transcript.request["response_format"]))
    response_format["json_schema"].pop("strict")
    ours, _, _ = post(client, "hermes-qwen3-structured-json-schema", response_format=response_format)
    jsonschema.validate(json.loads(ours["choices"][0]["message"]["content"]), schema_of(transcript.request))


def test_streamed_json_schema_follows_the_recorded_sequence(client):
    transcript = load_transcript("hermes-qwen3-structured-json-schema-enum-stream")
    with client.stream("POST", "/v1/chat/completions", json=transcript.request) as response:
        raw = response.read()
    ours = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    theirs = transcript.sse_events()
    assert shape(ours[0]) == shape(theirs[0])
    assert text_or_null(shape(ours[1])) == text_or_null(shape(theirs[1]))
    # The end-of-sequence token's chunk: empty delta and the finish reason; then usage.
    assert (
        ours[-2]["choices"][0]
        == theirs[-2]["choices"][0]
        == {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
            "token_ids": None,
        }
    )
    assert shape(ours[-1]) == shape(theirs[-1])
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in ours[1:-1])
    jsonschema.validate(json.loads(text), schema_of(transcript.request))
    assert ours[-1]["usage"]["completion_tokens"] == len(ours) - 2


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "X", "schema": {"type": "nonsense"}}},
    ],
)
def test_an_invalid_schema_gets_vllms_grammar_error(client, response_format):
    transcript = load_transcript("hermes-qwen3-structured-bad-schema")
    response = client.post(
        "/v1/chat/completions", json={**transcript.request, "response_format": response_format}
    )
    assert response.status_code == transcript.status == 400
    assert response.content == transcript.body


def test_an_invalid_schema_in_structured_outputs_gets_the_same_error(client):
    transcript = load_transcript("hermes-qwen3-structured-bad-schema")
    request = {k: v for k, v in transcript.request.items() if k != "response_format"}
    response = client.post(
        "/v1/chat/completions", json={**request, "structured_outputs": {"json": {"type": "nonsense"}}}
    )
    assert response.status_code == 400 and response.content == transcript.body


def test_two_kinds_of_constraint_are_refused(client):
    transcript = load_transcript("hermes-qwen3-structured-regex")
    response = client.post(
        "/v1/chat/completions",
        json={**transcript.request, "structured_outputs": {"regex": "a", "choice": ["a", "b"]}},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("You can only use one kind of constraints")


def test_structured_outputs_with_a_named_tool_are_refused(client):
    transcript = load_transcript("hermes-qwen3-tools-named")
    response = client.post(
        "/v1/chat/completions", json={**transcript.request, "structured_outputs": {"regex": "a"}}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "You can only either use constraints for structured outputs or tools, not both."
    )
