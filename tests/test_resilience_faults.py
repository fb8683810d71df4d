"""Fault matrix, small: amap against the simulator with 20% failing requests plus latency spikes.

The full 1,000-prompt matrix is ``python -m benchmarks.bench_resilience --only faults``;
``tests/test_concurrency.py`` covers 500/429/cuts without spikes. Here every failure must name the
injected fault that caused it, and a spike longer than the per-request timeout must surface as a
``RequestTimeout`` (retried when retries are on).
"""

from __future__ import annotations

import pytest

from benchmarks.resilience_scenarios import REFUSALS, fault_matrix

pytestmark = pytest.mark.server


def test_with_retries_nothing_is_lost_and_almost_everything_succeeds() -> None:
    result = fault_matrix(80, retries=3, stream=False, concurrency=16, timeout_s=3.0, spike_s=4.0)
    assert result.lost == 0 and result.order_kept, result.report()
    assert result.ok_share >= 0.95, result.report()
    assert result.failures_without_cause == 0, result.report()
    assert result.attempts == result.server_requests > result.prompts, result.report()
    assert sum(result.faults.values()) > 0


def test_streamed_with_retries_off_every_fault_is_one_per_item_error_naming_it() -> None:
    result = fault_matrix(80, retries=0, stream=True, concurrency=8, timeout_s=3.0, spike_s=4.0)
    assert result.lost == 0 and result.order_kept, result.report()
    assert result.attempts == result.server_requests == result.prompts, result.report()
    assert result.failures_without_cause == 0, result.report()
    for kind in REFUSALS:  # each refusal is exactly one failed prompt
        assert result.failure_causes[kind] == result.faults[kind], result.report()
    # a spiked request that also drew a cut is counted under both kinds by the server
    assert result.failure_causes["disconnect"] <= result.faults["disconnect"], result.report()
    assert result.failure_causes["timeout"] >= 1  # the spikes (4 s) outlast the 3 s timeout
    failed = result.prompts - result.ok
    assert failed == sum(result.failure_causes.values()) > 0
