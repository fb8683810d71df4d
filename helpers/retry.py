"""Which errors are worth retrying, and how long to wait: used by ``helpers.concurrency.amap``.

Transient (retried): connection refused/reset, a response or stream cut mid-way, timeouts,
HTTP 408, 429 (honouring ``Retry-After``) and 5xx. Everything else is permanent: HTTP 4xx such as
400 (prompt over the context length, bad parameter), 401 (key), 404 (wrong model), and errors
raised by the client code itself.

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

import openai

TRANSIENT_STATUS = frozenset({408, 429})


class IncompleteStream(Exception):
    """A streamed reply ended without a ``finish_reason``: the connection was cut mid-way.

    The partial text is never returned as an answer; the request is retried.
    """


class RequestTimeout(TimeoutError):
    """No complete reply within amap's per-request ``timeout``."""


def _transport_error_types() -> tuple[type[BaseException], ...]:
    """httpx's TransportError, from httpx and from httpx2 (openai >= 3), whichever is installed."""
    types: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        types.append(module.TransportError)
    return tuple(types)


_TRANSPORT_ERRORS = _transport_error_types()


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
    if isinstance(exc, (IncompleteStream, TimeoutError, ConnectionError, *_TRANSPORT_ERRORS)):
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


def _cause(exc: BaseException) -> BaseException | None:
    return exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def describe(exc: BaseException) -> str:
    """One line that says what happened, with the HTTP status and the root cause.

    Wrappers (LangChain's ``OpenAIConnectionError`` around openai's ``APIConnectionError``
    around httpx's ``RemoteProtocolError``) are followed down to the deepest cause.

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
    root, seen = exc, {id(exc)}
    while (cause := _cause(root)) is not None and id(cause) not in seen:
        seen.add(id(cause))
        root = cause
    root_text = str(root).strip()
    if root is not exc and not root_text:
        message += f" (caused by {type(root).__name__})"
    elif root is not exc and root_text not in message:
        message += f" (caused by {type(root).__name__}: {root_text})"
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
