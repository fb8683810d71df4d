"""The simulated fleet: N replicas behind the real vllm-router, spread, metrics summed, no orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import httpx
import psutil
import pytest

from helpers.sim import SimServerError
from helpers.sim.fleet import serve_fleet

CHAT = {
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
    "chat_template_kwargs": {"enable_thinking": False},  # the router passes vLLM's fields through
}


def _gone(pid: int, within: float = 10.0) -> bool:
    try:
        process = psutil.Process(pid)
        process.wait(within)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # ZombieProcess included: gone, or only its exit status is left
            return True
    return True


@pytest.mark.server
def test_router_spreads_requests_over_the_replicas_and_metrics_sum():
    with serve_fleet(replicas=2, policy="round_robin", profile="instant") as fleet:
        lines = fleet.lines()
        assert lines[:2] == [f"replica {i}: {url}" for i, url in enumerate(fleet.replica_urls)]
        assert lines[2] == f"router: {fleet.base_url}" and fleet.base_url != fleet.replica_urls[0]
        with httpx.Client(timeout=30) as client:
            for _ in range(8):
                body = {"model": fleet.model, **CHAT}
                response = client.post(f"{fleet.base_url}/chat/completions", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"]
        per_replica = [m.get("vllm:request_success_total", 0.0) for m in fleet.replica_metrics()]
        assert per_replica == [4.0, 4.0]  # round robin: every replica served its share
        assert fleet.metrics()["vllm:request_success_total"] == 8.0
        # each replica stays reachable on its own
        assert httpx.get(fleet.replicas[1].root_url + "/health").status_code == 200
    assert not fleet.is_running()


@pytest.mark.server
def test_without_a_router_only_the_replicas_start(monkeypatch):
    monkeypatch.setenv("QWEN_SIM_TIME_SCALE", "7")
    with serve_fleet(replicas=2, router=None, profile="instant") as fleet:
        assert fleet.router is None and len(fleet.lines()) == 2
        with pytest.raises(ValueError, match="no router"):
            _ = fleet.base_url
        assert all(httpx.get(r.root_url + "/health").status_code == 200 for r in fleet.replicas)
        # the replicas keep the clock QWEN_SIM_TIME_SCALE sets, as the embedded simulator does
        assert [r.config_obj.time_scale for r in fleet.replicas] == [7.0, 7.0]
    with serve_fleet(replicas=1, router=None, profile="instant", time_scale=2) as fleet:
        assert fleet.replicas[0].config_obj.time_scale == 2.0  # an explicit clock wins


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 0}, "replicas must be"),
        ({"router": "nginx"}, "router must be one of"),
        ({"policy": "fastest"}, "policy must be one of"),
        ({"router": None, "replicas": 1, "profile": "nope"}, "profile"),
    ],
)
def test_bad_arguments_are_clear(kwargs, message):
    with pytest.raises((ValueError, SimServerError), match=message):
        serve_fleet(**kwargs)


PARENT = textwrap.dedent(
    """
    import os, sys, time
    from helpers.sim.fleet import serve_fleet
    fleet = serve_fleet(replicas=2, profile="instant")
    child = [p.pid for p in __import__("psutil").Process().children(recursive=True)]
    print(" ".join(map(str, child)), flush=True)
    sys.stdin.readline()  # the test reads the children's command lines first
    if sys.argv[1] == "exit":
        os._exit(0)  # no atexit, no stop(): only the watchdogs can end the replicas and the router
    time.sleep(120)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
@pytest.mark.server
def test_no_orphan_when_the_parent_dies(how):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, how], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline()
        pids = [int(pid) for pid in line.split()]
        names = " ".join(" ".join(psutil.Process(pid).cmdline()) for pid in pids if psutil.pid_exists(pid))
        assert "helpers.sim.guard" in names and "vllm" in names and names.count("-m helpers.sim ") >= 2
        if how == "sigkill":
            parent.kill()
        else:
            parent.stdin.write("go\n")
            parent.stdin.flush()
        parent.wait(30)
        assert all(_gone(pid) for pid in pids), [p for p in pids if psutil.pid_exists(p)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.server
def test_port_in_use_fails_with_the_routers_log(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SimServerError, match="vllm-router"):
            serve_fleet(
                replicas=1,
                profile="instant",
                port=taken.getsockname()[1],
                startup_timeout=30,
                router_log_file=tmp_path / "router.log",
            )
    assert os.path.getsize(tmp_path / "router.log") > 0


@pytest.mark.parametrize("router", [True, False])
@pytest.mark.server
def test_cli_prints_one_line_per_replica_and_the_router(router):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "helpers.sim", "--replicas", "2", "--profile", "instant"]
    command += ["--port", str(port)]
    if router:
        command += ["--router", "vllm-router", "--policy", "round_robin"]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [cli.stdout.readline().strip() for _ in range(3 if router else 2)]
        assert [line.split(": ")[0] for line in lines] == ["replica 0", "replica 1", "router"][: len(lines)]
        for line in lines:
            url = line.split(": ", 1)[1]
            assert httpx.get(url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
        if router:
            assert lines[2] == f"router: http://127.0.0.1:{port}/v1"
        children = [p.pid for p in psutil.Process(cli.pid).children(recursive=True)]
        cli.terminate()
        assert cli.wait(30) == 0
        assert all(_gone(pid) for pid in children)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
