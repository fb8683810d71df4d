"""The real-vLLM tier (`make test-vllm`): vLLM's CPU build serving the tiny Qwen3 model.

One server per set-up (A: qwen3 parser and hermes tools, the README's command; B: deepseek_r1; C: no
parser, --api-key), started on first use and stopped when another set-up is needed or the session
ends, so at most one runs at a time. Test files run in set-up order (test_a_*, test_b_*, test_c_*).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit_tools import vllm_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


class ServerPool:
    """At most one live server; asking for another set-up stops the current one."""

    def __init__(self) -> None:
        self.model = vllm_cpu.ensure_tiny_model(quiet=True)
        self.current: tuple[str, vllm_cpu.Server] | None = None

    def get(self, setup: str) -> vllm_cpu.Server:
        if self.current and self.current[0] == setup:
            return self.current[1]
        self.stop()
        server = vllm_cpu.start_server(self.model, [*vllm_cpu.SETUPS[setup], "--enforce-eager"])
        try:
            vllm_cpu.wait_ready(server)
        except BaseException:
            server.stop()
            raise
        self.current = (setup, server)
        return server

    def stop(self) -> None:
        if self.current:
            self.current[1].stop()
            self.current = None


@pytest.fixture(scope="session")
def pool() -> Iterator[ServerPool]:
    servers = ServerPool()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def server_a(pool: ServerPool) -> vllm_cpu.Server:
    return pool.get("A")


@pytest.fixture
def server_b(pool: ServerPool) -> vllm_cpu.Server:
    return pool.get("B")


@pytest.fixture
def server_c(pool: ServerPool) -> vllm_cpu.Server:
    return pool.get("C")
