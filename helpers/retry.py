"""Which errors are worth retrying, how long to wait, and what to tell the user: for ``amap``.

Transient (retried): connection refused/reset, a response or stream cut mid-way, timeouts,
HTTP 408, 429 (honouring ``Retry-After``) and 5xx. Everything else is permanent: HTTP 4xx such as
400 (prompt over the context length, bad parameter), 401 (key), 404 (wrong model or URL), a host
name that does not resolve, a TLS handshake that fails (HTTPS to a plain-HTTP server, an untrusted
certificate), and errors raised by the client code itself. A refused connection stays transient:
a server that restarts comes back. Why a connection failed is decided by
``helpers.errors.connect_failure``, the classifier ``diagnose`` uses too.

``describe(exc)`` is the one-line error an outcome carries; for an endpoint mistake it ends with
``advice(exc)``, what to change (``QWEN_BASE_URL``, ``QWEN_API_KEY``, ``QWEN_MODEL``).

Example::

    >>> policy = Backoff(base_s=1.0, factor=2.0, max_s=8.0, jitter=0.0)
    >>> [policy.delay(attempt) for attempt in (1, 2, 3, 4, 5)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai

from helpers.errors import (
    SERVE_HINT,
    TOOLS_HINT,
    connect_failure,
    error_chain,
    httpx_error_types,
    tool_flags_missing,
)

TRANSIENT_STATUS = frozenset({408, 429})


class IncompleteStream(Exception):
    """A streamed reply ended without a ``finish_reason``: the connection was cut mid-way.

    The partial text is never returned as an answer; the request is retried.
    """


class RequestTimeout(TimeoutError):
    """No complete reply within amap's per-request ``timeout``."""


_TRANSPORT_ERRORS = httpx_error_types("TransportError")


@dataclass(frozen=True)
class Verdict:
    """How amap treats one failed attempt."""

    retryable: bool
    status: int | None = None
    retry_after_s: float | None = None


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an error raised for an HTTP response (openai, httpx or similar)."""
    for candidate in (exc, getattr(exc, "response", None)):
        code = getattr(candidate, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``.

    >>> parse_retry_after({"retry-after": "2"})
    2.0
    >>> parse_retry_after({"retry-after-ms": "250"})
    0.25
    >>> parse_retry_after({}) is None
    True
    """
    if not headers:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value is None:
        return None
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))


def classify(exc: BaseException) -> Verdict:
    """Decide whether a failed attempt is worth retrying.

    >>> classify(IncompleteStream("cut")).retryable
    True
    >>> classify(ValueError("bad")).retryable
    False
    """
    failure = connect_failure(exc)
    if failure in ("host", "tls", "certificate"):
        return Verdict(retryable=False)  # the same request will fail the same way
    if failure is not None or isinstance(
        exc, (IncompleteStream, TimeoutError, ConnectionError, *_TRANSPORT_ERRORS)
    ):
        return Verdict(retryable=True)
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return Verdict(retryable=True)
    status = status_code(exc)
    if status is None:
        # LangChain's provider-neutral errors (langchain_core.exceptions.ModelError) say it.
        return Verdict(retryable=getattr(exc, "is_retryable", False) is True)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    retryable = status in TRANSIENT_STATUS or status >= 500
    return Verdict(
        retryable=retryable,
        status=status,
        retry_after_s=parse_retry_after(headers) if retryable else None,
    )


def _requested_url(exc: BaseException) -> Any | None:
    """The URL of the request that failed (an ``httpx.URL``), if an error in the chain has it."""
    for error in error_chain(exc):
        try:
            request = getattr(error, "request", None)
        except RuntimeError:  # httpx: "The .request property has not been set."
            continue
        url = getattr(request, "url", None)
        if url is not None and hasattr(url, "netloc"):
            return url
    return None


def _netloc(url: Any) -> str:
    """``host:port`` of an httpx URL, without user info."""
    return url.netloc.decode("ascii") if isinstance(url.netloc, bytes) else url.netloc


def _base_url(url: Any, scheme: str | None = None) -> str:
    """``http://host:port/v1`` from ``http://host:port/v1/chat/completions`` (no user info, query)."""
    path = url.path.removesuffix("/chat/completions").removesuffix("/completions").rstrip("/")
    return f"{scheme or url.scheme}://{_netloc(url)}{path}"


_NOT_JSON = "Unexpected response type from OpenAI-compatible endpoint"  # langchain-openai's words


def advice(exc: BaseException) -> str | None:
    """What the user should change, for an error caused by the endpoint settings; else None.

    The settings are named as ``helpers.endpoint`` reads them (``QWEN_BASE_URL``,
    ``QWEN_API_KEY``, ``QWEN_MODEL``), and ``helpers.check_endpoint(url)`` is offered
    where a probe tells more. Transient errors and refusals whose message already says what to
    change (HTTP 400 from vLLM) get None, except vLLM's refusal of tools for want of
    ``--enable-auto-tool-choice --tool-call-parser hermes``: the full ``vllm serve`` command.
    The API key is never part of the advice.

    >>> advice(ConnectionRefusedError(111, "Connection refused"))  # doctest: +ELLIPSIS
    'nothing answered: is the server running (`vllm serve ...`) on that host and port? check ...'
    >>> advice(ValueError("bug")) is None
    True
    """
    url = _requested_url(exc)
    base = _base_url(url) if url is not None else None
    check = f"helpers.check_endpoint({base!r})" if base else "helpers.check_endpoint(...)"
    check_base_url = f"check QWEN_BASE_URL; {check} says what is wrong"
    status = status_code(exc)
    if status == 400 and tool_flags_missing(exc):
        return TOOLS_HINT
    if status in (401, 403):
        return "set QWEN_API_KEY to the --api-key the server was started with"
    if status == 404:
        if any("model" in str(error).lower() for error in error_chain(exc)):
            served = f"helpers.diagnose({base!r}).served_models" if base else "GET /v1/models"
            return f"set QWEN_MODEL to a model the server serves ({served} lists them)"
        if base is None or not base.endswith("/v1"):
            example = f"{base}/v1" if base else "http://HOST:8000/v1"
            return f"the base URL must end in /v1 (QWEN_BASE_URL={example}); {check} says what is wrong"
        return f"the server has no {url.path}: {check_base_url}"
    failure = connect_failure(exc)
    where = f" at {_netloc(url)}" if url is not None else ""
    if failure == "host":
        host = f" {url.host!r}" if url is not None else ""
        return f"the host name{host} does not resolve: {check_base_url}"
    if failure == "tls":
        plain = f"QWEN_BASE_URL={_base_url(url, 'http')}" if url is not None else "http:// in QWEN_BASE_URL"
        return (
            f"the server{where} speaks plain HTTP, not HTTPS (vLLM does unless started with "
            f"--ssl-certfile): use {plain}; {check_base_url}"
        )
    if failure == "certificate":
        return f"the server's TLS certificate{where} is not trusted: {check_base_url}"
    if failure == "connect":
        return (
            f"nothing answered{where}: is the server running (`{SERVE_HINT}`) on that host and "
            f"port? {check_base_url}"
        )
    if isinstance(exc, openai.APIResponseValidationError) or str(exc).startswith(_NOT_JSON):
        return f"the answer is not the JSON expected: not an OpenAI-compatible server; {check_base_url}"
    return None


def describe(exc: BaseException) -> str:
    """One line that says what happened, with the HTTP status, the root cause and the advice.

    Wrappers (LangChain's ``OpenAIConnectionError`` around openai's ``APIConnectionError``
    around httpx's ``RemoteProtocolError``) are followed down to the deepest cause. For an
    endpoint mistake, :func:`advice` is appended after ``To fix:``.

    >>> try:
    ...     raise ConnectionError("peer gone") from OSError(104, "Connection reset by peer")
    ... except ConnectionError as exc:
    ...     describe(exc)
    'peer gone (caused by ConnectionResetError: [Errno 104] Connection reset by peer)'
    """
    status = status_code(exc)
    message = str(exc).strip() or type(exc).__name__
    if status is not None and str(status) not in message:
        message = f"HTTP {status}: {message}"
    root = error_chain(exc)[-1]
    root_text = str(root).strip()
    if root is not exc and not root_text:
        message += f" (caused by {type(root).__name__})"
    elif root is not exc and root_text not in message:
        message += f" (caused by {type(root).__name__}: {root_text})"
    if (hint := advice(exc)) is not None and hint not in message:
        message = f"{message.rstrip('.')}. To fix: {hint}"
    return message


@dataclass
class Backoff:
    """Exponential backoff with jitter; seed it for reproducible delays.

    The wait before retry number ``attempt`` (1 = first retry) is
    ``min(max_s, base_s * factor ** (attempt - 1))``, of which a random fraction up to ``jitter``
    is taken off (``jitter=0``: no randomness; ``1``: "full jitter", anywhere in ``[0, d]``).
    A server's ``Retry-After`` is honoured as a minimum, up to ``max_retry_after_s``.
    """

    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 20.0
    jitter: float = 0.5
    max_retry_after_s: float = 60.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.max_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("Backoff times must be >= 0 seconds.")
        if self.factor < 1:
            raise ValueError(f"Backoff factor must be >= 1, got {self.factor}.")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff jitter is a fraction in [0, 1], got {self.jitter}.")
        self._rng = random.Random(self.seed)

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt counts retries from 1, got {attempt}.")
        exponential = min(self.max_s, self.base_s * self.factor ** (attempt - 1))
        wait = exponential - self._rng.uniform(0, self.jitter * exponential)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, self.max_retry_after_s))
        return wait
