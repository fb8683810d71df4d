"""The openai SDK's aiohttp transport, with its errors mapped the way httpx's own transport maps them.

``openai.DefaultAioHttpClient`` (the SDK's vendored copy of ``httpx-aiohttp``) costs about a third
less client CPU per request than httpx's connection pool (docs/benchmark.md), but its exception map turns
every aiohttp ``ClientConnectionError`` into ``httpx.ConnectTimeout``: a refused connection, a
server that hung up and a reset all read as the SDK's ``APITimeoutError("Request timed out.")``.
:class:`AiohttpTransport` is that transport with the errors mapped as httpx maps the same
failures (``_HTTPX_ERROR_FOR``), so the SDK's retries and ``helpers.retry``'s classifier see a
connection error as one:

============================================  =================================================
aiohttp                                       httpx
============================================  =================================================
``ConnectionTimeoutError`` (connect, pool)    ``ConnectTimeout``
``SocketTimeoutError`` (read)                 ``ReadTimeout``
``ClientConnectorError`` (refused, DNS, TLS)  ``ConnectError`` (aiohttp's text names the host)
``ServerDisconnectedError``, a cut body       ``RemoteProtocolError``
a body cut by a reset                         ``ReadError``
``ClientConnectionResetError`` (on write)     ``WriteError``
other ``ClientOSError`` (a reset), closed     ``ReadError``
============================================  =================================================

Each httpx error carries aiohttp's message and is raised from the ``OSError`` underneath, if
any (as httpx's are), so ``helpers.retry`` finds a refused connection or a name that does not
resolve, and ``describe`` names the httpx error (``RemoteProtocolError: Server disconnected``) or
the ``OSError`` as the root cause. Everything else (the request, timeouts per request,
keep-alive expiry from ``httpx.Limits.keepalive_expiry``, proxies) is the SDK's transport.

Example:
    >>> client = aiohttp_client(timeout=30.0, limits=httpx.Limits(keepalive_expiry=4.0))
    >>> type(client._transport).__name__
    'AiohttpTransport'
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import openai

from helpers.openai_internals import SdkAiohttpTransport, httpx

# Most specific first: the first class an aiohttp error is an instance of decides.
_HTTPX_ERROR_FOR: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientConnectionResetError, httpx.WriteError),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.InvalidUrlClientError, httpx.UnsupportedProtocol),
)


def httpx_error_class(error: aiohttp.ClientError) -> type[httpx.TransportError] | None:
    """The httpx error class that stands for ``error`` (None if it has no counterpart); the one
    classifier of aiohttp failures, for the kit's pools and the lean client alike.

    >>> import aiohttp
    >>> httpx_error_class(aiohttp.ServerDisconnectedError()).__name__
    'RemoteProtocolError'
    """
    if isinstance(error, aiohttp.ClientPayloadError) and "ConnectionResetError" in str(error):
        return httpx.ReadError  # a body cut by a reset: aiohttp says so only in its text
    for aiohttp_type, httpx_type in _HTTPX_ERROR_FOR:
        if isinstance(error, aiohttp_type):
            return httpx_type
    return None


def httpx_error(error: aiohttp.ClientError) -> httpx.TransportError | None:
    """The httpx error that stands for ``error`` (None if it has no counterpart).

    >>> import aiohttp
    >>> httpx_error(aiohttp.ServerDisconnectedError())
    RemoteProtocolError('Server disconnected')
    """
    httpx_type = httpx_error_class(error)
    return None if httpx_type is None else httpx_type(str(error) or type(error).__name__)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise an aiohttp error, raw or as the SDK transport mapped it, as the right httpx error."""
    try:
        yield
    except (httpx.TransportError, aiohttp.ClientError) as exc:
        aiohttp_error = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
        if not isinstance(aiohttp_error, aiohttp.ClientError):
            raise  # not from aiohttp (e.g. the transport refusing HTTP/2): as it was
        mapped = httpx_error(aiohttp_error)
        if mapped is None:
            raise
        raise mapped from _os_error_under(aiohttp_error)


def _os_error_under(error: BaseException) -> OSError | None:
    """The ``OSError`` an aiohttp error was raised from (refused, reset, DNS), if any."""
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, aiohttp.ClientError):
            return cause
        cause = cause.__cause__
    return None


class _MappedErrorsStream(httpx.AsyncByteStream):
    """A response body whose read errors are mapped by ``_httpx_errors``."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._stream.aclose()


class AiohttpTransport(SdkAiohttpTransport or httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` on aiohttp: the openai SDK's, with httpx's error classes.

    Takes the SDK transport's arguments (``verify``, ``limits``, ``proxy``, ...); its aiohttp
    session is made on the first request, in the running event loop, and closed by ``aclose()``.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _httpx_errors():
            response = await super().handle_async_request(request)
        response.stream = _MappedErrorsStream(response.stream)
        return response


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process (loading the CA bundle takes ~60 ms,
    which every new pool, so every ``asyncio.run()`` and every ``amap`` call, would otherwise pay)."""
    return httpx.create_ssl_context()


def aiohttp_client(
    *,
    timeout: float | httpx.Timeout | None,
    limits: httpx.Limits,
    verify: ssl.SSLContext | bool | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` with the openai SDK's defaults on :class:`AiohttpTransport`.

    ``limits.max_connections`` caps the connections, ``limits.keepalive_expiry`` closes idle
    ones after that many seconds; ``verify`` defaults to :func:`shared_ssl_context`; ``kwargs``
    go to the client (``openai.DefaultAsyncHttpxClient``). If the SDK's private transport moved
    (``helpers.openai_internals``), the SDK's public ``openai.DefaultAioHttpClient`` is used instead.
    """
    verify = shared_ssl_context() if verify is None else verify
    if SdkAiohttpTransport is None:
        return openai.DefaultAioHttpClient(timeout=timeout, limits=limits, verify=verify, **kwargs)
    transport = AiohttpTransport(verify=verify, limits=limits)
    return openai.DefaultAsyncHttpxClient(timeout=timeout, transport=transport, **kwargs)
