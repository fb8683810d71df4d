"""The notebooks whose lessons depend on the parser or the key (00 connects and diagnoses with
QWEN_API_KEY, 03 finds the thinking inline in `content`), against set-up C (no parser, --api-key)."""

from __future__ import annotations

import pytest

from notebooks import run_against

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", ["00_setup", "03_streaming_thinking"])
def test_notebook_runs_against_setup_c(server_c, tmp_path, name):
    assert run_against(name, server_c, tmp_path) == []
