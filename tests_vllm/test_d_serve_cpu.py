"""`make serve-cpu MODEL=<the tiny model>`: the command a user runs, started as a user would, the
first chat request and notebook 00 against it, then stopped (Ctrl-C's signal, to make's group)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kit_tools import vllm_cpu
from notebooks import run_against

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parent.parent


def make_serve_cpu(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    # The running interpreter's venv is the kit's: `install` is up to date there, don't redo it.
    return subprocess.Popen(
        ["make", "-C", str(ROOT), f"VENV={sys.prefix}", "-o", "install", "serve-cpu", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def read_until(process: subprocess.Popen, marker: str, timeout: float = 600) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError("\n".join(lines[-40:]))


def test_make_serve_cpu_serves_a_local_model(pool, tmp_path):
    pool.stop()  # one server at a time
    port = vllm_cpu.free_port()
    process = make_serve_cpu(f"MODEL={pool.model}", f"PORT={port}", "EAGER=1")
    try:
        lines = read_until(process, "export QWEN_BASE_URL=")
        assert lines[-1] == f"export QWEN_BASE_URL=http://127.0.0.1:{port}/v1"
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": "Qwen/Qwen3-0.6B",
                "messages": [{"role": "user", "content": "你是谁?"}],
                "max_tokens": 8,
            },
            timeout=60,
        )
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["role"] == "assistant"
        server = vllm_cpu.Server(process, port, tmp_path / "unused.log")
        assert run_against("00_setup", server, tmp_path) == []
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
    with pytest.raises(httpx.ConnectError):  # nothing left listening
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("MODEL=/nonexistent/qwen3",), "does not exist"),
    ],
)
def test_make_serve_cpu_says_what_is_wrong(args, message):
    process = make_serve_cpu(*args, f"PORT={vllm_cpu.free_port()}")
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert message in output


def test_hub_unreachable_says_so(tmp_path):
    closed = f"http://127.0.0.1:{vllm_cpu.free_port()}"  # nothing listens: as with no internet
    env = {"HF_ENDPOINT": closed, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0"}
    process = make_serve_cpu("MODEL=Qwen/Qwen3-0.6B", f"PORT={vllm_cpu.free_port()}", env=env)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert f"downloaded from {closed} on first use, which is not reachable" in output
    assert "MODEL=/path/to/Qwen3-0.6B" in output


def test_busy_port_is_named(pool):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = make_serve_cpu(f"MODEL={pool.model}", f"PORT={port}")
        output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert f"Port {port} is busy" in output
