"""The simulator process: free port, readiness, stop, and never an orphan."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import psutil
import pytest

from helpers.sim import SimServerError, serve

pytestmark = pytest.mark.server


def gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` has exited (a zombie counts as exited)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_free_port_health_and_idempotent_stop():
    server = serve(profile="instant", port=0)
    try:
        assert server.port > 0 and server.config["port"] == server.port
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.root_url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(server.root_url + "/health").status_code == 200
        assert server.profile.name == "instant" and server.config["profile"] == "instant"
        assert server.pid != os.getpid() and server.is_running()
    finally:
        server.stop()
    server.stop()
    assert gone(server.pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.root_url + "/health")


def test_two_servers_get_two_ports():
    with serve(profile="instant") as one, serve(profile="instant") as two:
        assert one.port != two.port


def test_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SimServerError, match="exited with code"):
            serve(profile="instant", port=taken.getsockname()[1], startup_timeout=10)


PARENT = textwrap.dedent(
    """
    import os, sys, time
    from helpers.sim import serve
    server = serve(profile="instant")
    print(server.pid, flush=True)
    if sys.argv[1] == "exit":
        os._exit(0)  # no atexit, no stop(): only the child's own watchdogs can end it
    time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_orphan_after_the_parent_ends(how):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        sim_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(sim_pid)
        if how == "sigkill":
            parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert gone(sim_pid), f"simulator {sim_pid} outlived its parent ({how})"
    finally:
        parent.kill()
        parent.wait()


def test_server_started_from_a_worker_thread_survives_the_thread():
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("server", serve(profile="instant")))
    worker.start()
    worker.join()
    server = box["server"]
    try:
        time.sleep(0.5)
        assert httpx.get(server.root_url + "/health").status_code == 200
    finally:
        server.stop()


def test_cli_help_lists_the_options():
    result = subprocess.run(
        [sys.executable, "-m", "helpers.sim", "--help"], capture_output=True, text=True, check=True
    )
    for option in (
        "--port",
        "--profile",
        "--reasoning-parser",
        "--reasoning-field",
        "--served-model-name",
        "--api-key",
        "--time-scale",
        "--fail-rate",
        "--rate-limit-rate",
        "--disconnect-rate",
        "--latency-spike",
        "--max-num-seqs",
        "--host",
    ):
        assert option in result.stdout, option


def test_cli_serves_until_terminated():
    process = subprocess.Popen(
        [sys.executable, "-m", "helpers.sim", "--port", "0", "--profile", "instant"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("SIM_READY port=")
        port = int(line.split("=")[1])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.05)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["Qwen/Qwen3-0.6B", "Qwen-0.6B"]
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(10) in (0, -signal.SIGTERM)


def test_cli_rejects_bad_settings_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "helpers.sim", "--fail-rate", "2"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "fail_rate must be between 0 and 1" in result.stderr


def test_log_file_takes_the_banner_and_warnings_not_our_stderr(tmp_path, capfd):
    log_file = tmp_path / "sim.log"
    log_file.write_text("an earlier run\n")
    with serve(profile="instant", log_file=log_file) as server:
        assert server.log_file == log_file
        reply = httpx.post(
            server.base_url + "/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "return_reasoning": True},
        )
        assert reply.status_code == 200
    text = log_file.read_text()
    assert text.startswith("an earlier run\n")  # appended, not truncated
    assert "Qwen3 simulator (profile instant" in text
    assert "ignored: ['return_reasoning']" in text
    err = capfd.readouterr().err
    assert "Qwen3 simulator" not in err and "ignored" not in err


def test_startup_failure_with_a_log_file_quotes_the_log(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SimServerError, match="exited with code") as raised:
            serve(
                profile="instant",
                port=taken.getsockname()[1],
                startup_timeout=10,
                log_file=tmp_path / "sim.log",
            )
    assert "Address already in use" in str(raised.value)
    assert str(tmp_path / "sim.log") in str(raised.value)


def test_the_api_key_is_not_on_the_child_command_line():
    # `ps` shows every user's command lines: the key travels in the child's environment instead.
    with serve(profile="instant", api_key="sk-not-in-ps-4821") as server:
        assert not any("sk-not-in-ps-4821" in part for part in psutil.Process(server.pid).cmdline())
        assert httpx.get(server.base_url + "/models").status_code == 401
        authorised = httpx.get(
            server.base_url + "/models", headers={"Authorization": "Bearer sk-not-in-ps-4821"}
        )
        assert authorised.status_code == 200
        assert "sk-not-in-ps-4821" not in str(server.config)


def test_in_a_jupyter_kernel_the_log_goes_to_a_file_by_default(monkeypatch):
    # A kernel shows whatever reaches fd 2 in the cell that happens to run: no stray log lines there.
    from helpers.sim import process

    monkeypatch.setattr(process, "_in_jupyter_kernel", lambda: True)
    with serve(profile="instant") as server:
        assert server.log_file is not None
        assert server.log_file.name.startswith("qwen-sim-")
        assert "Qwen3 simulator" in server.log_file.read_text()
    monkeypatch.setattr(process, "_in_jupyter_kernel", lambda: False)
    with serve(profile="instant") as server:
        assert server.log_file is None


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback_in_the_log(tmp_path):
    log_file = tmp_path / "sim.log"
    with serve(profile="instant", log_file=log_file) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"messages": ['
            )
            time.sleep(0.2)
        time.sleep(0.3)
        assert httpx.get(server.root_url + "/health").status_code == 200
    assert "Traceback" not in log_file.read_text()


def seconds_until_an_idle_connection_is_closed(server, give_up_after: float = 60.0) -> float:
    """Send one keep-alive request on a raw socket, then time how long the server keeps it open."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=give_up_after) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: sim\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += conn.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        idle_from = time.monotonic()
        while conn.recv(4096):  # the rest of the reply, then b"" when the server closes
            pass
        return time.monotonic() - idle_from


def test_idle_connections_are_closed_after_vllms_5_seconds():
    # vLLM runs uvicorn with timeout_keep_alive=VLLM_HTTP_TIMEOUT_KEEP_ALIVE, default 5 (vllm/envs.py);
    # a client pool keeping connections longer must meet the hang-up here as it would on vLLM
    with serve(profile="instant") as server:
        idle = seconds_until_an_idle_connection_is_closed(server)
    assert 4.0 < idle < 29.0, idle


def test_the_keep_alive_follows_vllms_environment_variable(monkeypatch):
    monkeypatch.setenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "1")
    with serve(profile="instant") as server:
        idle = seconds_until_an_idle_connection_is_closed(server)
    assert idle < 4.0, idle
