"""What went wrong, named once: why a connection failed, vLLM's refusal of tools, an unusable endpoint.

One classifier for everyone who explains an error: ``helpers.retry`` (retry or not, and the advice
an outcome carries), ``helpers.diagnosis`` (what ``diagnose`` tells the user) and
``helpers.transport`` (the ``OSError`` under an aiohttp failure).

Example:
    >>> connect_failure(ConnectionRefusedError(111, "Connection refused"))
    'connect'
    >>> tool_flags_missing('tool_choice="required" requires --tool-call-parser to be set')
    True
"""

from __future__ import annotations

import socket
import ssl
from typing import Literal

TOOL_FLAGS = "--enable-auto-tool-choice --tool-call-parser hermes"
SERVE_HINT = f"vllm serve Qwen/Qwen3-0.6B --reasoning-parser qwen3 {TOOL_FLAGS}"
TOOLS_HINT = f"restart the server with the tool-calling flags: `{SERVE_HINT}`"
# How vLLM refuses tools when started without TOOL_FLAGS (transcripts noflags-qwen3-*): tool_choice
# "auto" (or none given) names both flags; "required" and a named function name the parser.
_TOOL_FLAGS_REFUSED = (
    "tool choice requires --enable-auto-tool-choice",
    "requires --tool-call-parser to be set",
)


class EndpointError(RuntimeError):
    """The endpoint cannot be used; the message says what to do. ``check`` names the failed check."""

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


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
