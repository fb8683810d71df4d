"""The simulator's KV cache and its scheduler, as vLLM V1's: blocks, prefix caching, preemption."""

from __future__ import annotations

import pytest

from helpers.sim.kv_cache import QWEN3_06B_KV_BYTES_PER_TOKEN, KVCache
from helpers.sim.scheduler import Scheduler, Sequence


def _tokens(prefix: str, shared: int, unique: int, tag: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(shared)] + [f"{tag}{i}" for i in range(unique)]


def _run(scheduler: Scheduler, limit: int = 10_000) -> list:
    """Step until idle; every step's plan."""
    steps = []
    while scheduler.has_work():
        step = scheduler.schedule()
        scheduler.complete(step)
        steps.append(step)
        assert len(steps) < limit, "the scheduler does not make progress"
    return steps


def test_kv_bytes_per_token_of_qwen3_06b():
    assert QWEN3_06B_KV_BYTES_PER_TOKEN == 114_688


def test_a_shared_prefix_is_found_in_whole_blocks():
    kv = KVCache(num_blocks=64, block_size=16)
    scheduler = Scheduler(8, 2048, kv)
    first = Sequence(50, 2, _tokens("sys", 40, 10 + 2, "a"))
    scheduler.add(first)
    _run(scheduler)
    second = Sequence(50, 2, _tokens("sys", 40, 10 + 2, "b"))
    scheduler.add(second)
    step = scheduler.schedule()
    assert first.num_cached == 0 and second.num_cached == 32  # 2 full blocks of the 40 shared tokens
    assert step.prefill == [(second, 18)] and step.prefix_queries == 50 and step.prefix_hits == 32


def test_the_last_prompt_token_is_always_computed():
    kv = KVCache(num_blocks=64, block_size=16)
    scheduler = Scheduler(8, 2048, kv)
    tokens = _tokens("t", 32, 1, "out")
    scheduler.add(Sequence(32, 1, tokens))
    _run(scheduler)
    again = Sequence(32, 1, list(tokens))
    scheduler.add(again)
    scheduler.schedule()
    assert again.num_cached == 16


def test_without_prefix_caching_nothing_is_cached_or_counted():
    kv = KVCache(num_blocks=64, block_size=16, enable_prefix_caching=False)
    scheduler = Scheduler(8, 2048, kv)
    for tag in "ab":
        seq = Sequence(50, 2, _tokens("sys", 40, 12, tag))
        scheduler.add(seq)
        steps = _run(scheduler)
        assert seq.num_cached == 0
        assert sum(s.prefix_queries for s in steps) == 0


def test_freed_blocks_stay_cached_until_reused_least_recently_freed_first():
    kv = KVCache(num_blocks=5, block_size=4)  # 4 usable blocks
    scheduler = Scheduler(8, 2048, kv)
    a = Sequence(8, 1, _tokens("a", 8, 1, "x"))  # 2 full blocks + 1 for its output token
    scheduler.add(a)
    _run(scheduler)
    assert kv.num_free_blocks == 4 and kv.usage() == 0.0
    b = Sequence(8, 1, _tokens("b", 8, 1, "y"))  # takes the 2 never-used blocks and a's 3rd...
    scheduler.add(b)
    _run(scheduler)
    again = Sequence(8, 1, _tokens("a", 8, 1, "z"))
    scheduler.add(again)
    scheduler.schedule()
    assert again.num_cached == 4  # a's first block survived, its second was evicted for b


def test_kv_usage_counts_held_blocks_of_the_usable_ones():
    kv = KVCache(num_blocks=11, block_size=16)
    scheduler = Scheduler(8, 2048, kv)
    scheduler.add(Sequence(40, 5, None))
    scheduler.schedule()
    assert kv.usage() == pytest.approx(3 / 10)


def test_when_blocks_run_out_the_latest_admitted_is_preempted_and_all_finish():
    kv = KVCache(num_blocks=1 + 12, block_size=16)  # 192 token slots
    scheduler = Scheduler(8, 2048, kv)
    seqs = [Sequence(40, 60, _tokens(f"p{i}-", 40, 60, "o")) for i in range(3)]  # 100 tokens each
    for seq in seqs:
        scheduler.add(seq)
    steps = _run(scheduler)
    preempted = [seq for step in steps for seq in step.preempted]
    assert preempted and preempted[0] is seqs[2]  # the most recently admitted goes first
    assert all(seq.generated == 60 for seq in seqs)
    assert sum(seq.num_preemptions for seq in seqs) == len(preempted)
    assert kv.num_free_blocks == 12  # nothing leaked
    # a preempted sequence recomputes its prompt and the tokens it had generated
    recompute = [chunk for step in steps for seq, chunk in step.prefill if seq is seqs[2]]
    assert len(recompute) >= 2 and recompute[-1] > 40 - seqs[2].num_cached


def test_a_preempted_sequence_goes_back_to_the_front_of_the_queue():
    kv = KVCache(num_blocks=1 + 6, block_size=16)
    scheduler = Scheduler(8, 2048, kv)
    running = [Sequence(40, 40, None) for _ in range(2)]  # 3 blocks each: the cache is full
    for seq in running:
        scheduler.add(seq)
    scheduler.complete(scheduler.schedule())
    late = Sequence(10, 5, None)
    scheduler.add(late)
    step = scheduler.schedule()
    assert step.size == 2 and list(scheduler.waiting) == [late]  # no block for it
    while not step.preempted:
        scheduler.complete(step)
        step = scheduler.schedule()
    assert step.preempted == [running[1]] and step.decode == [running[0]]
    assert list(scheduler.waiting) == [running[1], late]
    assert running[1].computed == 0 and running[1].generated == 9  # 48 tokens computed: block 4 needed


def test_aborting_frees_the_blocks():
    kv = KVCache(num_blocks=11, block_size=16)
    scheduler = Scheduler(8, 2048, kv)
    seq = Sequence(100, 5, None)
    scheduler.add(seq)
    scheduler.schedule()
    scheduler.abort(seq)
    assert kv.num_free_blocks == 10 and not scheduler.has_work()


def test_prompt_token_ids_are_the_tokens_usage_counts():
    from support import FIXTURES, load_transcript

    from helpers.sim.tokens import count_prompt_tokens, prompt_token_ids

    checked = 0
    for path in sorted(FIXTURES.glob("*.http")):
        request = load_transcript(path.stem).request
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            continue
        thinking = (request.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        tools = request.get("tools")
        ids = prompt_token_ids(request["messages"], thinking, tools)
        assert len(ids) == count_prompt_tokens(request["messages"], thinking, tools), path.stem
        checked += 1
    assert checked > 50


def test_prompts_sharing_a_system_prompt_share_their_first_tokens():
    from helpers.sim.tokens import prompt_token_ids

    system = {"role": "system", "content": "You are a careful assistant. " * 20}
    a = prompt_token_ids([system, {"role": "user", "content": "北京天气?"}])
    b = prompt_token_ids([system, {"role": "user", "content": "what is 2+2?"}])
    assert a[:100] == b[:100] and a != b


@pytest.mark.parametrize("name", sorted(__import__("helpers.sim.profiles", fromlist=["PROFILES"]).PROFILES))
def test_every_profile_sizes_a_kv_cache(name):
    from helpers.sim import predict
    from helpers.sim.config import SimConfig

    assert SimConfig(profile=name, max_model_len=4096).num_gpu_blocks() > 4096 // 16
    assert predict(name, 2, 64, 8, rounds=1).kv_cache_tokens > 4096
