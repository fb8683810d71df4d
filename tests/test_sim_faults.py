"""Injected faults: each flag does what it says, and the same seed gives the same faults."""

from __future__ import annotations

import time

import httpx
import pytest

from helpers.sim import serve

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40, "ignore_eos": True}


def post(server, **extra) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", json={**BODY, **extra}, timeout=30)


def statuses(fail_rate: float, seed: int, count: int = 24) -> list[int]:
    with (
        serve(profile="instant", fail_rate=fail_rate, fault_seed=seed) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        return [client.post("/chat/completions", json=BODY).status_code for _ in range(count)]


@pytest.mark.server
def test_fail_rate_gives_500_and_503_with_vllm_shaped_bodies():
    with serve(profile="instant", fail_rate=1.0) as server:
        responses = [post(server) for _ in range(12)]
        metrics = httpx.get(server.root_url + "/metrics").text
    assert {r.status_code for r in responses} == {500, 503}
    for response in responses:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == response.status_code and "Simulated fault" in error["message"]
    assert 'vllm_sim:injected_faults_total{kind="500"}' in metrics


@pytest.mark.server
def test_faults_are_reproducible_from_the_seed():
    first = statuses(0.5, seed=7)
    assert first == statuses(0.5, seed=7)
    assert first != statuses(0.5, seed=8)
    assert 200 in first and any(code >= 500 for code in first)


@pytest.mark.server
def test_rate_limit_gives_429_with_retry_after():
    with serve(profile="instant", rate_limit_rate=1.0) as server:
        response = post(server)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "RateLimitError"


@pytest.mark.server
def test_disconnect_cuts_a_stream_before_done():
    with serve(profile="instant", disconnect_rate=1.0) as server:
        received = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "POST", server.base_url + "/chat/completions", json={**BODY, "stream": True}
            ) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line:
                    received.append(line)
        assert received and received[0].startswith("data: ")
        assert "data: [DONE]" not in received
        assert len(received) < 1 + 40
        # A non-streamed response is cut too.
        with pytest.raises(httpx.RemoteProtocolError):
            post(server)
        # The server is still healthy afterwards.
        assert httpx.get(server.root_url + "/health").status_code == 200


@pytest.mark.server
def test_latency_spike_delays_the_request():
    with serve(profile="instant", latency_spike_rate=1.0, latency_spike_s=0.4) as server:
        start = time.perf_counter()
        assert post(server).status_code == 200
        assert time.perf_counter() - start >= 0.4
    with serve(profile="instant", latency_spike_rate=1.0, latency_spike_s=2.0, time_scale=10) as server:
        start = time.perf_counter()
        assert post(server).status_code == 200
        # spikes scale with the clock: 0.2 s; an unscaled one would take 2 s, which the rest of this
        # instant request (milliseconds) does not reach even on a machine many times slower
        assert 0.2 <= time.perf_counter() - start < 1.0


def test_invalid_rates_are_rejected_before_starting():
    with pytest.raises(ValueError, match="fail_rate"):
        serve(profile="instant", fail_rate=1.5)
