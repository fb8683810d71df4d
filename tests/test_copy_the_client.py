"""docs/client.md lists the files that make "a reasoning-keeping chat model + amap"; copied alone into
an empty project, with nothing of the simulator, the benchmark engine or their packages importable,
they run against a simulator started separately."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.sim import serve

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "client.md"
HIDDEN = ["numpy", "pandas", "matplotlib", "starlette", "uvicorn", "jsonschema", "ray", "orjson"]

USE_THE_COPY = """
import asyncio, importlib.abc, json, sys

class Hide(importlib.abc.MetaPathFinder):  # only the client's own dependencies are importable
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"hidden: {name}", name=name)
        return None

# a project that has only the copied files: no installed kit (this venv's editable install of the
# repository would otherwise supply helpers.sim and helpers.bench)
sys.meta_path = [Hide()] + [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]

from helpers import EndpointError, amap, make_chat_model

try:
    make_chat_model()  # no QWEN_BASE_URL, no simulator in this copy
    no_server = None
except EndpointError as error:
    no_server = str(error)
model = make_chat_model(base_url=BASE_URL, model=MODEL, thinking=True, max_tokens=256)
reply = model.invoke("你是谁?")
outcomes = asyncio.run(amap(model, ["你好", "1+1=?", "Who are you?"], concurrency=2, progress=False))
print(json.dumps({
    "reasoning": reply.additional_kwargs["reasoning_content"],
    "answer": reply.content,
    "first_block": reply.content_blocks[0]["type"],
    "ok": [o.ok for o in outcomes],
    "outcome_reasoning": [bool(o.reasoning) for o in outcomes],
    "no_server": no_server,
    "helpers_from": sys.modules["helpers"].__file__,
    "loaded": sorted(m for m in sys.modules if m.startswith("helpers.")),
}))
"""


def listed_files() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- client files: chat model + amap -->", 1)[1].split(
        "<!-- end of client files -->"
    )[0]
    return re.findall(r"^(helpers/\S+\.py)\s", block, flags=re.M)


def test_the_listed_client_files_run_alone_against_a_simulator(tmp_path: Path) -> None:
    files = listed_files()
    assert "helpers/chat.py" in files and "helpers/concurrency.py" in files
    project = tmp_path / "project"
    for name in files:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, project / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QWEN_BASE_URL", "OPENAI_BASE_URL")}
    with serve(profile="instant", think_tokens_mean=16, answer_tokens_mean=8) as server:
        code = (
            f"HIDDEN = {HIDDEN!r}\nBASE_URL = {server.base_url!r}\nMODEL = {server.model!r}\n" + USE_THE_COPY
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, timeout=240
        )
    assert done.returncode == 0, done.stderr
    used = json.loads(done.stdout.strip().splitlines()[-1])
    assert used["helpers_from"] == str(project / "helpers" / "__init__.py")
    assert used["reasoning"] and used["answer"] and used["first_block"] == "reasoning"
    assert used["ok"] == [True, True, True] and all(used["outcome_reasoning"])
    assert not [m for m in used["loaded"] if m.startswith(("helpers.sim", "helpers.bench"))]
    # every module the copy loaded is in the list, so the list is complete for this use
    assert {f"helpers/{m.split('.', 1)[1].replace('.', '/')}.py" for m in used["loaded"]} <= set(files)
    message = used["no_server"]
    assert message and "QWEN_BASE_URL" in message and "no simulator" in message
    assert "pip install 'qwen-async-kit[sim]'" in message


@pytest.mark.parametrize("name", ["helpers/sim/__init__.py", "helpers/bench/__init__.py", "helpers/plots.py"])
def test_the_list_has_nothing_of_the_optional_parts(name: str) -> None:
    assert name not in listed_files()
