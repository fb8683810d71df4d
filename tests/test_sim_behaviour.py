"""What the simulator answers: thinking modes per parser, cuts, determinism, names, limits."""

from __future__ import annotations

import httpx
import orjson
import pytest

from helpers.sim import serve
from helpers.sim.tokens import count_prompt_tokens

pytestmark = pytest.mark.server

QUESTION = [{"role": "user", "content": "What does asyncio.gather return?"}]
CHINESE = [{"role": "user", "content": "请用一句话解释什么是异步编程。"}]
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def servers():
    with (
        serve(profile="instant", reasoning_parser="qwen3") as qwen3,
        serve(profile="instant", reasoning_parser="deepseek_r1") as deepseek,
        serve(profile="instant", reasoning_parser="none") as plain,
        serve(profile="instant", reasoning_parser="qwen3", reasoning_field="reasoning_content") as legacy,
    ):
        yield {"qwen3": qwen3, "deepseek_r1": deepseek, "none": plain, "legacy": legacy}


def chat(server, **body) -> dict:
    body.setdefault("messages", QUESTION)
    response = httpx.post(server.base_url + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def stream(server, **body) -> list[dict]:
    body.setdefault("messages", QUESTION)
    body["stream"] = True
    body.setdefault("stream_options", {"include_usage": True})
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        raw = r.read()
    events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


def streamed_fields(events: list[dict]) -> tuple[str, str, dict]:
    reasoning, content = [], []
    for event in events[1:]:
        if not event["choices"]:
            continue
        delta = event["choices"][0]["delta"]
        reasoning.append(delta.get("reasoning", "") or delta.get("reasoning_content", "") or "")
        content.append(delta.get("content") or "")
    return "".join(reasoning), "".join(content), events[-1]["usage"]


def test_qwen3_parser_splits_reasoning_from_the_answer(servers):
    body = chat(servers["qwen3"])
    message = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert message["reasoning"].startswith("\n") and "<think>" not in message["reasoning"]
    assert message["content"].startswith("\n\n")
    assert "simulat" in message["content"]
    assert "</think>" not in message["content"]
    usage = body["usage"]
    assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] < usage["completion_tokens"]
    assert usage["prompt_tokens"] == count_prompt_tokens(QUESTION)


def test_stream_and_non_stream_carry_the_same_text(servers):
    body = chat(servers["qwen3"], seed=5)
    reasoning, content, usage = streamed_fields(stream(servers["qwen3"], seed=5))
    message = body["choices"][0]["message"]
    assert (reasoning, content) == (message["reasoning"], message["content"])
    assert usage["completion_tokens"] == body["usage"]["completion_tokens"]
    # As in the vLLM transcripts, the streamed count only counts reasoning deltas.
    streamed = usage["completion_tokens_details"]["reasoning_tokens"]
    assert streamed == body["usage"]["completion_tokens_details"]["reasoning_tokens"] - 1


def test_one_event_per_token(servers):
    events = stream(servers["none"], max_tokens=30)
    token_events = [e for e in events[1:] if e["choices"]]
    assert len(token_events) == events[-1]["usage"]["completion_tokens"] == 30


def test_no_parser_keeps_the_think_block_in_content(servers):
    message = chat(servers["none"])["choices"][0]["message"]
    assert message["reasoning"] is None
    assert message["content"].startswith("<think>\n")
    assert "\n</think>\n\n" in message["content"]
    assert chat(servers["none"])["usage"]["completion_tokens_details"] is None


def test_enable_thinking_false_gives_only_an_answer(servers):
    body = chat(servers["qwen3"], **NO_THINKING)
    message = body["choices"][0]["message"]
    assert message["reasoning"] is None
    assert not message["content"].startswith("\n") and "simulat" in message["content"]
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    with_thinking = chat(servers["qwen3"])["usage"]["prompt_tokens"]
    assert body["usage"]["prompt_tokens"] == with_thinking + 4  # <think>\n\n</think>\n\n


def test_deepseek_parser_with_thinking_off_differs_between_stream_and_not(servers):
    # As recorded from vLLM 0.32: no </think> in the output puts everything in `reasoning`
    # (non-streamed), while the stream knows the prompt ended the thinking and sends content.
    message = chat(servers["deepseek_r1"], **NO_THINKING)["choices"][0]["message"]
    assert message["content"] is None and "simulat" in message["reasoning"]
    reasoning, content, usage = streamed_fields(stream(servers["deepseek_r1"], **NO_THINKING))
    assert reasoning == "" and "simulat" in content
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_soft_switches_last_one_wins(servers):
    no_think = [{"role": "user", "content": "/think hello /no_think"}]
    message = chat(servers["qwen3"], messages=no_think)["choices"][0]["message"]
    assert message["reasoning"] == "\n\n" and "simulat" in message["content"]
    think_again = [
        {"role": "system", "content": "Be brief. /no_think"},
        {"role": "user", "content": "hello /think"},
    ]
    message = chat(servers["qwen3"], messages=think_again)["choices"][0]["message"]
    assert len(message["reasoning"]) > 20


def test_max_tokens_cut_inside_thinking_leaves_content_null(servers):
    body = chat(servers["qwen3"], max_tokens=10)
    message = body["choices"][0]["message"]
    assert message["content"] is None and message["reasoning"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 10
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 10


def test_reasoning_field_name_is_configurable(servers):
    message = chat(servers["legacy"])["choices"][0]["message"]
    assert "reasoning" not in message and message["reasoning_content"]
    events = stream(servers["legacy"], max_tokens=5)
    assert "reasoning_content" in events[1]["choices"][0]["delta"]


def test_max_tokens_and_max_completion_tokens_are_exact(servers):
    for key in ("max_tokens", "max_completion_tokens"):
        for n in (1, 7, 50):
            body = chat(servers["qwen3"], **{key: n}, ignore_eos=True)
            assert body["usage"]["completion_tokens"] == n
            assert body["choices"][0]["finish_reason"] == "length"


def test_same_request_same_reply_and_a_shorter_reply_is_a_prefix(servers):
    server = servers["none"]
    first = chat(server, seed=11, temperature=0.7)["choices"][0]["message"]["content"]
    again = chat(server, seed=11, temperature=0.7)["choices"][0]["message"]["content"]
    other_seed = chat(server, seed=12, temperature=0.7)["choices"][0]["message"]["content"]
    cut = chat(server, seed=11, temperature=0.7, max_tokens=20)["choices"][0]["message"]["content"]
    assert first == again != other_seed
    assert first.startswith(cut)
    greedy = [chat(server, seed=s, temperature=0)["choices"][0]["message"]["content"] for s in (1, 2)]
    assert greedy[0] == greedy[1]


def test_lengths_vary_around_the_configured_means():
    with serve(profile="instant", think_tokens_mean=60, answer_tokens_mean=30) as server:
        lengths = [
            chat(server, messages=[{"role": "user", "content": f"question {i}"}])["usage"][
                "completion_tokens"
            ]
            for i in range(30)
        ]
    assert len(set(lengths)) > 10
    assert 60 < sum(lengths) / len(lengths) < 160


def test_chinese_prompt_gets_a_chinese_reply(servers):
    message = chat(servers["qwen3"], messages=CHINESE)["choices"][0]["message"]
    assert "模拟" in message["content"]
    assert "用户" in message["reasoning"]


def test_stop_string_ends_the_reply(servers):
    body = chat(servers["qwen3"], stop=["simulator"], **NO_THINKING)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "simulator"
    assert "simulator" not in choice["message"]["content"]


def test_aliases_and_served_model_name(servers):
    for name in ("Qwen/Qwen3-0.6B", "Qwen-0.6B", None):
        chosen = {"model": name} if name else {}
        assert chat(servers["qwen3"], max_tokens=2, **chosen)["model"] == "Qwen/Qwen3-0.6B"
    with serve(profile="instant", served_model_name=["qwen3", "my-alias"]) as server:
        ids = [m["id"] for m in httpx.get(server.base_url + "/models").json()["data"]]
        assert ids == ["qwen3", "my-alias"]
        assert chat(server, model="my-alias", max_tokens=2)["model"] == "qwen3"
        response = httpx.post(
            server.base_url + "/chat/completions",
            json={"model": "Qwen-0.6B", "messages": QUESTION},
        )
        assert response.status_code == 404
        assert "Valid aliases: qwen3, my-alias." in response.json()["error"]["message"]


def test_n_other_than_one_is_a_clear_400(servers):
    response = httpx.post(
        servers["qwen3"].base_url + "/chat/completions", json={"messages": QUESTION, "n": 2}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "n" and "n=2" in error["message"] and "n=1" in error["message"]


def test_oversized_body_gets_413(servers):
    huge = "x" * (9 * 1024 * 1024)
    response = httpx.post(
        servers["qwen3"].base_url + "/chat/completions",
        json={"messages": [{"role": "user", "content": huge}]},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413


def test_unknown_fields_are_accepted_and_ignored(servers):
    plain = chat(servers["qwen3"], seed=3, max_tokens=30)
    blog_style = chat(servers["qwen3"], seed=3, max_tokens=30, enable_thinking=False, return_reasoning=True)
    assert blog_style["choices"][0]["message"] == plain["choices"][0]["message"]


def test_coalesce_groups_tokens_per_chunk():
    with serve(profile="instant", reasoning_parser="none", coalesce=4) as server:
        events = stream(server, max_tokens=40, ignore_eos=True)
    token_events = [e for e in events[1:] if e["choices"]]
    assert events[-1]["usage"]["completion_tokens"] == 40
    assert 10 <= len(token_events) <= 12


PERSON_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "Person",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}


@pytest.mark.parametrize("parser", ["qwen3", "deepseek_r1", "none"])
def test_a_constrained_reply_thinks_first_only_behind_a_reasoning_parser(servers, parser):
    """vLLM holds a structured-output grammar back until ``</think>`` only when a reasoning parser is
    set (``vllm/v1/structured_output/__init__.py``: no reasoner, constrained from the first token): with
    no parser a thinking model cannot open ``<think>``, and the whole reply is the JSON."""
    message = chat(servers[parser], response_format=PERSON_FORMAT, max_tokens=600)["choices"][0]["message"]
    reasoning = message.get("reasoning")
    if parser == "none":
        assert reasoning is None and set(orjson.loads(message["content"])) == {"name", "age"}
    else:
        assert reasoning and set(orjson.loads(message["content"])) == {"name", "age"}
    streamed_reasoning, streamed_content, _ = streamed_fields(
        stream(servers[parser], response_format=PERSON_FORMAT, max_tokens=600)
    )
    assert (streamed_reasoning or None, streamed_content) == (reasoning, message["content"])
