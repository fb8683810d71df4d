"""Where to send requests: a real vLLM server, or the embedded simulator; and what is wrong if it fails.

``resolve_endpoint()`` takes the base URL, model and key from its arguments, then from the
environment (``QWEN_BASE_URL``, ``QWEN_MODEL``, ``QWEN_API_KEY``; also ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY``), and otherwise starts the embedded simulator once per process (profile from
``QWEN_SIM_PROFILE``, default ``l4``; speed-up from ``QWEN_SIM_TIME_SCALE``, default 1) and says so
in one line. ``diagnose()`` probes an endpoint with httpx and names each check (with ``tools=True``
also whether the server accepts tools); ``check_endpoint()`` raises ``EndpointError`` with a
message that tells the user what to do. ``connect_failure()`` says why a connection failed, for
``diagnose`` and for ``helpers.retry`` alike.

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
TOOL_FLAGS = "--enable-auto-tool-choice --tool-call-parser hermes"
SERVE_HINT = f"vllm serve Qwen/Qwen3-0.6B --reasoning-parser qwen3 {TOOL_FLAGS}"
TOOLS_HINT = f"restart the server with the tool-calling flags: `{SERVE_HINT}`"
# How vLLM refuses tools when started without TOOL_FLAGS (transcripts noflags-qwen3-*): tool_choice
# "auto" (or none given) names both flags; "required" and a named function name the parser.
_TOOL_FLAGS_REFUSED = (
    "tool choice requires --enable-auto-tool-choice",
    "requires --tool-call-parser to be set",
)
DEFAULT_PROBE_TIMEOUT_S = 5.0
# vLLM closes idle keep-alive connections after 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE); a client that keeps
# them as long (httpx's default) reuses one just as the server closes it: ReadError. Expire sooner.
KEEPALIVE_EXPIRY_S = 4.0

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


def embedded_simulator_endpoint(model: str = DEFAULT_MODEL) -> Endpoint:
    """Start the embedded simulator on first use (once per process) and return its endpoint."""
    global _embedded
    profile = _env("QWEN_SIM_PROFILE") or "l4"
    time_scale = float(_env("QWEN_SIM_TIME_SCALE") or 1.0)
    with _embedded_lock:
        if _embedded is None:
            import tempfile
            from pathlib import Path

            from helpers.extras import require_extra

            require_extra(
                "sim",
                ["starlette", "uvicorn", "orjson", "prometheus_client", "jsonschema"],
                needed_for="the embedded simulator (no QWEN_BASE_URL set)",
            )
            from helpers.sim import serve

            # Its log goes to a file: a kernel's stderr shows up in whatever cell runs. Engine lag
            # stays visible as vllm_sim:engine_lag_* in /metrics.
            log_file = Path(tempfile.gettempdir()) / f"qwen-sim-{os.getpid()}.log"
            # Served like the README's `vllm serve` command: qwen3 reasoning parser and tool calling on.
            _embedded = serve(
                profile=profile,
                time_scale=time_scale,
                log_file=log_file,
                enable_auto_tool_choice=True,
                tool_call_parser="hermes",
            )
            atexit.register(_embedded.stop)
            print(
                f"No QWEN_BASE_URL set: started the embedded Qwen3 simulator (profile {profile}, "
                f"time scale {time_scale:g}x, tool calling on) at {_embedded.base_url}. "
                "Set QWEN_BASE_URL to talk to a real vLLM server."
            )
        server = _embedded
    label = f"profile {profile}, time scale {time_scale:g}x"
    return Endpoint(base_url=server.base_url, model=model, kind="simulator", label=label)


def embedded_simulator() -> Any:
    """The ``SimServer`` this process started for ``resolve_endpoint()`` (its ``log_file``, ...), or None."""
    return _embedded


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


# --- why a connection failed: one classifier, for diagnose and for retry -------------------------


def httpx_error_types(*names: str) -> tuple[type[BaseException], ...]:
    """httpx's error classes ``names``, from httpx and httpx2 (openai >= 3), whichever is installed."""
    types: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        types.extend(getattr(module, name) for name in names)
    return tuple(types)


# Raised before a request is sent: while resolving the host, connecting, or the TLS handshake.
_CONNECT_ERRORS = (
    *httpx_error_types("ConnectError", "ConnectTimeout"),
    ConnectionRefusedError,
    socket.gaierror,
)
# How getaddrinfo says a name does not exist (httpx keeps only the text): Linux, macOS, Windows.
# A temporary failure (EAI_AGAIN, "Temporary failure in name resolution") is not among them.
_HOST_NOT_FOUND = (
    "Name or service not known",
    "nodename nor servname",
    "No address associated with hostname",
    "getaddrinfo failed",
)
_NO_SUCH_HOST_CODES = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)
_CLOSED_BY_PEER = (ssl.SSLEOFError, ssl.SSLZeroReturnError)  # a cut, not a handshake mismatch

ConnectFailure = Literal["host", "tls", "certificate", "connect"]


def error_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first (``raise ... from``, or the implicit context)."""
    chain, seen = [exc], {id(exc)}
    while (cause := _cause(chain[-1])) is not None and id(cause) not in seen:
        seen.add(id(cause))
        chain.append(cause)
    return chain


def _cause(exc: BaseException) -> BaseException | None:
    return exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def connect_failure(exc: BaseException) -> ConnectFailure | None:
    """Why no connection was made, if the error happened before a request was sent.

    ``"host"``: the name does not resolve; ``"tls"``: the TLS handshake failed (HTTPS to a
    plain-HTTP server); ``"certificate"``: the server's certificate is not trusted;
    ``"connect"``: anything else (refused, connect timeout, temporary DNS failure).
    ``helpers.retry`` retries only ``"connect"``; ``diagnose`` words its message by the same verdict.

    >>> connect_failure(OSError("[Errno -2] Name or service not known")) is None  # not connecting
    True
    >>> connect_failure(ConnectionRefusedError(111, "Connection refused"))
    'connect'
    """
    chain = error_chain(exc)
    handshake = [e for e in chain if isinstance(e, ssl.SSLError) and not isinstance(e, _CLOSED_BY_PEER)]
    connecting = [e for e in chain if isinstance(e, _CONNECT_ERRORS)] + handshake
    if not connecting:
        return None
    text = " ".join(str(error) for error in connecting)
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or (
        "CERTIFICATE_VERIFY_FAILED" in text
    ):
        return "certificate"
    if handshake or "[SSL:" in text:
        return "tls"
    if any(marker in text for marker in _HOST_NOT_FOUND) or any(
        isinstance(e, socket.gaierror) and e.errno in _NO_SUCH_HOST_CODES for e in chain
    ):
        return "host"
    return "connect"


def tool_flags_missing(exc_or_message: BaseException | str) -> bool:
    """True for vLLM's 400 refusing tools because it was started without ``TOOL_FLAGS``.

    >>> tool_flags_missing('tool_choice="required" requires --tool-call-parser to be set')
    True
    """
    return any(marker in str(exc_or_message) for marker in _TOOL_FLAGS_REFUSED)


def _transport_failure(exc: httpx.TransportError, url: httpx.URL, timeout: float) -> Check:
    """Turn an httpx transport error into a message that says what to do."""
    where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    failure = connect_failure(exc)
    if isinstance(exc, httpx.ConnectTimeout):
        message = (
            f"No connection to {where} within {timeout:g} s: "
            "is the host up, the port right, and no firewall in between?"
        )
    elif isinstance(exc, httpx.TimeoutException):
        message = (
            f"Connected to {where} but got no answer within "
            f"{timeout:g} s: is the server still starting, or overloaded?"
        )
    elif failure == "host":
        message = (
            f"Host not found: {url.host!r}. Check the spelling of QWEN_BASE_URL (e.g. http://HOST:8000/v1)."
        )
    elif failure == "tls":
        fixed = str(url.copy_with(scheme="http")).removesuffix("/models")
        message = (
            "TLS handshake failed: the server speaks plain HTTP "
            f"(vLLM does unless started with --ssl-certfile). Use {fixed}"
        )
    elif failure == "certificate":
        message = (
            f"The TLS certificate of {where} is not trusted (self-signed?): give httpx the CA "
            "(SSL_CERT_FILE) or use the server's http:// URL if it has one."
        )
    elif any(isinstance(cause, ConnectionRefusedError) for cause in error_chain(exc)) or "refused" in str(
        exc
    ):
        message = (
            f"Connection refused at {where}: is the server running? "
            f"Start it with `{SERVE_HINT}` (match --host/--port), or unset QWEN_BASE_URL "
            "to use the embedded simulator."
        )
    elif failure == "connect" and "name resolution" in " ".join(str(e) for e in error_chain(exc)):
        message = (
            f"DNS lookup of {url.host!r} hit a temporary failure in name resolution: the resolver "
            "did not answer; try again (requests retry it), and check the network if it persists."
        )
    else:
        message = f"Cannot reach {where}: {type(exc).__name__}: {exc}"
    return Check("connect", False, message)


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


def _tools_check(client: httpx.Client, endpoint: Endpoint) -> Check:
    """POST a one-token chat request with one tool and ``tool_choice`` auto: are tools accepted?"""
    tool = {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    body = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": "What time is it?"}],
        "tools": [tool],
        "tool_choice": "auto",
        "max_tokens": 1,
    }
    url = f"{endpoint.base_url}/chat/completions"
    try:
        response = client.post(url, json=body, headers=endpoint.headers())
    except httpx.TransportError as exc:
        return Check("tools", False, f"The tool request failed: {type(exc).__name__}: {exc}")
    if response.status_code == 200:
        return Check("tools", True, 'tools with tool_choice "auto" are accepted')
    text = response.text
    if response.status_code == 400 and tool_flags_missing(text):
        return Check(
            "tools",
            False,
            f"The server refuses tools (HTTP 400: it was started without {TOOL_FLAGS}): {TOOLS_HINT}",
        )
    return Check("tools", False, f"A request with a tool got HTTP {response.status_code}: {text[:300]}")


def diagnose(
    endpoint_or_url: Endpoint | str,
    model: str | None = None,
    api_key: str | None = None,
    *,
    tools: bool = False,
    timeout: float = DEFAULT_PROBE_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> Diagnosis:
    """Probe an endpoint step by step (url, connect, auth/api, server, model); never raises.

    A URL string takes model and key from the arguments, else from the environment, as
    ``resolve_endpoint`` does. ``tools=True`` adds a ``tools`` check: one chat request with a tool,
    ``tool_choice="auto"`` and ``max_tokens=1`` (it generates one token), which a vLLM started
    without ``--enable-auto-tool-choice --tool-call-parser hermes`` refuses.
    ``transport`` replaces the network (e.g. ``httpx.MockTransport``) and is meant for tests.
    """
    if isinstance(endpoint_or_url, Endpoint):
        endpoint = endpoint_or_url
    else:
        endpoint = server_endpoint(endpoint_or_url, model, api_key)
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

    with httpx.Client(timeout=timeout, transport=transport) as client:
        api_check, served = _list_models(client, endpoint, timeout)
        if api_check.name == "url":  # the server answers, but the URL misses /v1
            checks.append(api_check)
            return done()
        checks.append(Check("url", True, endpoint.base_url))
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
        if endpoint.model not in served:
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
        checks.append(Check("model", True, f"{endpoint.model} is served"))
        if tools:
            checks.append(_tools_check(client, endpoint))
    return done(server=server, served_models=tuple(served))


def check_endpoint(
    endpoint_or_url: Endpoint | str,
    model: str | None = None,
    api_key: str | None = None,
    *,
    tools: bool = False,
    timeout: float = DEFAULT_PROBE_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> Diagnosis:
    """Like ``diagnose`` but raises ``EndpointError`` (the user-facing message) on the first failure."""
    diagnosis = diagnose(endpoint_or_url, model, api_key, tools=tools, timeout=timeout, transport=transport)
    if (failure := diagnosis.failure) is not None:
        raise EndpointError(failure.message, check=failure.name)
    return diagnosis
