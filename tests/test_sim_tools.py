"""Tool calling in the simulator against raw exchanges with a real vLLM 0.32 (raw httpx).

Two recorded servers (tests/fixtures/vllm-0.32/): `hermes-qwen3-*` was started with
`--reasoning-parser qwen3 --enable-auto-tool-choice --tool-call-parser hermes`, `noflags-qwen3-*`
without the two tool flags. The recorded model is a random tiny Qwen3, so the well-formed calls
were forced with a `structured_outputs.regex`; replayed as-is, the simulator writes the same forced
text and its Hermes parser reads it back. Replayed without the forcing regex, the simulator's own
model decides (tool_calls.py's rule) and the wire format is compared by structure.
"""

from __future__ import annotations

import re

import httpx
import orjson
import pytest
from support import TOOL_FLAGS, load_transcript, shape, text_or_null, tool_simulator_client

from helpers.sim import serve
from helpers.sim.config import SimConfig

TOOL_ID = re.compile(r"^chatcmpl-tool-[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def hermes():
    with tool_simulator_client() as client:
        yield client


@pytest.fixture(scope="module")
def noflags():
    with (
        serve(profile="instant", max_model_len=2048) as server,
        httpx.Client(base_url=server.root_url, timeout=120) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def parser_only():
    with (
        serve(profile="instant", max_model_len=2048, tool_call_parser="hermes") as server,
        httpx.Client(base_url=server.root_url, timeout=120) as client,
    ):
        yield client


def post(client: httpx.Client, name: str, **changes) -> tuple[httpx.Response, object]:
    transcript = load_transcript(name)
    payload = {k: v for k, v in {**transcript.request, **changes}.items() if v is not None}
    return client.post("/v1/chat/completions", json=payload), transcript


def unforced(**changes) -> dict:
    """Request changes that drop what forced the recorded model's output."""
    return {"structured_outputs": None, "logit_bias": None, **changes}


def message_shape(body: dict) -> list:
    """The message's keys in order, with `tool_calls` entries' structure (texts ignored)."""
    return text_or_null(shape(body["choices"][0]["message"]))


def stream_events(client: httpx.Client, payload: dict) -> list[dict]:
    with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        raw = response.read()
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    return [orjson.loads(event) for event in events[:-1]]


def kind_of(event: dict) -> str:
    """One word per chunk: role, content, reasoning, name<i>, args<i>, finish, usage."""
    if not event["choices"]:
        return "usage"
    choice = event["choices"][0]
    delta = choice["delta"]
    if choice["finish_reason"] is not None:
        return "finish"
    if "role" in delta:
        return "role"
    if "tool_calls" in delta:
        call = delta["tool_calls"][0]
        return f"name{call['index']}" if "id" in call else f"args{call['index']}"
    return next(iter(delta))


def collapsed(kinds: list[str]) -> list[str]:
    """Runs of the same kind collapsed to one entry."""
    return [kind for index, kind in enumerate(kinds) if index == 0 or kinds[index - 1] != kind]


def arguments_of(events: list[dict]) -> dict[int, str]:
    joined: dict[int, str] = {}
    for event in events:
        for choice in event["choices"]:
            for call in choice["delta"].get("tool_calls") or ():
                joined[call["index"]] = joined.get(call["index"], "") + call["function"].get("arguments", "")
    return joined


# --- server flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["tools-auto-error", "tools-default-choice", "tools-named", "tools-required"]
)
@pytest.mark.server
def test_without_tool_flags_the_errors_are_vllms_byte_for_byte(noflags, case):
    response, transcript = post(noflags, f"noflags-qwen3-{case}")
    assert response.status_code == transcript.status == 400
    assert response.content == transcript.body


@pytest.mark.server
def test_without_tool_flags_tool_choice_none_answers_in_text(noflags):
    response, transcript = post(noflags, "noflags-qwen3-tools-none")
    assert response.status_code == 200
    ours, theirs = response.json(), transcript.json()
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    assert "tool_calls" not in ours["choices"][0]["message"]
    assert ours["choices"][0]["finish_reason"] == "length"


@pytest.mark.server
def test_with_only_the_parser_auto_is_refused_but_required_and_named_work(parser_only):
    response, transcript = post(parser_only, "noflags-qwen3-tools-auto-error")
    assert response.status_code == 400 and response.content == transcript.body
    for case in ("tools-required", "tools-named"):
        response, _ = post(parser_only, f"noflags-qwen3-{case}", max_tokens=400)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["tool_calls"]


def test_auto_tool_choice_without_a_parser_is_refused_at_startup_as_vllm_does():
    with pytest.raises(ValueError, match="--enable-auto-tool-choice requires --tool-call-parser"):
        SimConfig(enable_auto_tool_choice=True)
    with pytest.raises(ValueError, match="hermes"):
        SimConfig(tool_call_parser="mistral")
    assert "--enable-auto-tool-choice" in SimConfig(**TOOL_FLAGS).to_args()
    assert "--enable-auto-tool-choice" not in SimConfig().to_args()


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["tools-bad-schema", "tools-unknown-named"])
@pytest.mark.server
def test_bad_tool_input_gets_vllms_error_byte_for_byte(hermes, case):
    response, transcript = post(hermes, f"hermes-qwen3-{case}")
    assert response.status_code == transcript.status == 400
    assert response.content == transcript.body


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tools": []}, "`tools` must not be an empty array."),
        ({"tools": None, "tool_choice": "required"}, "When using `tool_choice`, `tools` must be set."),
        ({"tool_choice": "sometimes"}, "Invalid value for `tool_choice`: sometimes!"),
        ({"tool_choice": {"type": "function"}}, "Invalid value for `function`: `None` in `tool_choice`!"),
        ({"tool_choice": {"type": "function", "function": {}}}, "Expected field `name` in `function`"),
    ],
)
@pytest.mark.server
def test_malformed_tool_choice_gets_vllms_validation_error(hermes, changes, message):
    response, _ = post(hermes, "hermes-qwen3-tools-auto", **changes)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(message)
    assert error["type"] == "BadRequestError" and error["code"] == 400


@pytest.mark.server
def test_a_named_tool_with_an_invalid_parameters_schema_gets_a_grammar_error(hermes):
    bad = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "nonsense"}}}
    response, _ = post(hermes, "hermes-qwen3-tools-named", tools=[bad])
    assert response.status_code == 400
    assert response.content == load_transcript("hermes-qwen3-structured-bad-schema").body


@pytest.mark.server
def test_a_tool_without_a_name_gets_a_pydantic_style_error(hermes):
    response, _ = post(
        hermes, "hermes-qwen3-tools-auto", tools=[{"type": "function", "function": {"description": "x"}}]
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "body.tools.0.function.name" and error["type"] == "Bad Request"
    assert error["message"].startswith("1 validation error:\n  {'type': 'missing'")


# --- non-streamed replies ------------------------------------------------------------------------

FORCED = [
    "tools-auto-wellformed",
    "tools-auto-parallel",
    "tools-auto-text-then-call",
    "tools-auto-thinking-wellformed",
]


@pytest.mark.parametrize("case", FORCED)
@pytest.mark.server
def test_forced_tool_call_text_is_parsed_as_vllm_parses_it(hermes, case):
    response, transcript = post(hermes, f"hermes-qwen3-{case}", max_tokens=2000)
    assert response.status_code == 200
    ours, theirs = response.json(), transcript.json()
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    mine, recorded = ours["choices"][0], theirs["choices"][0]
    assert mine["finish_reason"] == recorded["finish_reason"] == "tool_calls"
    assert mine["message"]["content"] == recorded["message"]["content"]
    assert [c["function"] for c in mine["message"]["tool_calls"]] == [
        c["function"] for c in recorded["message"]["tool_calls"]
    ]
    assert all(TOOL_ID.match(c["id"]) for c in mine["message"]["tool_calls"])
    assert (mine["message"]["reasoning"] is None) == (recorded["message"]["reasoning"] is None)


@pytest.mark.server
def test_a_malformed_call_stays_raw_text_in_content(hermes):
    response, transcript = post(hermes, "hermes-qwen3-tools-auto-malformed")
    ours, theirs = response.json(), transcript.json()
    assert message_shape(ours) == message_shape(theirs)
    assert ours["choices"][0]["message"]["content"] == theirs["choices"][0]["message"]["content"]
    assert ours["choices"][0]["finish_reason"] == "stop"


@pytest.mark.server
def test_the_model_calls_the_matching_tool_on_its_own(hermes):
    response, transcript = post(hermes, "hermes-qwen3-tools-auto-wellformed", **unforced())
    ours, theirs = response.json(), transcript.json()
    assert message_shape(ours) == message_shape(theirs)
    (call,) = ours["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"])["city"] == "北京"
    assert ours["choices"][0]["finish_reason"] == "tool_calls"
    assert ours["choices"][0]["message"]["content"] is None
    # A call costs its tokens: the usage counts the Hermes text the model wrote.
    assert ours["usage"]["completion_tokens"] >= 20


@pytest.mark.server
def test_named_tool_choice_returns_the_guided_arguments_with_finish_stop(hermes):
    response, transcript = post(hermes, "hermes-qwen3-tools-named")
    ours, theirs = response.json(), transcript.json()
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))
    choice = ours["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == ""
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and TOOL_ID.match(call["id"])
    assert "city" in orjson.loads(call["function"]["arguments"])


@pytest.mark.server
def test_named_tool_choice_with_thinking_keeps_the_reasoning_first(hermes):
    response, transcript = post(hermes, "hermes-qwen3-tools-named-thinking", **unforced(max_tokens=2000))
    ours, theirs = response.json(), transcript.json()
    assert message_shape(ours) == message_shape(theirs)
    message = ours["choices"][0]["message"]
    assert message["reasoning"] and message["content"] == ""
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"])
    assert ours["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


@pytest.mark.server
def test_required_makes_the_model_call_a_tool(hermes):
    response, _ = post(hermes, "hermes-qwen3-tools-required", max_tokens=400)
    ours = response.json()
    assert ours["choices"][0]["finish_reason"] == "tool_calls"
    assert ours["choices"][0]["message"]["tool_calls"]


BOTH_TOOLS = [{"role": "user", "content": "北京今天天气怎么样? 再把 2 和 3 相加。"}]


@pytest.mark.server
def test_parallel_tool_calls_false_keeps_one_call(hermes):
    def calls(**changes) -> list[dict]:
        response, _ = post(
            hermes, "hermes-qwen3-tools-auto-parallel", **unforced(messages=BOTH_TOOLS, **changes)
        )
        return response.json()["choices"][0]["message"]["tool_calls"]

    assert len(calls()) == 2
    assert len(calls(parallel_tool_calls=False)) == 1


@pytest.mark.server
def test_a_call_cut_by_max_tokens_is_raw_text_with_finish_length(hermes):
    response, _ = post(hermes, "hermes-qwen3-tools-auto-wellformed", **unforced(max_tokens=10))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"].startswith("<tool_call>")


@pytest.mark.server
def test_after_a_tool_result_the_model_answers_in_text(hermes):
    response, transcript = post(hermes, "hermes-qwen3-tools-result-turn", max_tokens=400)
    ours, theirs = response.json(), transcript.json()
    assert message_shape(ours) == message_shape(theirs)
    assert ours["choices"][0]["finish_reason"] == "stop"
    assert "21" in ours["choices"][0]["message"]["content"]


@pytest.mark.server
def test_tool_choice_none_answers_in_text(hermes):
    response, transcript = post(hermes, "hermes-qwen3-tools-none")
    ours, theirs = response.json(), transcript.json()
    assert text_or_null(shape(ours)) == text_or_null(shape(theirs))


@pytest.mark.server
def test_prompt_tokens_grow_with_the_tools_block(hermes):
    def prompt_tokens(**changes) -> int:
        response, _ = post(hermes, "hermes-qwen3-tools-none", **changes)
        return response.json()["usage"]["prompt_tokens"]

    request = load_transcript("hermes-qwen3-tools-auto").request
    no_tools = prompt_tokens(tools=None, tool_choice=None)
    one_tool = prompt_tokens()
    two_tools = prompt_tokens(tools=request["tools"])
    assert no_tools + 100 < one_tool < two_tools
    turn = load_transcript("hermes-qwen3-tools-result-turn").request
    assert prompt_tokens(messages=turn["messages"]) > one_tool


# --- streamed replies ----------------------------------------------------------------------------

STREAMED = [
    "tools-auto-wellformed-stream",
    "tools-auto-parallel-stream",
    "tools-auto-text-then-call-stream",
    "tools-auto-thinking-wellformed-stream",
]


@pytest.mark.parametrize("case", STREAMED)
@pytest.mark.server
def test_streamed_calls_follow_the_recorded_delta_sequence(hermes, case):
    transcript = load_transcript(f"hermes-qwen3-{case}")
    ours = stream_events(hermes, {**transcript.request, "max_tokens": 2000})
    theirs = transcript.sse_events()
    our_kinds, their_kinds = [kind_of(e) for e in ours], [kind_of(e) for e in theirs]
    # The recorded reasoning was generated before the forcing regex applied; compare after it.
    assert collapsed([k for k in our_kinds if k != "reasoning"]) == collapsed(
        [k for k in their_kinds if k != "reasoning"]
    )
    for kind in set(our_kinds):
        mine = next(e for e, k in zip(ours, our_kinds, strict=True) if k == kind)
        recorded = next(e for e, k in zip(theirs, their_kinds, strict=True) if k == kind)
        assert text_or_null(shape(mine)) == text_or_null(shape(recorded)), kind
    assert ours[our_kinds.index("finish")]["choices"][0]["finish_reason"] == "tool_calls"
    assert arguments_of(ours) == arguments_of(theirs)
    names = [
        e["choices"][0]["delta"]["tool_calls"][0]
        for e, k in zip(ours, our_kinds, strict=True)
        if k.startswith("name")
    ]
    assert all(TOOL_ID.match(n["id"]) for n in names) and len({n["id"] for n in names}) == len(names)


@pytest.mark.server
def test_a_streamed_call_sends_one_arguments_chunk_per_token(hermes):
    payload = {**load_transcript("hermes-qwen3-tools-auto-wellformed-stream").request, "max_tokens": 2000}
    events = stream_events(hermes, payload)
    usage = events[-1]["usage"]
    kinds = [kind_of(e) for e in events]
    # Tokens sending no delta (tags, the JSON around the arguments) send no chunk, except the
    # end-of-sequence token, whose chunk carries the finish reason.
    assert kinds.count("args0") < usage["completion_tokens"]
    assert events[kinds.index("finish")]["choices"][0]["delta"] == {}


@pytest.mark.server
def test_a_named_tool_streams_its_name_then_the_arguments(hermes):
    transcript = load_transcript("hermes-qwen3-tools-named-stream")
    ours = stream_events(hermes, transcript.request)
    theirs = transcript.sse_events()
    assert collapsed([kind_of(e) for e in ours]) == collapsed([kind_of(e) for e in theirs])
    assert ours[-1]["choices"][0]["finish_reason"] == "stop"
    assert shape(ours[-1]) == shape(theirs[-1])  # system_fingerprint on the finish chunk
    assert "city" in orjson.loads(arguments_of(ours)[0])


@pytest.mark.server
def test_required_streamed_with_usage(hermes):
    transcript = load_transcript("hermes-qwen3-tools-required-stream")
    ours = stream_events(hermes, {**transcript.request, "max_tokens": 400})
    assert kind_of(ours[-1]) == "usage"
    assert shape(ours[-1]) == shape(transcript.sse_events()[-1])
    assert ours[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert "system_fingerprint" not in ours[-2]


@pytest.mark.server
def test_the_model_calls_on_its_own_when_streamed_too(hermes):
    payload = {**load_transcript("hermes-qwen3-tools-auto-parallel-stream").request, **unforced()}
    payload = {k: v for k, v in payload.items() if v is not None}
    events = stream_events(hermes, payload)
    names = [
        e["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] for e in events if kind_of(e) == "name0"
    ]
    assert names == ["get_weather"]
    assert orjson.loads(arguments_of(events)[0])["city"] == "北京"


# --- the tool-call fault -------------------------------------------------------------------------


@pytest.mark.server
def test_tool_call_error_rate_makes_the_model_write_a_call_the_parser_gives_up_on():
    request = {**load_transcript("hermes-qwen3-tools-auto-wellformed").request, **unforced()}
    request = {k: v for k, v in request.items() if v is not None}
    with (
        serve(profile="instant", tool_call_error_rate=1.0, **TOOL_FLAGS) as server,
        httpx.Client(base_url=server.root_url, timeout=120) as client,
    ):
        body = client.post("/v1/chat/completions", json=request).json()
        text_only = client.post("/v1/chat/completions", json={**request, "tool_choice": "none"}).json()
        metrics = client.get("/metrics").text
    choice = body["choices"][0]
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"].startswith("<tool_call>")
    assert choice["finish_reason"] == "stop"
    assert "<tool_call>" not in text_only["choices"][0]["message"]["content"]
    # Counted once: the reply without a planned call is not a tool-call fault.
    assert re.search(r'vllm_sim:injected_faults_total\{[^}]*kind="tool_call_error"[^}]*\} 1\.0', metrics)


@pytest.mark.server
def test_the_tool_call_fault_is_seeded():
    request = {**load_transcript("hermes-qwen3-tools-auto-wellformed").request, **unforced()}
    request = {k: v for k, v in request.items() if v is not None}

    def outcomes(seed: int) -> list[bool]:
        with (
            serve(profile="instant", tool_call_error_rate=0.5, fault_seed=seed, **TOOL_FLAGS) as server,
            httpx.Client(base_url=server.root_url, timeout=120) as client,
        ):
            replies = [client.post("/v1/chat/completions", json=request).json() for _ in range(12)]
        return ["tool_calls" in r["choices"][0]["message"] for r in replies]

    first = outcomes(7)
    assert first == outcomes(7)
    assert any(first) and not all(first)


@pytest.mark.server
def test_a_malformed_call_streamed_still_sends_what_the_parser_got():
    request = {**load_transcript("hermes-qwen3-tools-auto-wellformed-stream").request, **unforced()}
    request = {k: v for k, v in request.items() if v is not None}
    with (
        serve(profile="instant", tool_call_error_rate=1.0, **TOOL_FLAGS) as server,
        httpx.Client(base_url=server.root_url, timeout=120) as client,
    ):
        events = stream_events(client, request)
        body = client.post("/v1/chat/completions", json={**request, "stream": False}).json()
    kinds = collapsed([kind_of(e) for e in events])
    # Like vLLM's streaming parser, the name and the argument text go out before the JSON breaks;
    # the same reply non-streamed is raw text (the parser sees it whole and gives up).
    assert kinds[:3] == ["role", "name0", "args0"]
    arguments = arguments_of(events)[0]
    with pytest.raises(ValueError):
        orjson.loads(arguments)
    assert "tool_calls" not in body["choices"][0]["message"]
    assert events[-1]["usage"]["completion_tokens"] == body["usage"]["completion_tokens"]
