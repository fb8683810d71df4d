"""The simulator a client process starts for itself when no server URL is set.

``helpers.endpoint.resolve_endpoint()`` loads this module as a plug-in only when ``QWEN_BASE_URL``
is unset; it depends on nothing of the client. One server per process, stopped at exit.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from pathlib import Path

from helpers.sim.process import SimServer, serve

_server: SimServer | None = None
_lock = threading.Lock()


def embedded_server(profile: str, time_scale: float) -> tuple[SimServer, bool]:
    """The process's embedded simulator, started on the first call; ``(server, started_now)``.

    Served like the README's ``vllm serve`` command: qwen3 reasoning parser and tool calling on.
    Its log goes to a file (a kernel's stderr shows up in whatever cell runs); engine lag stays
    visible as ``vllm_sim:engine_lag_*`` in ``/metrics``.
    """
    global _server
    with _lock:
        if _server is not None:
            return _server, False
        log_file = Path(tempfile.gettempdir()) / f"qwen-sim-{os.getpid()}.log"
        _server = serve(
            profile=profile,
            time_scale=time_scale,
            log_file=log_file,
            enable_auto_tool_choice=True,
            tool_call_parser="hermes",
        )
        atexit.register(_server.stop)
        return _server, True


def running_server() -> SimServer | None:
    """The embedded simulator if this process started one."""
    return _server
