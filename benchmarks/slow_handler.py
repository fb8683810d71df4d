"""A simulator whose request handling burns CPU before planning, and TTFT seen from both sides.

The simulator runs its frontend time from when a request was received, so its own HTTP and CPU
work is absorbed in that time instead of being added to TTFT. This module starts a simulator
with ``helpers.sim.app._plan_reply`` slowed by ``busy_s`` and measures TTFT at the client and in
the server's ``/metrics``. Used by ``benchmarks/bench_sim.py`` (the figure, with its 10%
accuracy) and ``tests/test_sim_timing.py`` (bounds a loaded machine still meets).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx

_SERVER = textwrap.dedent(
    """
    import sys, time
    import helpers.sim.app as app

    plan = app._plan_reply

    def slow_plan(*args, **kwargs):  # the simulator's own CPU time, as on a busy machine
        end = time.perf_counter() + float(sys.argv[1])
        while time.perf_counter() < end:
            pass
        return plan(*args, **kwargs)

    app._plan_reply = slow_plan
    from helpers.sim.cli import main
    main(sys.argv[2:])
    """
)
TTFT_METRIC = "vllm:time_to_first_token_seconds"


@contextlib.contextmanager
def slow_handler_simulator(busy_s: float, time_scale: float, profile: str = "l4") -> Iterator[str]:
    """An ``l4`` simulator on ``time_scale`` whose handler burns ``busy_s``; yields its root URL."""
    command = [sys.executable, "-c", _SERVER, str(busy_s), "--port", "0"]
    command += ["--profile", profile, "--time-scale", str(time_scale)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline().removeprefix("SIM_READY port="))
        root_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(root_url + "/health").status_code == 200:
                    break
            time.sleep(0.05)
        yield root_url
    finally:
        process.terminate()
        process.wait(10)


def ttft_client_and_server(root_url: str, payload: dict, rounds: int) -> tuple[float, float]:
    """Mean TTFT over ``rounds`` sequential streamed requests, as the client saw it and as the
    server's /metrics counted it (after one uncounted warm-up request)."""
    with httpx.Client(base_url=root_url, timeout=60) as client:
        _first_choice_s(client, payload)
        before = client.get("/metrics").text
        client_ttfts = [_first_choice_s(client, payload) for _ in range(rounds)]
        after = client.get("/metrics").text
    count = _sample(after, TTFT_METRIC + "_count") - _sample(before, TTFT_METRIC + "_count")
    server_sum = _sample(after, TTFT_METRIC + "_sum") - _sample(before, TTFT_METRIC + "_sum")
    return statistics.mean(client_ttfts), server_sum / count


def _first_choice_s(client: httpx.Client, payload: dict) -> float:
    start = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: {") and '"choices":[{' in line:
                first = time.perf_counter() - start
    if first is None:
        raise RuntimeError("the stream carried no choices")
    return first


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"/metrics has no {name}")
    return float(match.group(1))
