"""Where to send requests: a real vLLM server, or the embedded simulator; and what is wrong if it fails.

``resolve_endpoint()`` takes the base URL, model and key from its arguments, then from the
environment (``QWEN_BASE_URL``, ``QWEN_MODEL``, ``QWEN_API_KEY``; also ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY``), and otherwise starts the embedded simulator once per process (profile from
``QWEN_SIM_PROFILE``, default ``l4``; speed-up from ``QWEN_SIM_TIME_SCALE``, default 1) and says so
in one line. ``diagnose()`` probes an endpoint with httpx and names each check; ``check_endpoint()``
raises ``EndpointError`` with a message that tells the user what to do.

The API key is held as a ``pydantic.SecretStr``: it never shows in a repr, a message or a log line.

Example:
    >>> from helpers.endpoint import resolve_endpoint, check_endpoint
    >>> endpoint = resolve_endpoint()                 # doctest: +SKIP
    >>> print(endpoint.describe())                    # doctest: +SKIP
    Talking to vLLM 0.32.0 at http://gpu-pod:8000/v1, model Qwen/Qwen3-0.6B
    >>> check_endpoint("http://gpu-pod:8000")         # doctest: +SKIP
    EndpointError: The URL has no /v1 ... use QWEN_BASE_URL=http://gpu-pod:8000/v1
"""

from __future__ import annotations

import atexit
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import SecretStr

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
PLACEHOLDER_API_KEY = "EMPTY"  # vLLM without --api-key accepts any key; the SDK insists on one
SERVE_HINT = "vllm serve Qwen/Qwen3-0.6B --reasoning-parser qwen3"
DEFAULT_PROBE_TIMEOUT_S = 5.0

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
            embedded = _embedded is not None and _embedded.base_url == self.base_url
            what = "the embedded simulator" if embedded else "a simulator"
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


class EndpointError(RuntimeError):
    """The endpoint cannot be used; the message says what to do. ``check`` names the failed check."""

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class Check:
    """One named step of ``diagnose``: ``ok`` and a message for the user."""

    name: str
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"[{'OK' if self.ok else 'FAIL'}] {self.name}: {self.message}"


@dataclass(frozen=True)
class Diagnosis:
    """The checks ``diagnose`` ran, in order; stops at the first failure."""

    endpoint: Endpoint
    checks: tuple[Check, ...]
    server: str | None = None
    served_models: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failure(self) -> Check | None:
        return next((check for check in self.checks if not check.ok), None)

    def __str__(self) -> str:
        return "\n".join(str(check) for check in self.checks)


# --- resolving -----------------------------------------------------------------------------------

_embedded: Any = None
_embedded_lock = threading.Lock()


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
    model = model or _env("QWEN_MODEL") or DEFAULT_MODEL
    base_url = base_url or _env("QWEN_BASE_URL", "OPENAI_BASE_URL")
    if base_url is None:
        return embedded_simulator_endpoint(model)
    key = api_key or _env("QWEN_API_KEY", "OPENAI_API_KEY") or PLACEHOLDER_API_KEY
    return Endpoint(base_url=base_url, model=model, api_key=SecretStr(key))


def embedded_simulator_endpoint(model: str = DEFAULT_MODEL) -> Endpoint:
    """Start the embedded simulator on first use (once per process) and return its endpoint."""
    global _embedded
    profile = _env("QWEN_SIM_PROFILE") or "l4"
    time_scale = float(_env("QWEN_SIM_TIME_SCALE") or 1.0)
    with _embedded_lock:
        if _embedded is None:
            import tempfile
            from pathlib import Path

            from helpers.sim import serve

            # Its log goes to a file: a kernel's stderr shows up in whatever cell runs. Engine lag
            # stays visible as vllm_sim:engine_lag_* in /metrics.
            log_file = Path(tempfile.gettempdir()) / f"qwen-sim-{os.getpid()}.log"
            _embedded = serve(profile=profile, time_scale=time_scale, log_file=log_file)
            atexit.register(_embedded.stop)
            print(
                f"No QWEN_BASE_URL set: started the embedded Qwen3 simulator (profile {profile}, "
                f"time scale {time_scale:g}x) at {_embedded.base_url}. "
                "Set QWEN_BASE_URL to talk to a real vLLM server."
            )
        server = _embedded
    label = f"profile {profile}, time scale {time_scale:g}x"
    return Endpoint(base_url=server.base_url, model=model, kind="simulator", label=label)


# --- diagnosing ----------------------------------------------------------------------------------


def server_version(root_url: str, *, timeout: float = 2.0, client: httpx.Client | None = None) -> str:
    """``"vLLM 0.32.0"`` (or the simulator's own name) from ``GET /version``.

    Raises ``httpx.HTTPError`` if unreachable, ``ValueError`` if the answer is not vLLM's JSON.
    """
    get = client.get if client else httpx.get
    response = get(f"{root_url}/version", timeout=timeout)
    response.raise_for_status()
    version = response.json().get("version") if _is_json(response) else None
    if not isinstance(version, str):
        raise ValueError("GET /version did not return vLLM's {'version': ...}")
    if "sim" in version.lower():  # the embedded simulator: "0.32.0+qwen-sim"
        return f"the Qwen3 simulator (vLLM {version.split('+')[0]} wire format)"
    return f"vLLM {version}"


def _is_json(response: httpx.Response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _transport_failure(exc: httpx.TransportError, url: httpx.URL, timeout: float) -> Check:
    """Turn an httpx transport error into a message that says what to do."""
    where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    causes = _chain(exc)
    text = " ".join(str(cause) for cause in causes)
    if isinstance(exc, httpx.ConnectTimeout):
        return Check(
            "connect",
            False,
            f"No connection to {where} within {timeout:g} s: "
            "is the host up, the port right, and no firewall in between?",
        )
    if isinstance(exc, httpx.TimeoutException):
        return Check(
            "connect",
            False,
            f"Connected to {where} but got no answer within "
            f"{timeout:g} s: is the server still starting, or overloaded?",
        )
    if any(isinstance(cause, socket.gaierror) for cause in causes) or any(
        marker in text
        for marker in (
            "Name or service not known",
            "nodename nor servname",
            "name resolution",
            "getaddrinfo failed",
        )
    ):
        return Check(
            "connect",
            False,
            f"Host not found: {url.host!r}. Check the spelling of QWEN_BASE_URL (e.g. http://HOST:8000/v1).",
        )
    if url.scheme == "https" and (any(isinstance(cause, ssl.SSLError) for cause in causes) or "SSL" in text):
        fixed = str(url.copy_with(scheme="http")).removesuffix("/models")
        return Check(
            "connect",
            False,
            "TLS handshake failed: the server speaks plain HTTP "
            f"(vLLM does unless started with --ssl-certfile). Use {fixed}",
        )
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes) or "refused" in text:
        return Check(
            "connect",
            False,
            f"Connection refused at {where}: is the server running? "
            f"Start it with `{SERVE_HINT}` (match --host/--port), or unset QWEN_BASE_URL "
            "to use the embedded simulator.",
        )
    return Check("connect", False, f"Cannot reach {where}: {type(exc).__name__}: {exc}")


def _list_models(client: httpx.Client, endpoint: Endpoint, timeout: float) -> tuple[Check, list]:
    """GET {base_url}/models -> (check, served model ids)."""
    url = httpx.URL(f"{endpoint.base_url}/models")
    try:
        response = client.get(url, headers=endpoint.headers())
    except httpx.TransportError as exc:
        return _transport_failure(exc, url, timeout), []
    if response.status_code in (401, 403):
        given = endpoint.api_key.get_secret_value() != PLACEHOLDER_API_KEY
        what = "rejected the API key" if given else "wants an API key"
        return Check(
            "auth",
            False,
            f"The server {what} (HTTP {response.status_code}): set "
            "QWEN_API_KEY to the --api-key you started vLLM with.",
        ), []
    if response.status_code == 404 and not endpoint.base_url.endswith("/v1"):
        fixed = f"{endpoint.base_url}/v1"
        try:
            retry = client.get(f"{fixed}/models", headers=endpoint.headers())
        except httpx.HTTPError:
            retry = None
        if retry is not None and retry.status_code in (200, 401, 403):
            return Check(
                "url",
                False,
                f"The URL has no /v1: {endpoint.base_url} is the server's root. Use QWEN_BASE_URL={fixed}",
            ), []
    if response.status_code != 200 or not _is_json(response):
        kind = response.headers.get("content-type", "no content type")
        return Check(
            "api",
            False,
            f"{url} answered HTTP {response.status_code} ({kind}), not an "
            "OpenAI-compatible model list: is this a vLLM server, and does the URL "
            "end in /v1?",
        ), []
    data = response.json().get("data") if isinstance(response.json(), dict) else None
    if not isinstance(data, list):
        return Check(
            "api", False, f"{url} returned JSON without a 'data' list: not an OpenAI-compatible server."
        ), []
    ids = [item.get("id") for item in data if isinstance(item, dict)]
    return Check("api", True, f"OpenAI-compatible API, serving {', '.join(ids) or 'no model'}"), ids


def diagnose(
    endpoint_or_url: Endpoint | str,
    model: str | None = None,
    api_key: str | None = None,
    *,
    timeout: float = DEFAULT_PROBE_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> Diagnosis:
    """Probe an endpoint step by step (url, connect, auth/api, server, model); never raises.

    ``transport`` replaces the network (e.g. ``httpx.MockTransport``) and is meant for tests.
    """
    if isinstance(endpoint_or_url, Endpoint):
        endpoint = endpoint_or_url
    else:
        endpoint = Endpoint(
            base_url=endpoint_or_url,
            model=model or DEFAULT_MODEL,
            api_key=SecretStr(api_key or PLACEHOLDER_API_KEY),
        )
    checks: list[Check] = []

    def done(**extra: Any) -> Diagnosis:
        return Diagnosis(endpoint=endpoint, checks=tuple(checks), **extra)

    try:
        url = httpx.URL(endpoint.base_url)
    except httpx.InvalidURL as exc:
        checks.append(Check("url", False, f"Not a URL: {endpoint.base_url!r} ({exc})"))
        return done()
    if url.scheme not in ("http", "https") or not url.host:
        checks.append(
            Check(
                "url", False, f"Not an http(s) URL: {endpoint.base_url!r}; expected e.g. http://HOST:8000/v1"
            )
        )
        return done()
    checks.append(Check("url", True, endpoint.base_url))

    with httpx.Client(timeout=timeout, transport=transport) as client:
        api_check, served = _list_models(client, endpoint, timeout)
        if api_check.name != "connect":
            where = f"{url.host}:{url.port}" if url.port else url.host
            checks.append(Check("connect", True, f"{where} answers"))
        checks.append(api_check)
        if not api_check.ok:
            return done()
        try:
            server = server_version(endpoint.root_url, timeout=timeout, client=client)
            checks.append(Check("server", True, server))
        except (httpx.HTTPError, ValueError):
            server = None
            checks.append(
                Check("server", True, "no vLLM /version here; an OpenAI-compatible server of another kind")
            )
    if endpoint.model in served:
        checks.append(Check("model", True, f"{endpoint.model} is served"))
    else:
        checks.append(
            Check(
                "model",
                False,
                f"Model {endpoint.model!r} is not served here "
                f"(HTTP 404 on requests). Served: {', '.join(served) or 'none'}. "
                "Set QWEN_MODEL to one of them.",
            )
        )
    return done(server=server, served_models=tuple(served))


def check_endpoint(
    endpoint_or_url: Endpoint | str,
    model: str | None = None,
    api_key: str | None = None,
    *,
    timeout: float = DEFAULT_PROBE_TIMEOUT_S,
) -> Diagnosis:
    """Like ``diagnose`` but raises ``EndpointError`` (the user-facing message) on the first failure."""
    diagnosis = diagnose(endpoint_or_url, model, api_key, timeout=timeout)
    if (failure := diagnosis.failure) is not None:
        raise EndpointError(failure.message, check=failure.name)
    return diagnosis
