"""``make_chat_model()``: a LangChain chat model for Qwen3 on vLLM that keeps the reasoning.

It returns a ``helpers.reasoning_model.ReasoningChatOpenAI`` (a ``ChatOpenAI`` subclass: the
reasoning in ``additional_kwargs["reasoning_content"]`` and in ``content_blocks``, the answer in
``content``, one HTTP client per event loop) set up the way vLLM and the Qwen3 model card want:

* thinking on or off the way vLLM honours it:
  ``extra_body={"chat_template_kwargs": {"enable_thinking": ...}}`` (``thinking=None`` leaves the
  server's default, which is on for Qwen3);
* the model card's sampling for the mode, ``usage`` on streams (``stream_usage=True``), a bounded
  connect timeout;
* the endpoint from ``helpers.endpoint.resolve_endpoint()`` unless ``base_url=`` (ChatOpenAI's
  names) or ``endpoint=`` say where.

Example:
    >>> from helpers.chat import make_chat_model
    >>> model = make_chat_model(thinking=True)            # doctest: +SKIP
    >>> reply = model.invoke("你是谁?")                    # doctest: +SKIP
    >>> reply.additional_kwargs["reasoning_content"]      # doctest: +SKIP
    >>> reply.content                                     # the answer only  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import SecretStr

from helpers.endpoint import Endpoint, resolve_endpoint, server_endpoint
from helpers.openai_internals import httpx
from helpers.reasoning_model import ReasoningChatOpenAI

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_TOKENS = 2048
# Qwen3 model card, "Best practices": sampling for thinking and for non-thinking mode.
RECOMMENDED_SAMPLING = {True: (0.6, 0.95), False: (0.7, 0.8)}


def thinking_extra_body(thinking: bool | None, extra_body: dict | None = None) -> dict | None:
    """The ``extra_body`` that turns Qwen3's thinking on/off on vLLM (None: server default).

    >>> thinking_extra_body(False)
    {'chat_template_kwargs': {'enable_thinking': False}}
    >>> thinking_extra_body(None, {"top_k": 20})
    {'top_k': 20}
    """
    body = dict(extra_body or {})
    if thinking is not None:
        template_kwargs = dict(body.get("chat_template_kwargs") or {})
        template_kwargs["enable_thinking"] = thinking
        body["chat_template_kwargs"] = template_kwargs
    return body or None


# ChatOpenAI's names (and aliases) for what an Endpoint holds.
_ENDPOINT_ARGUMENTS = {
    "base_url": "base_url",
    "openai_api_base": "base_url",
    "api_key": "api_key",
    "openai_api_key": "api_key",
    "model": "model",
    "model_name": "model",
}


def _endpoint_from(endpoint: Endpoint | None, kwargs: dict[str, Any]) -> Endpoint:
    """``endpoint`` (default: ``resolve_endpoint()``) with ChatOpenAI-style ``base_url``,
    ``api_key`` and ``model`` from ``kwargs`` (popped) applied over it.

    A ``base_url`` names a server: no simulator is started, and key and model it is not given
    come from the endpoint, else from the environment as in ``resolve_endpoint``.
    """
    given: dict[str, str] = {}
    for name, field in _ENDPOINT_ARGUMENTS.items():
        value = kwargs.pop(name, None)
        if value is not None:
            given[field] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    if "base_url" in given:
        model = given.get("model") or (endpoint.model if endpoint else None)
        key = given.get("api_key") or (endpoint.api_key.get_secret_value() if endpoint else None)
        return server_endpoint(given["base_url"], model, key)
    endpoint = endpoint or resolve_endpoint(model=given.get("model"), api_key=given.get("api_key"))
    if "api_key" in given:
        given["api_key"] = SecretStr(given["api_key"])
    return dataclasses.replace(endpoint, **given) if given else endpoint


def make_chat_model(
    thinking: bool | None = None,
    endpoint: Endpoint | None = None,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    max_retries: int = DEFAULT_MAX_RETRIES,
    streaming: bool = False,
    **kwargs: Any,
) -> ReasoningChatOpenAI:
    """A chat model for Qwen3 on ``endpoint`` (default: ``resolve_endpoint()``).

    Args:
        thinking: True/False sends ``chat_template_kwargs.enable_thinking``; None keeps the
            server's default (Qwen3: on).
        endpoint: where to send requests; ChatOpenAI-style ``base_url=``, ``api_key=``,
            ``model=`` (in ``kwargs``) override it, and a ``base_url`` never starts the simulator.
        temperature, top_p: default to the Qwen3 model card's recommendation for the mode
            (thinking 0.6/0.95, non-thinking 0.7/0.8).
        max_tokens: cap on generated tokens (reasoning included).
        timeout: seconds to wait for a response, or between two streamed chunks; None waits
            as long as it takes. Connecting is bounded by 10 s (or ``timeout`` if shorter).
        max_retries: retries of the openai SDK for connection errors, 408/409/429 and 5xx.
        streaming: make ``invoke``/``ainvoke`` use the streaming API under the hood.
        **kwargs: any other ``ChatOpenAI`` argument (``extra_body`` is merged, not replaced).

    Example:
        >>> model = make_chat_model(thinking=False, max_tokens=256)  # doctest: +SKIP
        >>> model.invoke("1+1=?").content                           # doctest: +SKIP
        >>> make_chat_model(base_url="http://gpu-pod:8000/v1", api_key="sk-...")  # doctest: +SKIP
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
    if streaming:  # passing streaming=False explicitly would make .stream() fall back to invoke
        kwargs["streaming"] = True
    endpoint = _endpoint_from(endpoint, kwargs)
    connect_timeout = (
        DEFAULT_CONNECT_TIMEOUT_S if timeout is None else min(timeout, DEFAULT_CONNECT_TIMEOUT_S)
    )
    default_temperature, default_top_p = RECOMMENDED_SAMPLING[thinking is not False]
    return ReasoningChatOpenAI(
        model=endpoint.model,
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        temperature=default_temperature if temperature is None else temperature,
        top_p=default_top_p if top_p is None else top_p,
        max_tokens=max_tokens,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        max_retries=max_retries,
        stream_usage=True,
        # httpx's read timeout already bounds the gap between chunks (vLLM sends no keep-alives);
        # langchain's extra per-chunk timer would cost a task per token.
        stream_chunk_timeout=kwargs.pop("stream_chunk_timeout", None),
        extra_body=thinking_extra_body(thinking, kwargs.pop("extra_body", None)),
        **kwargs,
    )
