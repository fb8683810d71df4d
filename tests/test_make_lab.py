"""`make lab`, the README's first command: its command line starts a JupyterLab that answers.

The test takes the exact recipe `make lab` would run (`make -n`), with the pod settings
`LAB_IP=0.0.0.0` and a free `LAB_PORT`, runs it as this user (root on most GPU pods and here),
waits for the server to answer on its port with the token it printed, and stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)  # the venv running the tests has JupyterLab (requirements.txt)
STARTUP_TIMEOUT_S = 240  # JupyterLab starts in seconds; a loaded 2-core machine may take far longer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lab_command(**variables: str) -> str:
    """The recipe `make lab` runs, without (re)installing: `-o` treats the install stamp as done."""
    stamp = f"{VENV}/.installed"
    settings = [f"{name}={value}" for name, value in {"VENV": str(VENV), **variables}.items()]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", stamp, "lab", *settings],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one command from make -n lab, got:\n{done.stdout}"
    return lines[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_starts_a_reachable_jupyterlab_and_prints_its_url(tmp_path):
    port = free_port()
    command = lab_command(LAB_IP="0.0.0.0", LAB_PORT=str(port))
    env = {
        **os.environ,
        # keep the user's Jupyter config and runtime files out of the test
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
    }
    server = subprocess.Popen(
        command,
        shell=True,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopped as a whole below
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(server.stdout), daemon=True)
    reader.start()
    url_pattern = re.compile(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            match = url_pattern.search("".join(output))
            if match:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/status",
                    headers={"Authorization": f"token {match.group(1)}"},
                    timeout=10,
                )
                status = response.status_code
                break
            time.sleep(0.5)
        log = "".join(output)
        assert server.poll() is None, f"`{command}` exited with {server.returncode}:\n{log}"
        assert status == 200, f"no answer with the printed token within {STARTUP_TIMEOUT_S} s:\n{log}"
    finally:
        group = os.getpgid(server.pid) if server.poll() is None else server.pid
        try:
            os.killpg(group, signal.SIGTERM)
            server.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            server.wait(timeout=60)
    reader.join(timeout=10)
    # nothing of the process group is left (no orphaned Jupyter server)
    for _ in range(100):
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a process of `make lab` is still running after SIGTERM")
