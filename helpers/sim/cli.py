"""`python -m helpers.sim`: run the simulator in this process until interrupted."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time

from helpers.sim.config import DEFAULT_MODEL_NAMES, SimConfig
from helpers.sim.hermes import TOOL_PARSERS
from helpers.sim.profiles import PROFILES
from helpers.sim.reasoning import PARSERS

READY_PREFIX = "SIM_READY port="
log = logging.getLogger("helpers.sim")


def build_parser() -> argparse.ArgumentParser:
    from helpers.sim.fleet import POLICIES, ROUTERS  # fleet starts simulators through this module

    d = SimConfig()
    p = argparse.ArgumentParser(
        prog="python -m helpers.sim",
        description=(
            "A vLLM 0.32-compatible server that simulates Qwen3-0.6B (continuous batching, "
            "reasoning parsers, errors, faults). It runs no model: every answer says it is simulated."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=d.host, help="address to bind")
    p.add_argument("--port", type=int, default=d.port, help="port to bind (0: any free port)")
    p.add_argument("--profile", default=d.profile, choices=sorted(PROFILES), help="GPU latency profile")
    p.add_argument(
        "--time-scale",
        type=float,
        default=d.time_scale,
        help="run the clock this many times faster than the profile (ratios unchanged)",
    )
    p.add_argument(
        "--reasoning-parser",
        default=d.reasoning_parser,
        choices=PARSERS,
        help="as vLLM's --reasoning-parser; 'none' leaves <think>...</think> in content",
    )
    p.add_argument(
        "--reasoning-field",
        default=d.reasoning_field,
        choices=("reasoning", "reasoning_content"),
        help="field name for the reasoning (vLLM >= 0.16: reasoning)",
    )
    p.add_argument(
        "--served-model-name",
        nargs="+",
        default=list(DEFAULT_MODEL_NAMES),
        help="model names accepted; the first is returned in responses",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("VLLM_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1/* (default: $VLLM_API_KEY, as vLLM)",
    )
    p.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        help="most sequences running at once (default: the profile's, as vLLM)",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="token budget per engine step (default: the profile's, as vLLM)",
    )
    p.add_argument("--max-model-len", type=int, default=d.max_model_len, help="context length")
    p.add_argument(
        "--think-tokens-mean",
        type=int,
        default=d.think_tokens_mean,
        help="mean length of the thinking part, in tokens",
    )
    p.add_argument(
        "--answer-tokens-mean",
        type=int,
        default=d.answer_tokens_mean,
        help="mean length of the answer, in tokens",
    )
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 500/503")
    p.add_argument(
        "--rate-limit-rate", type=float, default=0.0, help="share of requests answered 429 with Retry-After"
    )
    p.add_argument(
        "--disconnect-rate",
        type=float,
        default=0.0,
        help="share of responses cut mid-way (connection closed, no [DONE])",
    )
    p.add_argument(
        "--latency-spike",
        "--latency-spike-rate",
        dest="latency_spike_rate",
        type=float,
        default=0.0,
        help="share of requests delayed by --latency-spike-s",
    )
    p.add_argument(
        "--latency-spike-s",
        type=float,
        default=d.latency_spike_s,
        help="length of a latency spike, in model seconds",
    )
    p.add_argument(
        "--tool-call-error-rate",
        type=float,
        default=0.0,
        help="share of replies with tool calls in which the model writes a malformed <tool_call>",
    )
    p.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws")
    p.add_argument(
        "--enable-auto-tool-choice",
        action="store_true",
        help="as vLLM: let the model call tools with tool_choice 'auto' (needs --tool-call-parser)",
    )
    p.add_argument(
        "--tool-call-parser",
        default=None,
        choices=TOOL_PARSERS,
        help="as vLLM: parse the model's <tool_call> text into tool_calls (Qwen3: hermes)",
    )
    p.add_argument("--block-size", type=int, default=d.block_size, help="as vLLM: tokens per KV block")
    p.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=d.gpu_memory_utilization,
        help="as vLLM: share of the profile's GPU memory to use (sizes the KV cache)",
    )
    p.add_argument(
        "--num-gpu-blocks-override",
        type=int,
        default=None,
        help="as vLLM: KV cache size in blocks, instead of the profile's memory",
    )
    p.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=d.enable_prefix_caching,
        help="as vLLM: reuse the KV blocks of earlier prompts (--no-enable-prefix-caching: off)",
    )
    p.add_argument(
        "--enable-prompt-tokens-details",
        action="store_true",
        help="as vLLM: usage.prompt_tokens_details with cached_tokens",
    )
    p.add_argument("--coalesce", type=int, default=1, help="tokens per streamed chunk")
    p.add_argument(
        "--max-body-bytes", type=int, default=d.max_body_bytes, help="larger request bodies get 413"
    )
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
        run(config)


def run_fleet_from(config: SimConfig, args: argparse.Namespace) -> None:
    """``--replicas N [--router vllm-router]``: each replica gets these settings and a free port."""
    from helpers.sim.fleet import run_fleet

    options = {k: v for k, v in config.as_dict().items() if k not in ("host", "port", "max_body_bytes")}
    port = config.port if args.router else 0
    run_fleet(args.replicas, args.router, args.policy, config.host, port, log_level=args.log_level, **options)


def run(config: SimConfig) -> None:
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


def watch_parent(parent_pid: int, pdeathsig: bool) -> None:
    """Exit as soon as the parent process is gone, however it ended.

    Three guards: PR_SET_PDEATHSIG (Linux: the kernel sends SIGKILL when the parent exits; only
    used when the parent started us from its main thread, since the signal follows the thread),
    end of file on stdin (the parent holds the pipe's other end), and a parent-pid poll.
    """
    if pdeathsig:
        _set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(0)

    def stdin_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    def poll_parent() -> None:
        while os.getppid() == parent_pid:
            threading.Event().wait(0.5)
        os._exit(0)

    threading.Thread(target=stdin_eof, name="sim-stdin-watch", daemon=True).start()
    threading.Thread(target=poll_parent, name="sim-parent-watch", daemon=True).start()


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("PR_SET_PDEATHSIG unavailable; relying on the stdin and parent-pid watchdogs")
