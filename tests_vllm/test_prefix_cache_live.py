"""Prefix caching and the KV budget on a real vLLM (CPU build, tiny Qwen3, block size 128), and the
same requests on the simulator given the same flags: which requests hit, cached tokens in whole
blocks, the counters, and preemption once the blocks run out.

One server of its own (`--enable-prompt-tokens-details --num-gpu-blocks-override 12
--max-model-len 1024`: 11 usable blocks of 128 = 1,408 tokens); the set-up pool's server is stopped
first, so at most one vLLM runs. What matched and what did not is printed (`-s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator

import httpx
import pytest

from helpers.sim import serve
from kit_tools import vllm_cpu

pytestmark = pytest.mark.timeout(900)

BLOCK = 128
FLAGS = ["--enable-prompt-tokens-details", "--num-gpu-blocks-override", "12", "--enforce-eager"]
MAX_MODEL_LEN = 1024
SYSTEM_A = "You are the agent of the prefix-cache check. " + " ".join(
    f"rule {i}: answer briefly and cite the manual." for i in range(12)
)
SYSTEM_B = "You are another agent entirely, with different rules. " + " ".join(
    f"policy {i}: never guess." for i in range(16)
)
COUNTERS = ("prefix_cache_queries", "prefix_cache_hits", "prompt_tokens_cached", "num_preemptions")


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest) -> Iterator[str]:
    with contextlib.suppress(pytest.FixtureLookupError):  # the set-up servers' pool (conftest.py)
        request.getfixturevalue("pool").stop()
    model = vllm_cpu.ensure_tiny_model(quiet=True)
    with vllm_cpu.running_server(model, FLAGS, max_model_len=MAX_MODEL_LEN) as server:
        yield server.root_url


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with serve(
        profile="instant",
        block_size=BLOCK,
        num_gpu_blocks_override=12,
        max_model_len=MAX_MODEL_LEN,
        enable_prompt_tokens_details=True,
    ) as server:
        yield server.root_url


def _chat(root: str, system: str, question: str, max_tokens: int = 4) -> dict:
    body = {
        "model": "Qwen/Qwen3-0.6B",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    response = httpx.post(f"{root}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def _counters(root: str) -> dict[str, float]:
    text = httpx.get(f"{root}/metrics", timeout=30).text
    found = {}
    for name in COUNTERS:
        match = re.search(rf"^vllm:{name}_total{{[^}}]*}} (\S+)$", text, re.M)
        assert match, name
        found[name] = float(match.group(1))
    return found


def _hits(root: str) -> tuple[list[tuple[int, int]], dict[str, float], dict[str, float]]:
    before = _counters(root)
    usages = [
        _chat(root, SYSTEM_A, "what is a block?"),
        _chat(root, SYSTEM_A, "and what is a prefix?"),
        _chat(root, SYSTEM_B, "what is a block?"),
        _chat(root, SYSTEM_A, "what is a block?"),
    ]
    after = _counters(root)
    pairs = [(u["prompt_tokens"], u["prompt_tokens_details"]["cached_tokens"]) for u in usages]
    return pairs, before, after


@pytest.mark.parametrize("where", ["real", "sim"])
def test_which_requests_hit_and_how_much(where: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(where)
    pairs, before, after = _hits(root)
    print(f"\n{where}: (prompt_tokens, cached_tokens) per request: {pairs}")
    cached = [c for _, c in pairs]
    assert all(c % BLOCK == 0 and c < p for p, c in pairs)  # whole blocks, never the last token
    assert cached[0] == 0 and cached[2] == 0  # first use of each system prompt
    assert cached[1] > 0 and cached[3] > 0  # the same system prompt again
    assert pairs[3][0] - cached[3] < BLOCK  # the identical request: all but its partial last block
    grown = {name: after[name] - before[name] for name in COUNTERS}
    assert grown["prefix_cache_queries"] == sum(p for p, _ in pairs)
    assert grown["prefix_cache_hits"] == grown["prompt_tokens_cached"] == sum(cached)


async def _long_requests(root: str, count: int, max_tokens: int) -> list[dict]:
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(index: int) -> dict:
            body = {
                "model": "Qwen/Qwen3-0.6B",
                "messages": [{"role": "user", "content": f"story {index}: " + "tell me more. " * 20}],
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "chat_template_kwargs": {"enable_thinking": False},
            }
            response = await client.post(f"{root}/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response.json()["usage"]

        return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.parametrize("where", ["real", "sim"])
def test_long_sequences_beyond_the_kv_budget_are_preempted_and_all_finish(
    where: str, request: pytest.FixtureRequest
) -> None:
    root = request.getfixturevalue(where)
    one = asyncio.run(_long_requests(root, 1, 8))[0]  # fits alone: no preemption
    before = _counters(root)
    assert before["num_preemptions"] == _counters(root)["num_preemptions"]
    usages = asyncio.run(_long_requests(root, 6, 400))  # 6 x ~560 tokens > 1,408
    after = _counters(root)
    preempted = after["num_preemptions"] - before["num_preemptions"]
    print(f"\n{where}: prompt {one['prompt_tokens']} tokens; 6 x 400 output: {preempted:.0f} preemptions")
    assert [u["completion_tokens"] for u in usages] == [400] * 6
    assert preempted > 0
