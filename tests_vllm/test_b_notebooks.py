"""The notebooks whose lessons depend on the reasoning parser (00 setup, 03 streaming and thinking),
against set-up B (--reasoning-parser deepseek_r1)."""

from __future__ import annotations

import pytest

from notebooks import run_against

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", ["00_setup", "03_streaming_thinking"])
def test_notebook_runs_against_setup_b(server_b, tmp_path, name):
    assert run_against(name, server_b, tmp_path) == []
