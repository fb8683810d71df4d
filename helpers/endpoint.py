"""Where to send requests: a vLLM server named by URL, or (a plug-in) the embedded simulator.

``resolve_endpoint()`` takes the base URL, model and key from its arguments, then from the
environment (``QWEN_BASE_URL``, ``QWEN_MODEL``, ``QWEN_API_KEY``; also ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY``). With no URL anywhere it asks the simulator plug-in (``helpers.sim.embedded``,
the ``sim`` extra) to start the embedded simulator once per process (profile from
``QWEN_SIM_PROFILE``, default ``l4``; speed-up from ``QWEN_SIM_TIME_SCALE``, default 1) and says so
in one line; without the plug-in it raises ``EndpointError`` naming both ways out. The client never
imports the simulator otherwise. What is wrong with an endpoint: ``helpers.diagnosis``.

The API key is held as a ``pydantic.SecretStr``: it never shows in a repr, a message or a log line.

Example:
    >>> from helpers.endpoint import resolve_endpoint
    >>> endpoint = resolve_endpoint()                 # doctest: +SKIP
    >>> print(endpoint.describe())                    # doctest: +SKIP
    Talking to vLLM 0.32.0 at http://gpu-pod:8000/v1, model Qwen/Qwen3-0.6B
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from helpers.errors import EndpointError

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
PLACEHOLDER_API_KEY = "EMPTY"  # vLLM without --api-key accepts any key; the SDK insists on one
DEFAULT_PROBE_TIMEOUT_S = 5.0
# vLLM closes idle keep-alive connections after 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE); a client that keeps
# them as long (httpx's default) reuses one just as the server closes it: ReadError. Expire sooner.
KEEPALIVE_EXPIRY_S = 4.0
SIMULATOR_PLUGIN = "helpers.sim.embedded"
NO_SERVER_ADVICE = (
    "Either set QWEN_BASE_URL to your vLLM server (e.g. QWEN_BASE_URL=http://HOST:8000/v1), "
    "or install the simulator: pip install 'qwen-async-kit[sim]' (from a clone of the kit: "
    "pip install -e '.[sim]')."
)

EndpointKind = Literal["simulator", "server"]


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint: base URL (ending in ``/v1``), model name, masked API key.

    >>> Endpoint("http://localhost:8000/v1", "Qwen/Qwen3-0.6B", api_key="sk-secret")
    Endpoint(base_url='http://localhost:8000/v1', model='Qwen/Qwen3-0.6B', kind='server', label='')
    """

    base_url: str
    model: str = DEFAULT_MODEL
    api_key: SecretStr = field(default=SecretStr(PLACEHOLDER_API_KEY), repr=False)
    kind: EndpointKind = "server"
    label: str = ""  # for the simulator: "profile l4, time scale 10x"

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, SecretStr):
            object.__setattr__(self, "api_key", SecretStr(str(self.api_key)))
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    @property
    def root_url(self) -> str:
        """The server's root (``/health``, ``/version``, ``/metrics`` live there)."""
        return self.base_url.removesuffix("/v1")

    def describe(self, *, timeout: float = 2.0) -> str:
        """One line saying what we talk to; asks the server's ``/version`` (never raises).

        >>> Endpoint("http://127.0.0.1:9/v1").describe(timeout=0.5)  # doctest: +ELLIPSIS
        'Talking to an OpenAI-compatible server at http://127.0.0.1:9/v1 (no answer on /version...
        """
        if self.kind == "simulator":
            embedded = embedded_simulator()
            what = (
                "the embedded simulator"
                if embedded is not None and embedded.base_url == self.base_url
                else "a simulator"
            )
            what = f"{what} ({self.label})" if self.label else what
            return f"Talking to {what} at {self.base_url}, model {self.model}"
        try:
            server = server_version(self.root_url, timeout=timeout)
        except (httpx.HTTPError, ValueError) as exc:
            return (
                f"Talking to an OpenAI-compatible server at {self.base_url} "
                f"(no answer on /version: {type(exc).__name__}), model {self.model}"
            )
        return f"Talking to {server} at {self.base_url}, model {self.model}"

    def headers(self) -> dict[str, str]:
        """Authorization header for raw httpx calls (keep it out of logs)."""
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def resolve_endpoint(
    base_url: str | None = None, model: str | None = None, api_key: str | None = None
) -> Endpoint:
    """Arguments, then environment, then the embedded simulator (started once per process).

    >>> resolve_endpoint("http://gpu-pod:8000/v1").model
    'Qwen/Qwen3-0.6B'
    """
    base_url = base_url or _env("QWEN_BASE_URL", "OPENAI_BASE_URL")
    if base_url is None:
        return embedded_simulator_endpoint(model or _env("QWEN_MODEL") or DEFAULT_MODEL)
    return server_endpoint(base_url, model, api_key)


def server_endpoint(base_url: str, model: str | None = None, api_key: str | None = None) -> Endpoint:
    """The server at ``base_url``; model and key from the arguments, else the environment
    (``QWEN_MODEL``; ``QWEN_API_KEY``, then ``OPENAI_API_KEY``), else the defaults."""
    model = model or _env("QWEN_MODEL") or DEFAULT_MODEL
    key = api_key or _env("QWEN_API_KEY", "OPENAI_API_KEY") or PLACEHOLDER_API_KEY
    return Endpoint(base_url=base_url, model=model, api_key=SecretStr(key))


def _simulator_plugin() -> Any:
    """``helpers.sim.embedded``, or ``EndpointError`` saying how to get a server when it is missing."""
    if importlib.util.find_spec("helpers.sim") is None:
        why = "this copy of helpers has no simulator (no helpers/sim)"
    else:
        try:
            return importlib.import_module(SIMULATOR_PLUGIN)
        except ImportError as exc:
            if (exc.name or "").startswith("helpers"):
                raise  # a broken simulator, not a missing extra: as it is
            why = f"the simulator's 'sim' extra is not installed (no module {exc.name})"
    raise EndpointError(
        f"No server to talk to: QWEN_BASE_URL is not set and {why}. {NO_SERVER_ADVICE}", check="url"
    )


def embedded_simulator_endpoint(model: str = DEFAULT_MODEL) -> Endpoint:
    """Start the embedded simulator on first use (once per process) and return its endpoint."""
    profile = _env("QWEN_SIM_PROFILE") or "l4"
    time_scale = float(_env("QWEN_SIM_TIME_SCALE") or 1.0)
    server, started = _simulator_plugin().embedded_server(profile, time_scale)
    if started:
        print(
            f"No QWEN_BASE_URL set: started the embedded Qwen3 simulator (profile {profile}, "
            f"time scale {time_scale:g}x, tool calling on) at {server.base_url}. "
            "Set QWEN_BASE_URL to talk to a real vLLM server."
        )
    label = f"profile {profile}, time scale {time_scale:g}x"
    return Endpoint(base_url=server.base_url, model=model, kind="simulator", label=label)


def embedded_simulator() -> Any:
    """The ``SimServer`` this process started for ``resolve_endpoint()`` (its ``log_file``, ...), or None."""
    import sys

    plugin = sys.modules.get(SIMULATOR_PLUGIN)  # never imported: never started
    return plugin.running_server() if plugin is not None else None


def server_version(root_url: str, *, timeout: float = 2.0, client: httpx.Client | None = None) -> str:
    """``"vLLM 0.32.0"`` (or the simulator's own name) from ``GET /version``.

    Raises ``httpx.HTTPError`` if unreachable, ``ValueError`` if the answer is not vLLM's JSON.
    """
    get = client.get if client else httpx.get
    response = get(f"{root_url}/version", timeout=timeout)
    response.raise_for_status()
    version = response.json().get("version") if is_json_response(response) else None
    if not isinstance(version, str):
        raise ValueError("GET /version did not return vLLM's {'version': ...}")
    if "sim" in version.lower():  # the embedded simulator: "0.32.0+qwen-sim"
        return f"the Qwen3 simulator (vLLM {version.split('+')[0]} wire format)"
    return f"vLLM {version}"


def is_json_response(response: httpx.Response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True
