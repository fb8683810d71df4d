"""The private-SDK shortcuts (helpers.openai_internals): taken with the installed openai SDK, and when a
release moves them, the client falls back to the SDK's public route and still works end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai

from helpers import openai_internals
from helpers.sim import serve

ROOT = Path(__file__).resolve().parent.parent

MOVED = """
import asyncio, builtins, json
import openai

MOVED = ("openai._base_client", "openai._constants", "openai._vendor.httpx_aiohttp")
real_import = builtins.__import__


def moved(name, globals=None, locals=None, fromlist=(), level=0):  # as if a release moved them
    if (globals or {}).get("__name__") == "helpers.openai_internals" and name in MOVED:
        raise ImportError(f"No module named {name!r}", name=name)
    return real_import(name, globals, locals, fromlist, level)


builtins.__import__ = moved
from helpers import openai_internals
builtins.__import__ = real_import

from helpers import amap, make_chat_model
from helpers.transport import aiohttp_client

model = make_chat_model(base_url=BASE_URL, model=MODEL, thinking=True, max_tokens=64)
reply = model.invoke("你是谁?")
chunks = list(model.stream("你是谁?"))
merged = chunks[0] + chunks[1:]
outcomes = asyncio.run(amap(model, ["你好", "1+1=?"], progress=False))
pool = aiohttp_client(timeout=5.0, limits=openai_internals.httpx.Limits())  # the SDK's public client
print(json.dumps({
    "dict_replies": openai_internals.DICT_REPLIES,
    "transport": openai_internals.SdkAiohttpTransport is None,
    "pool": isinstance(pool, openai.DefaultAioHttpClient),
    "reasoning": bool(reply.additional_kwargs["reasoning_content"]) and bool(reply.content),
    "stream": bool(merged.additional_kwargs["reasoning_content"]) and bool(merged.content),
    "amap": [o.ok and bool(o.reasoning) for o in outcomes],
}))
"""


def test_the_installed_sdk_has_the_private_route() -> None:
    assert openai_internals.DICT_REPLIES
    assert openai_internals.SdkAiohttpTransport is not None
    assert openai_internals.httpx.AsyncClient is type(openai.DefaultAsyncHttpxClient()).__mro__[1]


def test_when_the_private_route_moves_the_public_one_works() -> None:
    with serve(profile="instant", think_tokens_mean=16, answer_tokens_mean=8) as server:
        code = f"BASE_URL = {server.base_url!r}\nMODEL = {server.model!r}\n" + MOVED
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
        )
    assert done.returncode == 0, done.stderr
    used = json.loads(done.stdout.strip().splitlines()[-1])
    assert used["dict_replies"] is False and used["transport"] is True and used["pool"] is True
    assert used["reasoning"] and used["stream"] and used["amap"] == [True, True]
