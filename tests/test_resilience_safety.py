"""Safety: the simulator listens on loopback only and enforces its key; the key never shows.

(``tests/test_endpoint.py`` checks ``Endpoint``/``Diagnosis``/``EndpointError`` texts and
``tests/test_hygiene.py`` scans committed notebooks and data; this file covers the rest of the
way: the server, the HTTP client's logs, exceptions, outcomes and checkpoint lines.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from helpers.chat import make_chat_model
from helpers.concurrency import BatchCancelled, amap
from helpers.endpoint import Endpoint
from helpers.sim import SimConfig, SimServer, serve
from helpers.sim.cli import build_parser

pytestmark = pytest.mark.server

KEY = "sk-resilience-secret-7f3a"
WRONG = "sk-resilience-wrong-9c1d"
SHORT = {"think_tokens_mean": 4, "answer_tokens_mean": 4}


@pytest.fixture(scope="module")
def keyed_sim() -> Iterator[SimServer]:
    with serve(profile="instant", api_key=KEY, **SHORT) as server:
        yield server


def listening_addresses(pid: int) -> set[str]:
    return {
        c.laddr.ip for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    }


def test_the_simulator_listens_on_loopback_only_by_default() -> None:
    assert SimConfig().host == "127.0.0.1"
    assert build_parser().parse_args([]).host == "127.0.0.1"
    with serve(profile="instant") as server:
        assert listening_addresses(server.pid) == {"127.0.0.1"}


def test_requests_without_the_key_are_refused_before_any_work(keyed_sim: SimServer) -> None:
    chat = {"model": keyed_sim.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    url = f"{keyed_sim.base_url}/chat/completions"
    for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": KEY}):
        refused = httpx.post(url, json=chat, headers=headers)
        assert refused.status_code == 401, headers
        assert httpx.get(f"{keyed_sim.base_url}/models", headers=headers).status_code == 401
    metrics = httpx.get(f"{keyed_sim.root_url}/metrics").text
    assert 'vllm:request_success_total{engine="0",finished_reason="stop"' in metrics
    assert 'finished_reason="stop",model_name="Qwen/Qwen3-0.6B"} 0.0' in metrics  # nothing ran
    accepted = httpx.post(url, json=chat, headers={"Authorization": f"Bearer {KEY}"})
    assert accepted.status_code == 200 and accepted.json()["choices"]


def test_the_unauthenticated_endpoints_do_not_reveal_the_key(keyed_sim: SimServer) -> None:
    """/health, /version and /metrics answer without a key (as vLLM's do), so they must not echo it."""
    for path in ("/health", "/version", "/metrics"):
        response = httpx.get(f"{keyed_sim.root_url}{path}")
        assert response.status_code == 200
        assert KEY not in response.text, f"{path} shows the API key"


def test_the_key_stays_out_of_logs_exceptions_outcomes_and_checkpoints(
    keyed_sim: SimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # openai, httpx, langchain at their most talkative
    right = make_chat_model(endpoint=Endpoint(keyed_sim.base_url, api_key=KEY), max_tokens=16)
    wrong = make_chat_model(endpoint=Endpoint(keyed_sim.base_url, api_key=WRONG), max_tokens=16)
    texts = [repr(right), str(right), repr(wrong), str(wrong)]

    assert right.invoke("hi").content is not None
    with pytest.raises(Exception) as raised:
        wrong.invoke("hi")
    texts += [str(raised.value), repr(raised.value), repr(raised.value.__cause__)]

    path = tmp_path / "run.jsonl"
    outcomes = asyncio.run(amap(wrong, ["a", "b"], checkpoint=path, progress=False))
    assert [o.error_type for o in outcomes] == ["OpenAIAuthenticationError"] * 2
    texts += [repr(o) for o in outcomes] + [path.read_text(encoding="utf-8")]

    async def cancelled() -> BatchCancelled:
        task = asyncio.create_task(amap(right, ["a"] * 4, stream=True, progress=False))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except BatchCancelled as exc:
            return exc
        raise AssertionError("not cancelled")

    batch = asyncio.run(cancelled())
    texts += [str(batch), repr(batch.outcomes)]
    texts.append(caplog.text)
    assert caplog.records, "nothing was logged: the log check would prove nothing"
    for text in texts:
        assert KEY not in text and WRONG not in text
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0])["attempts"] == 1


def test_the_simulators_own_log_never_prints_the_key(capfd: pytest.CaptureFixture[str]) -> None:
    with serve(profile="instant", api_key=KEY, log_level="debug", **SHORT) as server:
        httpx.post(f"{server.base_url}/chat/completions", json={}, headers={"Authorization": WRONG})
        model = make_chat_model(endpoint=Endpoint(server.base_url, api_key=KEY), max_tokens=8)
        model.invoke("hi")
    captured = capfd.readouterr()
    assert "Qwen3 simulator" in captured.err  # the child's stderr was captured
    assert KEY not in captured.out + captured.err
