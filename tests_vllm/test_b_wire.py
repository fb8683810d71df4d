"""Set-up B (--reasoning-parser deepseek_r1, no tool flags): the deepseek-r1-parser-* recordings, and
the noflags-qwen3-* ones (a server without --enable-auto-tool-choice --tool-call-parser hermes)."""

from __future__ import annotations

import pytest
from wire import assert_conforms, replay, transcripts

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", transcripts("deepseek-r1-parser-") + transcripts("noflags-qwen3-"))
def test_recording_replayed_live(server_b, pool, name):
    response, transcript = replay(server_b, name, pool.model)
    assert_conforms(response, transcript)


def test_tool_flags_missing_says_which_flags(server_b, pool):
    response, _ = replay(server_b, "noflags-qwen3-tools-auto-error", pool.model)
    assert response.status_code == 400
    assert "--enable-auto-tool-choice" in response.json()["error"]["message"]
