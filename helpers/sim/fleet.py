"""A simulated fleet: N simulator replicas, each modelling one GPU with its own batch, behind the vLLM
project's router (`vllm-router`, PyPI; a Rust binary in the wheel).

Each replica is a ``serve()`` process of its own; the router is the real ``vllm-router``, started under
``helpers.sim.guard`` so that it, like the replicas, never outlives this process. The fleet is ready when the
router answers ``/health`` (it checks its workers first); ``stop()`` ends the router, then the replicas.

Example:
    >>> with serve_fleet(replicas=2, policy="round_robin", profile="instant") as fleet:  # doctest: +SKIP
    ...     print("\\n".join(fleet.lines()))
    replica 0: http://127.0.0.1:41001/v1
    replica 1: http://127.0.0.1:41002/v1
    router: http://127.0.0.1:41003/v1
    ...     fleet.base_url             # point an OpenAI client or make_chat_model here
    ...     fleet.metrics()["vllm:request_success_total"]   # summed over the replicas
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from helpers.sim.guard import guarded_command
from helpers.sim.process import SimServer, SimServerError, _where_its_log_is, serve

ROUTERS = ("vllm-router",)
# vllm-router's --policy values that need nothing but the replicas (kv_aware needs KV-cache events).
POLICIES = ("round_robin", "random", "power_of_two", "cache_aware", "consistent_hash", "sticky_least_loaded")


class Router:
    """The router process (under its guard) and where it listens."""

    def __init__(self, process: subprocess.Popen, host: str, port: int, log_file: Path | None) -> None:
        self._process = process
        self.port = port
        url_host = f"[{host}]" if ":" in host else host
        self.root_url = f"http://{url_host}:{port}"
        self.base_url = f"{self.root_url}/v1"
        self.log_file = log_file

    @property
    def pid(self) -> int:
        """The guard's pid; the router itself is its child."""
        return self._process.pid

    def is_running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the guard (passed on to the router), SIGKILL after ``timeout`` (idempotent)."""
        process = self._process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()  # the router gets SIGKILL from the kernel when its guard dies
                process.wait()
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()


class Fleet:
    """Running replicas and, unless started without one, the router in front of them."""

    def __init__(self, replicas: list[SimServer], router: Router | None, policy: str | None) -> None:
        self.replicas = replicas
        self.router = router
        self.policy = policy

    @property
    def replica_urls(self) -> list[str]:
        """Each replica's ``/v1`` base URL, in order."""
        return [replica.base_url for replica in self.replicas]

    @property
    def base_url(self) -> str:
        """Where clients send requests: the router's ``/v1`` (a single replica's when there is no router)."""
        if self.router is not None:
            return self.router.base_url
        if len(self.replicas) == 1:
            return self.replicas[0].base_url
        raise ValueError("this fleet has no router: send requests to one of fleet.replica_urls")

    @property
    def model(self) -> str:
        return self.replicas[0].model

    def lines(self) -> list[str]:
        """``replica I: URL`` per replica, then ``router: URL``: what ``python -m helpers.sim`` prints."""
        lines = [f"replica {index}: {url}" for index, url in enumerate(self.replica_urls)]
        if self.router is not None:
            lines.append(f"router: {self.router.base_url}")
        return lines

    def replica_metrics(self) -> list[dict[str, float]]:
        """Each replica's ``/metrics`` samples (summed over labels), in replica order."""
        from helpers.server_metrics import scrape_metrics

        return [scrape_metrics(replica.root_url) for replica in self.replicas]

    def metrics(self) -> dict[str, float]:
        """The replicas' ``/metrics`` samples summed over the fleet (replicas that stopped are left out)."""
        total: dict[str, float] = {}
        running = [replica for replica in self.replicas if replica.is_running()]
        for samples in Fleet(running, None, None).replica_metrics():
            for name, value in samples.items():
                total[name] = total.get(name, 0.0) + value
        return total

    def is_running(self) -> bool:
        router_up = self.router is None or self.router.is_running()
        return router_up and all(replica.is_running() for replica in self.replicas)

    def stop(self) -> None:
        """Stop the router, then every replica (idempotent)."""
        if self.router is not None:
            self.router.stop()
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.router.base_url if self.router else "no router"
        return f"Fleet({len(self.replicas)} replicas, {where}, policy={self.policy!r})"


def serve_fleet(
    replicas: int = 2,
    *,
    router: str | None = "vllm-router",
    policy: str = "round_robin",
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 60.0,
    router_log_file: str | Path | None = None,
    **sim_options: Any,
) -> Fleet:
    """Start ``replicas`` simulators (``serve(**sim_options)``) and ``router`` in front of them on ``port``.

    ``router=None`` starts the replicas only. ``policy`` is the router's load-balancing policy (one of
    ``POLICIES``). The router's log goes to ``router_log_file`` (default: ``qwen-router-<pid>.log`` in the
    temp dir); a startup failure quotes its end. Everything stops together (``fleet.stop()`` or ``with``)
    and never outlives this process. Without a ``time_scale``, the replicas run on the clock that
    ``QWEN_SIM_TIME_SCALE`` sets (default 1, real pace), as the embedded simulator does.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
    if router is not None and router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS} or None, got {router!r}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if "port" in sim_options:
        raise ValueError("port is the router's; each replica takes a free port of its own")
    sim_options.setdefault("time_scale", float(os.environ.get("QWEN_SIM_TIME_SCALE", "").strip() or 1.0))
    with ThreadPoolExecutor(max_workers=min(replicas, 8)) as pool:
        futures = [pool.submit(serve, host=host, port=0, **sim_options) for _ in range(replicas)]
    started: list[SimServer] = []
    errors: list[BaseException] = []
    for future in futures:
        try:
            started.append(future.result())
        except BaseException as error:  # stop what did start, then report the first failure
            errors.append(error)
    if errors:
        for server in started:
            server.stop()
        raise errors[0]
    if router is None:
        return Fleet(started, None, None)
    try:
        front = _start_router(started, policy, host, port, startup_timeout, router_log_file)
    except BaseException:
        for server in started:
            server.stop()
        raise
    return Fleet(started, front, policy)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _start_router(
    replicas: list[SimServer],
    policy: str,
    host: str,
    port: int,
    timeout: float,
    log_file: str | Path | None,
) -> Router:
    from helpers.extras import require_extra

    require_extra("scale", ["vllm_router"], needed_for="a fleet behind vllm-router")
    port = port or _free_port(host)
    command = [
        sys.executable, "-m", "vllm_router.launch_router",
        "--host", host,
        "--port", str(port),
        "--worker-urls", *[replica.root_url for replica in replicas],
        "--policy", policy,
        "--prometheus-host", host,
        "--prometheus-port", str(_free_port(host)),  # its default, 29000, would clash between fleets
        "--log-level", "warning",
    ]  # fmt: skip
    on_main_thread = threading.current_thread() is threading.main_thread()
    log_path = Path(log_file) if log_file else Path(tempfile.gettempdir()) / f"qwen-router-{os.getpid()}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            guarded_command(command, os.getpid(), pdeathsig=on_main_thread),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
        )
    front = Router(process, host, port, log_path)
    try:
        _wait_healthy(front, timeout)
    except BaseException:
        front.stop()
        raise
    return front


def _wait_healthy(router: Router, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    host = router.root_url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    while time.monotonic() < deadline:
        if not router.is_running():
            raise SimServerError(
                f"vllm-router exited before it was ready; {_where_its_log_is(router.log_file)}"
            )
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection(host, router.port, timeout=2.0)
            try:
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            finally:
                connection.close()
        time.sleep(0.1)
    raise SimServerError(
        f"vllm-router did not answer /health within {timeout:g} s; {_where_its_log_is(router.log_file)}"
    )


def run_fleet(
    replicas: int, router: str | None, policy: str, host: str, port: int, **sim_options: Any
) -> None:
    """``python -m helpers.sim --replicas N [--router vllm-router]``: start, print, serve until stopped.

    One line per replica, then the router's (see ``Fleet.lines``); SIGINT or SIGTERM stops everything.
    """
    import signal

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    fleet = serve_fleet(replicas, router=router, policy=policy, host=host, port=port, **sim_options)
    try:
        print("\n".join(fleet.lines()), flush=True)
        while not stop.wait(0.5):
            if not fleet.is_running():
                print("a fleet process exited; stopping the fleet", file=sys.stderr, flush=True)
                break
    finally:
        fleet.stop()
