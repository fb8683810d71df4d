"""Every use of a private module of the openai SDK (and langchain-openai), in one place.

Three shortcuts the kit takes, each with the public route it falls back to if a release of the SDK
moves the private one (``tests/test_openai_internals.py`` checks both routes):

* ``make_request_options``, ``RAW_RESPONSE_HEADER`` (``openai._base_client``, ``openai._constants``):
  send a chat request with ``cast_to=object`` so replies come back as dicts
  (``helpers.dict_replies``). Fallback: ``DICT_REPLIES`` is False and the SDK's own
  ``chat.completions`` resource is used, as plain ``ChatOpenAI`` does.
* ``SdkAiohttpTransport`` (``openai._vendor.httpx_aiohttp``): the SDK's aiohttp transport, which
  ``helpers.transport`` subclasses to map its errors as httpx does. Fallback: None, and
  ``helpers.transport`` builds the public ``openai.DefaultAioHttpClient`` (errors as the SDK maps them).
* ``httpx`` (``langchain_openai._compat``): the httpx flavour the SDK is built on (``httpx2`` for
  openai >= 3). Fallback: ``httpx2``, else ``httpx``.
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_openai._compat import httpx
except ImportError:  # pragma: no cover - depends on the installed langchain-openai
    try:
        import httpx2 as httpx  # type: ignore[no-redef]
    except ImportError:
        import httpx  # type: ignore[no-redef]

try:
    from openai._base_client import make_request_options
    from openai._constants import RAW_RESPONSE_HEADER

    DICT_REPLIES = True
except ImportError:  # pragma: no cover - depends on the installed SDK
    make_request_options: Any = None  # type: ignore[no-redef]
    RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
    DICT_REPLIES = False

try:
    from openai._vendor.httpx_aiohttp import AiohttpTransport as SdkAiohttpTransport
except ImportError:  # pragma: no cover - depends on the installed SDK
    SdkAiohttpTransport: Any = None  # type: ignore[no-redef]

__all__ = ["DICT_REPLIES", "RAW_RESPONSE_HEADER", "SdkAiohttpTransport", "httpx", "make_request_options"]
