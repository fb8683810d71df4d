"""`python -m helpers.sim`: run the simulator in this process until interrupted."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

from helpers.sim.config import SimConfig
from helpers.sim.lifeline import READY_PREFIX, watch_parent
from helpers.sim.options import add_config_arguments

log = logging.getLogger("helpers.sim")


def build_parser() -> argparse.ArgumentParser:
    from helpers.sim.fleet import POLICIES, ROUTERS  # fleet starts simulators through this module

    p = argparse.ArgumentParser(
        prog="python -m helpers.sim",
        description=(
            "A vLLM 0.32-compatible server that simulates Qwen3-0.6B (continuous batching, "
            "reasoning parsers, errors, faults). It runs no model: every answer says it is simulated."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(p)  # one flag per SimConfig field, documented there
    p.add_argument("--log-level", default="warning", help="logging level")
    fleet = p.add_argument_group("fleet (helpers.sim.fleet): several replicas, each one simulated GPU")
    fleet.add_argument("--replicas", type=int, default=1, help="simulator processes to start")
    fleet.add_argument(
        "--router",
        default=None,
        choices=ROUTERS,
        help="put the vLLM project's router in front, on --port (default: replicas only, free ports)",
    )
    fleet.add_argument("--policy", default="round_robin", choices=POLICIES, help="the router's policy")
    p.add_argument("--watch-parent", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--pdeathsig", action="store_true", help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    fields = SimConfig.__dataclass_fields__
    return SimConfig(**{k: v for k, v in vars(args).items() if k in fields})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        build_parser().error(str(error))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.watch_parent is not None:
        watch_parent(args.watch_parent, args.pdeathsig)
    if args.replicas > 1 or args.router:
        run_fleet_from(config, args)
    else:
        run_server(config)


def run_fleet_from(config: SimConfig, args: argparse.Namespace) -> None:
    """``--replicas N [--router vllm-router]``: each replica gets these settings and a free port."""
    from helpers.sim.fleet import run_fleet

    options = {k: v for k, v in config.as_dict().items() if k not in ("host", "port", "max_body_bytes")}
    port = config.port if args.router else 0
    run_fleet(args.replicas, args.router, args.policy, config.host, port, log_level=args.log_level, **options)


def run_server(config: SimConfig) -> None:
    """Bind, announce the port on stdout, serve until SIGINT/SIGTERM."""
    import uvicorn

    from helpers.sim.app import create_app

    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(4096)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop" if _has("uvloop") else "asyncio",
            http=_http_protocol(),
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=_keep_alive_s(),
            timeout_graceful_shutdown=1,
        )
    )
    print(f"{READY_PREFIX}{port}", flush=True)
    print(
        f"Qwen3 simulator (profile {config.profile}, time_scale {config.time_scale:g}, reasoning "
        f"parser {config.reasoning_parser}) on http://{config.host}:{port}/v1 — simulated, "
        "no model runs.",
        file=sys.stderr,
        flush=True,
    )
    server.run(sockets=[sock])


def _keep_alive_s() -> int:
    """Seconds an idle connection stays open: vLLM's ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``, default 5
    (``vllm/envs.py``, passed to uvicorn as ``timeout_keep_alive``). A client pool that keeps
    connections longer meets the server's hang-up here as it would on vLLM."""
    value = os.environ.get("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "5")
    try:
        return int(value)
    except ValueError:
        raise SystemExit(
            f"VLLM_HTTP_TIMEOUT_KEEP_ALIVE must be a whole number of seconds, not {value!r}"
        ) from None


def _http_protocol() -> type | str:
    """httptools, stamping each request's arrival (`sim.arrival` in the ASGI scope) as soon as
    its first bytes are parsed: the frontend time and the TTFT clock start there."""
    if not _has("httptools"):
        return "h11"  # app.py stamps the arrival when the request reaches the app
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class ArrivalStampingProtocol(HttpToolsProtocol):
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["sim.arrival"] = time.perf_counter()

    return ArrivalStampingProtocol


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
