"""Start the simulator in a child process and manage its life from the parent.

Example:
    >>> with serve(profile="instant") as server:
    ...     server.base_url
    'http://127.0.0.1:...'
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import inspect
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from helpers.sim.config import SimConfig
from helpers.sim.lifeline import READY_PREFIX
from helpers.sim.options import SERVE_DEFAULTS, options_docstring, serve_signature
from helpers.sim.options import options as sim_options
from helpers.sim.profiles import Profile, get_profile

_live_servers: weakref.WeakSet = weakref.WeakSet()


class SimServerError(RuntimeError):
    """The simulator did not start (the message says why, quoting its log when it has one)."""


class SimServer:
    """A running simulator process. Use `stop()`, or `with`, to end it."""

    def __init__(
        self, process: subprocess.Popen, config: SimConfig, port: int, log_file: Path | None = None
    ) -> None:
        self._process = process
        self.log_file = log_file  # where its stderr goes; None: inherited from this process
        self.config_obj = config
        self.port = port
        self.host = config.host
        url_host = f"[{self.host}]" if ":" in self.host else self.host
        self.root_url = f"http://{url_host}:{port}"
        self.base_url = f"{self.root_url}/v1"
        _live_servers.add(self)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def profile(self) -> Profile:
        return get_profile(self.config_obj.profile)

    @property
    def config(self) -> dict:
        """All settings, with the port actually bound (the API key only said to be set)."""
        return {**self.config_obj.public_dict(), "port": self.port}

    @property
    def model(self) -> str:
        """The canonical model name."""
        return self.config_obj.model_name

    def is_running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (idempotent): SIGTERM, then SIGKILL after `timeout` seconds."""
        process = self._process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        _live_servers.discard(self)

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"SimServer({self.base_url}, profile={self.config_obj.profile!r}, pid={self.pid}, {state})"


def serve(
    profile: str = "l4",
    *,
    startup_timeout: float = 30.0,
    log_level: str = "warning",
    log_file: str | Path | None = None,
    **options: Any,
) -> SimServer:
    """Start a simulator in a child process; return once `/health` answers.

    ``options`` are the simulator's options (``SimConfig``'s fields, listed below and in docs/simulator.md),
    e.g. ``serve(time_scale=10, enable_auto_tool_choice=True, tool_call_parser="hermes")``.
    The child never outlives this process. `port=0` (the default) takes a free port (see
    `server.port`). Its log (banner, warnings such as engine lag) goes to this process's stderr, or
    is appended to `log_file` when given. In a Jupyter kernel, where stderr shows up in whatever cell
    runs, it defaults to `qwen-sim-<pid>.log` in the temp directory (`server.log_file`).
    """
    config = _config(profile, options)
    command = [sys.executable, "-m", "helpers.sim", *config.to_args(), "--log-level", log_level]
    command += ["--watch-parent", str(os.getpid())]
    if threading.current_thread() is threading.main_thread():
        command.append("--pdeathsig")
    if log_file is None and _in_jupyter_kernel():
        log_file = Path(tempfile.gettempdir()) / f"qwen-sim-{os.getpid()}.log"
    log_path = Path(log_file) if log_file is not None else None
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("VLLM_API_KEY", None)
    if config.api_key:
        env["VLLM_API_KEY"] = config.api_key  # not on the command line, where `ps` shows it
    with open(log_path, "ab") if log_path else contextlib.nullcontext() as log_stream:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_stream,
            env=env,
        )
    try:
        bound_port = _read_port(process, startup_timeout)
        server = SimServer(process, config, bound_port, log_path)
        _wait_healthy(server, process, startup_timeout)
    except SimServerError as error:
        process.kill()
        process.wait()
        raise SimServerError(f"{error}; {_where_its_log_is(log_path)}") from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    return server


def _config(profile: str, options: dict[str, Any]) -> SimConfig:
    """``SimConfig`` from ``serve()``'s keywords (``None`` for a parser or names: the defaults' meaning)."""
    unknown = sorted(set(options) - {option.name for option in sim_options()})
    if unknown:
        raise TypeError(
            f"serve() got unknown option(s) {', '.join(unknown)}; the options are SimConfig's fields "
            "(the options table in docs/simulator.md)"
        )
    values = {**SERVE_DEFAULTS, **options, "profile": profile}
    if values.get("reasoning_parser", "qwen3") is None:
        values["reasoning_parser"] = "none"
    if values.get("served_model_name", []) is None:
        values["served_model_name"] = []
    return SimConfig(**values)


serve.__signature__ = serve_signature(inspect.signature(serve))  # type: ignore[attr-defined]
serve.__doc__ = f"{serve.__doc__}\n    {options_docstring()}\n"


def _in_jupyter_kernel() -> bool:
    """True inside an IPython kernel (Jupyter), without importing IPython when it isn't loaded."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _where_its_log_is(log_path: Path | None, size: int = 2000) -> str:
    """Startup errors point at the simulator's log, quoting its end from a log file."""
    if log_path is None:
        return "its log is printed above, on stderr"
    with open(log_path, "rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - size))
        tail = log.read().decode(errors="replace")
    return f"the end of its log {log_path}:\n{tail}"


def _read_port(process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    stdout = process.stdout
    assert stdout is not None
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdout], [], [], 0.1)
        if ready:
            data = os.read(stdout.fileno(), 256)
            if not data:  # the child closed stdout: it is exiting
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5.0)
                break
            buffer += data
            if b"\n" in buffer:
                line = buffer.split(b"\n", 1)[0].decode()
                if line.startswith(READY_PREFIX):
                    return int(line[len(READY_PREFIX) :])
                raise SimServerError(f"unexpected output from the simulator: {line!r}")
        elif process.poll() is not None:
            break
    if process.poll() is not None:
        raise SimServerError(f"the simulator exited with code {process.returncode} before binding")
    raise SimServerError(f"the simulator did not bind a port within {timeout} s")


def _wait_healthy(server: SimServer, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    host = server.host
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SimServerError(f"the simulator exited with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection(host, server.port, timeout=1.0)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                return
            connection.close()
        except OSError:
            pass
        time.sleep(0.02)
    raise SimServerError(f"/health did not answer within {timeout} s on {server.root_url}")


@atexit.register
def _stop_all() -> None:
    for server in list(_live_servers):
        server.stop(timeout=2.0)
