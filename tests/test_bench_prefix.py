"""helpers.bench.prefix: shared-prefix workloads (vllm bench serve's prefix repetition, AIPerf's
multi-turn conversations) against the simulator, prefix caching on and off side by side."""

from __future__ import annotations

import pytest

from helpers.bench.cli import main
from helpers.bench.prefix import MultiTurn, PrefixRepetition, compare_prefix_caching, run_workload
from helpers.sim import serve
from helpers.sim.tokens import count_text_tokens


def test_prefix_repetition_prompts_share_num_prefixes_prefixes_of_prefix_len_tokens():
    workload = PrefixRepetition(num_prefixes=3, prefix_len=200, suffix_len=20, num_prompts=7)
    prompts = [c.questions[0] for c in workload.conversations()]
    assert len(prompts) == 7 and all(c.system is None for c in workload.conversations())
    prefixes = [p.split("\nRequest")[0] for p in prompts]
    assert len(set(prefixes)) == 3 and prefixes[0] == prefixes[3] == prefixes[6]
    assert all(abs(count_text_tokens(p) - 200) <= 2 for p in prefixes)
    assert len(set(prompts)) == 7
    assert [c.questions for c in workload.conversations()] == [c.questions for c in workload.conversations()]


def test_multi_turn_conversations_share_the_system_prompt():
    conversations = MultiTurn(num_conversations=3, turns=4, system_len=300).conversations()
    assert (
        len({c.system for c in conversations}) == 1
        and abs(count_text_tokens(conversations[0].system) - 300) <= 5
    )
    assert all(len(c.questions) == 4 for c in conversations)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="num_prompts"):
        PrefixRepetition(num_prompts=0).conversations()


def test_multi_turn_run_hits_the_cache_from_the_second_turn_and_counts_as_vllm():
    workload = MultiTurn(num_conversations=3, turns=3, system_len=200, user_len=20, output_len=8)
    with serve(profile="instant", enable_prompt_tokens_details=True) as server:
        run = run_workload(server.base_url, server.model, workload, concurrency=3)
    assert all(r.ok for r in run.records) and len(run.records) == 9
    assert all(r.output_tokens == 8 for r in run.records)
    later = [r for r in run.records if r.turn > 0]
    # each later turn finds at least the previous prompt's full blocks (the history grows)
    assert all(r.cached_tokens >= 192 and r.cached_tokens % 16 == 0 for r in later)
    assert run.server["prefix_cache_queries"] == sum(r.prompt_tokens for r in run.records)
    assert run.server["prefix_cache_hits"] == sum(r.cached_tokens for r in run.records)


def test_compare_prefix_caching_gives_one_row_on_and_one_off():
    workload = PrefixRepetition(num_prefixes=2, prefix_len=256, suffix_len=16, output_len=4, num_prompts=8)
    frame = compare_prefix_caching(workload, profile="instant", concurrency=2)
    assert list(frame.index) == ["on", "off"] and (frame["failed"] == 0).all()
    assert frame.loc["off", "cached_tokens"] == 0 and frame.loc["off", "hit_rate"] == 0
    assert frame.loc["on", "cached_tokens"] >= 6 * 256 - 16 * 6  # all but the first use of each prefix
    assert 0 < frame.loc["on", "hit_rate"] < 1


def test_the_cli_runs_a_workload_on_the_simulator_with_caching_on_and_off(capsys, tmp_path):
    code = main(
        [
            "--sim", "instant", "--workload", "prefix-repetition", "--num-prefixes", "2",
            "--prefix-len", "128", "--suffix-len", "8", "--max-tokens", "4", "--num-prompts", "6",
            "--concurrency", "2", "--results-dir", str(tmp_path), "--no-progress",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "prefix_caching" in out and "on" in out and "off" in out and "hit_rate" in out
