"""The simulator's prefix cache, KV budget and their metrics, against vLLM 0.32's recordings
(tests/fixtures/vllm-0.32/prefix-cache-*: `--enable-prompt-tokens-details`, block size 128)."""

from __future__ import annotations

import asyncio
import re

import httpx
import orjson
import pytest
from support import load_transcript

from helpers.sim import serve
from helpers.sim.config import SimConfig
from helpers.sim.tokens import prompt_token_ids

CACHE_METRICS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prompt_tokens_cached_total",
    "vllm:num_preemptions_total",
    "vllm:kv_cache_usage_perc",
)


def _metrics(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    found = {}
    for name in CACHE_METRICS:
        match = re.search(rf"^{re.escape(name)}{{[^}}]*}} (\S+)$", text, re.M)
        assert match, name
        found[name] = float(match.group(1))
    return found


def _usage_of_stream(text: str) -> dict:
    events = [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    return events[-1]["usage"]


def _shared_prefix(a: list, b: list) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


@pytest.fixture(scope="module")
def recorded_server():
    # as the recorded server: no reasoning parser, prompt-token details on, CPU block size
    with (
        serve(
            profile="instant",
            reasoning_parser=None,
            block_size=128,
            enable_prompt_tokens_details=True,
            max_model_len=4096,
        ) as server,
        httpx.Client(base_url=server.root_url, timeout=30) as client,
    ):
        yield client


def test_a_second_request_sharing_the_system_prompt_reports_cached_tokens_in_whole_blocks(recorded_server):
    client = recorded_server
    cold, warm = load_transcript("prefix-cache-cold"), load_transcript("prefix-cache-warm")
    before = _metrics(client)
    first = client.post("/v1/chat/completions", json=cold.request).json()
    second = client.post("/v1/chat/completions", json=warm.request).json()
    recorded_first, recorded_second = cold.json()["usage"], warm.json()["usage"]
    assert list(first["usage"]) == list(recorded_first)
    assert list(first["usage"]["prompt_tokens_details"]) == list(recorded_first["prompt_tokens_details"])
    details = first["usage"]["prompt_tokens_details"]
    assert details["cached_tokens"] == 0 and details["multimodal_tokens"] is None
    assert details["created_cache_tokens"] == first["usage"]["prompt_tokens"] // 128 * 128
    shared = _shared_prefix(
        prompt_token_ids(cold.request["messages"], False), prompt_token_ids(warm.request["messages"], False)
    )
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == shared // 128 * 128 and cached > 0  # whole blocks of the shared system prompt
    assert recorded_second["prompt_tokens_details"]["cached_tokens"] % 128 == 0
    after = _metrics(client)
    prompt_sum = first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"] == prompt_sum
    assert after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"] == cached
    assert after["vllm:prompt_tokens_cached_total"] - before["vllm:prompt_tokens_cached_total"] == cached


def test_the_streamed_usage_chunk_carries_the_details_as_recorded(recorded_server):
    client = recorded_server
    recorded = load_transcript("prefix-cache-warm-stream")
    client.post("/v1/chat/completions", json={**recorded.request, "stream": False})
    response = client.post("/v1/chat/completions", json=recorded.request)
    ours, theirs = _usage_of_stream(response.text), _usage_of_stream(recorded.body.decode())
    assert list(ours) == list(theirs)
    assert list(ours["prompt_tokens_details"]) == list(theirs["prompt_tokens_details"])
    assert ours["prompt_tokens_details"]["cached_tokens"] % 128 == 0
    assert ours["prompt_tokens_details"]["cached_tokens"] > 0


def test_metric_names_and_labels_match_the_recording(recorded_server):
    text = recorded_server.get("/metrics").text
    recorded = load_transcript("qwen3-parser-metrics").body.decode()
    for name in (*CACHE_METRICS, "vllm:prompt_tokens_cached_by_source_total", "vllm:cache_config_info"):
        ours = {_label_names(line) for line in text.splitlines() if line.startswith(name + "{")}
        theirs = {_label_names(line) for line in recorded.splitlines() if line.startswith(name + "{")}
        assert ours == theirs, name
    assert 'block_size="128"' in text and 'enable_prefix_caching="True"' in text


def _label_names(line: str) -> tuple:
    return tuple(sorted(part.split("=")[0] for part in line.split("{", 1)[1].split("}")[0].split(",")))


def test_without_prefix_caching_nothing_is_cached_or_counted():
    cold, warm = load_transcript("prefix-cache-cold"), load_transcript("prefix-cache-warm")
    with (
        serve(
            profile="instant",
            block_size=128,
            enable_prompt_tokens_details=True,
            enable_prefix_caching=False,
            max_model_len=4096,
        ) as server,
        httpx.Client(base_url=server.root_url, timeout=30) as client,
    ):
        usages = [client.post("/v1/chat/completions", json=t.request).json()["usage"] for t in (cold, warm)]
        after = _metrics(client)
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 0]
    assert after["vllm:prefix_cache_queries_total"] == 0 and after["vllm:prefix_cache_hits_total"] == 0


def test_without_prompt_tokens_details_the_usage_has_none():
    warm = load_transcript("prefix-cache-warm")
    with (
        serve(profile="instant", max_model_len=4096) as server,
        httpx.Client(base_url=server.root_url, timeout=30) as client,
    ):
        for _ in range(2):
            usage = client.post("/v1/chat/completions", json=warm.request).json()["usage"]
        metrics = _metrics(client)
    assert usage["prompt_tokens_details"] is None
    assert metrics["vllm:prefix_cache_hits_total"] > 0  # the cache works all the same


def test_prefix_caching_is_on_by_default_and_the_cli_turns_it_off():
    assert SimConfig().enable_prefix_caching
    assert "--no-enable-prefix-caching" in SimConfig(enable_prefix_caching=False).to_args()
    from helpers.sim.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        ["--no-enable-prefix-caching", "--num-gpu-blocks-override", "40", "--max-model-len", "512"]
    )
    config = config_from_args(args)
    assert not config.enable_prefix_caching and config.num_gpu_blocks() == 40


def test_a_max_model_len_the_kv_cache_cannot_hold_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="lower max_model_len"):
        SimConfig(num_gpu_blocks_override=20)


async def _long_request(client: httpx.AsyncClient, index: int, stream: bool) -> dict:
    body = {
        "messages": [{"role": "user", "content": f"request {index}: write a long story"}],
        "max_tokens": 300,
        "ignore_eos": True,
        "stream": stream,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
        response = await client.post("/v1/chat/completions", json=body)
        return _usage_of_stream(response.text)
    return (await client.post("/v1/chat/completions", json=body)).json()["usage"]


def test_many_long_sequences_on_a_small_kv_budget_are_preempted_and_all_finish():
    # 64 usable blocks of 16 = 1,024 tokens; 12 sequences of ~320 tokens need 3,840.
    with serve(profile="l4", time_scale=20, num_gpu_blocks_override=65, max_model_len=1024) as server:

        async def run() -> list[dict]:
            async with httpx.AsyncClient(base_url=server.root_url, timeout=120) as client:
                return await asyncio.gather(*(_long_request(client, i, i % 2 == 0) for i in range(12)))

        usages = asyncio.run(run())
        with httpx.Client(base_url=server.root_url, timeout=30) as client:
            metrics = _metrics(client)
            text = client.get("/metrics").text
    assert [u["completion_tokens"] for u in usages] == [300] * 12
    assert metrics["vllm:num_preemptions_total"] > 0
    count = re.search(r"^vllm:request_num_preemptions_count{[^}]*} (\S+)$", text, re.M)
    total = re.search(r"^vllm:request_num_preemptions_sum{[^}]*} (\S+)$", text, re.M)
    assert float(count.group(1)) == 12 and float(total.group(1)) == metrics["vllm:num_preemptions_total"]
    assert metrics["vllm:kv_cache_usage_perc"] == 0.0  # all finished: every block is free again
