"""The client's public face: ``from helpers import ...``, what importing it loads, the simulator as a
plug-in, reasoning in LangChain's standard content blocks, a cut structured reply as ``Truncated``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from pydantic import BaseModel
from support import replayed_model

import helpers
from helpers.replies import Truncated

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "helpers.sim",
    "helpers.bench",
    "numpy",
    "pandas",
    "matplotlib",
    "starlette",
    "uvicorn",
    "jsonschema",
    "ray",
)
CLIENT_MODULES = (
    "helpers.chat",
    "helpers.concurrency",
    "helpers.endpoint",
    "helpers.diagnosis",
    "helpers.streaming",
    "helpers.loop",
    "helpers.retry",
    "helpers.transport",
)


def python(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**_env(), **env},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("QWEN_BASE_URL", "OPENAI_BASE_URL"))}


def test_the_public_api_is_one_list_and_every_name_resolves() -> None:
    assert len(helpers.__all__) == len(set(helpers.__all__)) >= 15
    for name in helpers.__all__:
        assert getattr(helpers, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = helpers.nothing_here


def test_importing_helpers_and_the_client_loads_no_simulator_benchmark_or_heavy_package() -> None:
    code = (
        "import sys, json, helpers\n"
        "before = sorted(m for m in sys.modules if m.startswith('helpers.'))\n"
        "from helpers import make_chat_model, amap, run, map_prompts, diagnose, show_stream\n"
        f"import {', '.join(CLIENT_MODULES)}\n"
        "print(json.dumps({'before': before, 'loaded': sorted(sys.modules)}))"
    )
    seen = json.loads(python(code))
    assert seen["before"] == []  # `import helpers` alone imports none of its modules
    heavy = [m for m in seen["loaded"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []


def test_importtime_of_the_client_names_no_heavy_package() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import helpers, {', '.join(CLIENT_MODULES)}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=_env(),
        cwd=ROOT,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "helpers.chat" in imported
    assert not [m for m in imported if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_without_the_simulator_and_without_a_url_the_error_names_both_ways_out() -> None:
    # the sim extra is "missing": uvicorn cannot be imported
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from helpers import make_chat_model, EndpointError\n"
        "try:\n    make_chat_model()\nexcept EndpointError as e:\n    print(e)\n"
    )
    message = python(code, QWEN_SIM_TIME_SCALE="10")
    assert "QWEN_BASE_URL" in message and "no module uvicorn" in message
    assert "pip install 'qwen-async-kit[sim]'" in message and "pip install -e '.[sim]'" in message
    assert "requirements.txt" not in message


def test_reasoning_is_the_first_standard_content_block_of_a_reply_and_of_merged_chunks() -> None:
    model = replayed_model("qwen3-parser-chat-thinking")
    reply = model.invoke("你是谁?")
    blocks = reply.content_blocks
    assert [block["type"] for block in blocks][:2] == ["reasoning", "text"]
    assert blocks[0]["reasoning"] == reply.additional_kwargs["reasoning_content"] != ""
    assert blocks[1]["text"] == reply.content


def test_merged_streamed_chunks_carry_the_reasoning_block_too() -> None:
    model = replayed_model("qwen3-parser-stream-thinking-usage")
    merged = None
    for chunk in model.stream("你是谁?"):
        merged = chunk if merged is None else merged + chunk
    assert isinstance(merged, AIMessageChunk)
    blocks = merged.content_blocks
    assert blocks[0]["type"] == "reasoning"
    assert blocks[0]["reasoning"] == merged.additional_kwargs["reasoning_content"] != ""
    assert [b["type"] for b in blocks[1:]] == ["text"] and blocks[1]["text"] == merged.content


def test_a_reply_without_reasoning_has_no_reasoning_block() -> None:
    reply = AIMessage(
        "4", additional_kwargs={"reasoning_content": ""}, response_metadata={"model_provider": "vllm"}
    )
    assert [block["type"] for block in reply.content_blocks] == ["text"]


class Review(BaseModel):
    title: str
    score: int


def test_with_structured_output_cut_by_max_tokens_raises_truncated_with_its_advice_and_text() -> None:
    model = replayed_model("hermes-qwen3-structured-json-schema-cut")
    with pytest.raises(Truncated) as caught:
        model.with_structured_output(Review, method="json_schema").invoke("q")
    problem = caught.value
    assert "raise max_tokens" in str(problem) and problem.finish_reason == "length"
    assert problem.answer and problem.answer.startswith("{")  # the partial JSON is kept


def test_no_top_level_module_is_over_400_lines() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in ROOT.glob("helpers/*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > 400} == {}
