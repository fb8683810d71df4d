"""The server dies half-way through a batch and comes back; a cancelled batch resumes from its
checkpoint without re-sending finished prompts (counted by the server's own /metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.resilience_scenarios import checkpoint_resume, server_gone

pytestmark = pytest.mark.server


def test_server_killed_mid_batch_without_retries_in_flight_items_fail_clearly() -> None:
    result = server_gone(40, retries=0, concurrency=8)
    assert result.kept and result.lost == 0 and result.order_kept, result.report()
    assert result.finished_before_kill >= 20
    assert result.failed_types, result.report()
    assert all(kind.startswith("OpenAIConnectionError <- ") for kind in result.failed_types), result.report()
    assert "Connection error. (caused by " in result.failure_example


def test_server_killed_and_restarted_with_retries_in_flight_items_are_retried() -> None:
    result = server_gone(40, retries=3, concurrency=8)
    assert result.kept and result.lost == 0 and result.order_kept, result.report()
    assert result.retried_types and set(result.retried_types) == {"OpenAIConnectionError"}
    assert all(kind.startswith("OpenAIConnectionError") for kind in result.failed_types)
    after_kill = result.prompts - result.finished_before_kill
    assert result.ok_first_try + result.ok_after_retry + sum(result.failed_types.values()) == after_kill


def test_a_cancelled_batch_resumes_sending_only_what_has_no_successful_outcome(tmp_path: Path) -> None:
    result = checkpoint_resume(40, path=tmp_path / "run.jsonl", concurrency=8)
    assert result.sent_second_run == result.expected_second_run, result.report()
    assert result.from_checkpoint == result.prompts - result.expected_second_run >= 20
    assert result.all_ok
    growing = result.lines_while_running
    assert any(0 < lines < growing[-1] for lines in growing), result.report()  # written as they finish
