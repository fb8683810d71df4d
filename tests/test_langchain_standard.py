"""LangChain's standard integration tests (`langchain-tests`) for the kit's chat model, against a
simulator started with vLLM's tool flags (`--enable-auto-tool-choice --tool-call-parser hermes`).

Declared supported: tool calling, tool choice, structured output (all methods) and JSON mode;
declared unsupported: image, PDF, audio and video inputs (Qwen3-0.6B is a text model).
The model-override tests switch between the two names the simulator serves (as a vLLM server
with `--served-model-name Qwen/Qwen3-0.6B Qwen-0.6B` would); vLLM answers with the first name.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from helpers.chat import ReasoningChatOpenAI, make_chat_model
from helpers.endpoint import Endpoint
from helpers.sim import serve

pytestmark = pytest.mark.server

_server: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def simulator():
    with serve(
        profile="instant", enable_auto_tool_choice=True, tool_call_parser="hermes", think_tokens_mean=32
    ) as server:
        _server["base_url"] = server.base_url
        yield server
    _server.clear()


class TestKitChatModel(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ReasoningChatOpenAI]:
        return ReasoningChatOpenAI

    @property
    def chat_model_params(self) -> dict:
        # The arguments make_chat_model passes, so the standard tests build the same model.
        model = make_chat_model(endpoint=Endpoint(_server["base_url"], "Qwen-0.6B"), max_tokens=1024)
        return {
            "model": model.model_name,
            "base_url": model.openai_api_base,
            "api_key": model.openai_api_key,
            "temperature": model.temperature,
            "top_p": model.top_p,
            "max_tokens": model.max_tokens,
            "stream_usage": True,
        }

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def model_override_value(self) -> str:
        return "Qwen/Qwen3-0.6B"
