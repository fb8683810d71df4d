"""What is wrong with an endpoint: ``diagnose()`` probes it step by step and names each check.

``diagnose()`` probes an endpoint with httpx (url, connect, auth/api, server, model; with
``tools=True`` also whether the server accepts tools); ``check_endpoint()`` raises
``EndpointError`` with the message of the first failed check, which tells the user what to do.
Why a connection failed is decided by ``helpers.errors.connect_failure``, as for ``helpers.retry``.

Example:
    >>> from helpers.diagnosis import check_endpoint
    >>> check_endpoint("http://gpu-pod:8000")         # doctest: +SKIP
    EndpointError: The URL has no /v1 ... use QWEN_BASE_URL=http://gpu-pod:8000/v1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from helpers.endpoint import (
    DEFAULT_PROBE_TIMEOUT_S,
    PLACEHOLDER_API_KEY,
    Endpoint,
    is_json_response,
    server_endpoint,
    server_version,
)
from helpers.errors import (
    SERVE_HINT,
    TOOL_FLAGS,
    TOOLS_HINT,
    EndpointError,
    connect_failure,
    error_chain,
    tool_flags_missing,
)


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
    if response.status_code != 200 or not is_json_response(response):
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
