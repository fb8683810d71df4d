"""A short soak through one model (the 10,000-request one is in benchmarks/bench_resilience.py)."""

from __future__ import annotations

import pytest

from benchmarks.resilience_scenarios import soak

pytestmark = pytest.mark.server


def test_many_requests_leave_no_descriptor_warning_or_memory_behind() -> None:
    result = soak(400, concurrency=64, warmup=50)
    assert result.ok == result.requests, result.report()
    assert result.fds_after == result.fds_before, result.report()
    assert result.warnings == [], result.report()
    assert result.rss_growth_mb < 50, result.report()
