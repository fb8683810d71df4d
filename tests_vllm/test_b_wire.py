"""Set-up B (--reasoning-parser deepseek_r1, no tool flags): the deepseek-r1-parser-* recordings, and
the noflags-qwen3-* ones (a server without --enable-auto-tool-choice --tool-call-parser hermes)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field
from wire import assert_conforms, replay, transcripts

from helpers.chat import make_chat_model
from helpers.endpoint import Endpoint
from kit_tools import vllm_cpu

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("name", transcripts("deepseek-r1-parser-") + transcripts("noflags-qwen3-"))
def test_recording_replayed_live(server_b, pool, name):
    response, transcript = replay(server_b, name, pool.model)
    assert_conforms(response, transcript)


def test_tool_flags_missing_says_which_flags(server_b, pool):
    response, _ = replay(server_b, "noflags-qwen3-tools-auto-error", pool.model)
    assert response.status_code == 400
    assert "--enable-auto-tool-choice" in response.json()["error"]["message"]


class Review(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    stars: int = Field(ge=1, le=5)
    spam: bool


def test_the_kits_structured_output_behind_deepseek_r1_with_thinking_off(server_b):
    """With thinking off, deepseek_r1 files the constrained JSON as reasoning (content null); the kit's
    chat model still returns the parsed object (LangChain alone finds no 'parsed' field)."""
    endpoint = Endpoint(server_b.base_url, vllm_cpu.SERVED_NAMES[0])
    model = make_chat_model(thinking=False, endpoint=endpoint, max_tokens=2000, seed=5)
    reply = model.with_structured_output(Review, include_raw=True).invoke("评论: 太好用了, 五星! 输出 JSON。")
    raw = reply["raw"]
    assert reply["parsing_error"] is None and isinstance(reply["parsed"], Review), raw
    assert Review.model_validate_json(raw.content) == reply["parsed"]
