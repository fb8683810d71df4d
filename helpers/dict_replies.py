"""``client.chat.completions`` for ChatOpenAI whose ``create`` returns the server's JSON as dicts.

ChatOpenAI turns every reply and every streamed chunk back into a dict (``model_dump()``) before
reading it, and its payload is JSON already; the openai SDK's ``create`` would check that payload
against its TypedDicts and build pydantic models of the reply (on a stream, 40% of the client's
CPU). ``create`` and ``with_raw_response.create`` here send the same request through the SDK's
``client.post`` (its headers, auth, retries, timeouts and error mapping unchanged) with
``cast_to=object``: a dict, or a stream of dicts. Everything else (``parse``, ``stream``,
``with_streaming_response``) is the SDK's resource itself. If the SDK's private request helpers
move (``helpers.openai_internals.DICT_REPLIES`` is False), every call goes to the SDK's resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from helpers.openai_internals import DICT_REPLIES, RAW_RESPONSE_HEADER, make_request_options


class DictCompletions:
    """``chat.completions`` of the client ``client()`` returns (resolved per call), replies as dicts."""

    def __init__(self, client: Callable[[], Any], stream_cls: type) -> None:
        self._client = client  # resolved per call: the running loop's client
        self._stream_cls = stream_cls  # openai.Stream[object] or openai.AsyncStream[object]

    def create(self, **payload: Any) -> Any:
        """The reply as a dict (a stream of dicts); awaitable for an async client."""
        if not DICT_REPLIES:
            return self._client().chat.completions.create(**payload)
        return _post_chat_completion(self._client(), payload, self._stream_cls, raw=False)

    @property
    def with_raw_response(self) -> Any:
        if not DICT_REPLIES:
            return self._client().chat.completions.with_raw_response
        return _RawDictCompletions(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes before __init__ ran; private attributes
            raise AttributeError(name)
        return getattr(self._client().chat.completions, name)


def dict_completions(client: Callable[[], Any], *, sync: bool = False) -> Any:
    """``client().chat.completions`` returning dicts, ``client()`` resolved per call (e.g. the running
    loop's openai client).
    """
    return DictCompletions(client, openai.Stream[object] if sync else openai.AsyncStream[object])


class _RawDictCompletions:
    """``with_raw_response``: the SDK's raw response (headers, ...) whose ``parse()`` is a dict."""

    def __init__(self, completions: DictCompletions) -> None:
        self._completions = completions

    def create(self, **payload: Any) -> Any:
        completions = self._completions
        return _post_chat_completion(completions._client(), payload, completions._stream_cls, raw=True)


def _post_chat_completion(client: Any, payload: dict[str, Any], stream_cls: type, *, raw: bool) -> Any:
    """What ``client.chat.completions.create(**payload)`` sends, with ``cast_to=object``."""
    body = {key: value for key, value in payload.items() if not isinstance(value, _NOT_GIVEN_TYPES)}
    headers = body.pop("extra_headers", None)
    if raw:
        headers = {RAW_RESPONSE_HEADER: "true", **(headers or {})}
    options = make_request_options(
        extra_headers=headers,
        extra_query=body.pop("extra_query", None),
        extra_body=body.pop("extra_body", None),
        timeout=body.pop("timeout", openai.NOT_GIVEN),
        security={"bearer_auth": True},
    )
    stream = bool(body.get("stream"))
    return client.post(
        "/chat/completions", body=body, options=options, cast_to=object, stream=stream, stream_cls=stream_cls
    )


_NOT_GIVEN_TYPES = (type(openai.NOT_GIVEN), type(openai.omit))
