"""Interrupting a batch in a real Jupyter kernel (``km.interrupt_kernel()``, the stop button).

``task.cancel()`` on amap is covered by ``tests/test_concurrency.py``.
"""

from __future__ import annotations

from benchmarks.bench_resilience import cancel_in_kernel


def test_kernel_interrupt_returns_within_a_second_and_leaves_nothing_behind() -> None:
    results = cancel_in_kernel(32, cancel_after=4, concurrency=4)
    assert len(results) == 2  # `await amap(...)` and `map_prompts(...)`
    for result in results:
        assert result.returned_s < 1.0, result.report()
        assert result.error_type.startswith("BatchCancelled"), result.report()
        assert result.in_flight_sockets >= 1 and result.open_sockets == 0, result.report()
        assert result.pending_tasks == 0, result.report()
        assert result.kept == result.finished >= 4, result.report()
