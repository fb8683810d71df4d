"""Set-up C (no reasoning parser, --api-key sk-test-123): the no-parser-* recordings, the key errors,
and the thinking left inline in `content`."""

from __future__ import annotations

import pytest
from support import load_transcript
from wire import assert_conforms, replay, send, transcripts

pytestmark = pytest.mark.timeout(900)

CHAT = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "你是谁?"}], "max_tokens": 8}
KEY_ERRORS = ("no-parser-error-missing-api-key", "no-parser-error-wrong-api-key")


@pytest.mark.parametrize("name", [name for name in transcripts("no-parser-") if name not in KEY_ERRORS])
def test_recording_replayed_live(server_c, pool, name):
    response, transcript = replay(server_c, name, pool.model)
    assert_conforms(response, transcript)


@pytest.mark.parametrize(("name", "key"), [(KEY_ERRORS[0], None), (KEY_ERRORS[1], "sk-wrong")])
def test_key_errors(server_c, name, key):
    response = send(server_c, "POST", "/v1/chat/completions", CHAT, api_key=key)
    transcript = load_transcript(name)
    assert response.status_code == transcript.status == 401
    assert response.json() == transcript.json() == {"error": "Unauthorized"}


def test_without_parser_the_thinking_stays_in_content(server_c, pool):
    response, _ = replay(server_c, "no-parser-chat-thinking", pool.model)
    message = response.json()["choices"][0]["message"]
    assert message["reasoning"] is None
    assert "</think>" in message["content"]  # logit_bias makes the model write it; not special, so kept
