"""Between a chat completions body and LangChain: the call to make, and the body to write back.

``call_params(body)`` splits a request body into its messages and the keyword arguments for
``model.bind(...)``: parameters of the openai SDK's ``chat.completions.create`` go as they are, vLLM's own
(``chat_template_kwargs``, ``top_k``, ``structured_outputs``, ...) into ``extra_body``. ``completion_body``
rebuilds the ``chat.completion`` body from the reply LangChain returns: id, model, the answer, Qwen3's
reasoning in vLLM's ``reasoning`` field (the kit's chat model keeps it), tool calls, ``finish_reason``
and the server's ``usage``.

Example:
    >>> call_params({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 20})
    ([{'role': 'user', 'content': 'hi'}], {'model': 'm', 'extra_body': {'top_k': 20}})
"""

from __future__ import annotations

import inspect
import json
import re
import time
import uuid
from typing import Any

from langchain_core.messages import AIMessage
from openai.resources.chat.completions import AsyncCompletions

from helpers.outcomes import Outcome

# What the openai SDK's create() takes as keywords; anything else must travel in extra_body.
_SDK_PARAMS = frozenset(inspect.signature(AsyncCompletions.create).parameters) - {
    "self",
    "messages",
    "stream",
    "stream_options",
    "extra_body",
    "extra_headers",
    "extra_query",
    "timeout",
}
_STATUS = re.compile(r"(?:Error code: |HTTP )([1-5]\d\d)\b")


def call_params(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(messages, bind_kwargs)`` for one request body (``stream`` is ignored: batches do not stream)."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = dict(body.get("extra_body") or {})
    for key, value in body.items():
        if key in ("messages", "stream", "stream_options", "extra_body"):
            continue
        if key in _SDK_PARAMS:
            kwargs[key] = value
        else:
            extra[key] = value
    if extra:
        kwargs["extra_body"] = extra
    return body["messages"], kwargs


def params_key(kwargs: dict[str, Any]) -> str:
    """A stable key for a set of bind keyword arguments (requests that share it run together)."""
    return json.dumps(kwargs, sort_keys=True, ensure_ascii=False, default=str)


def completion_body(message: AIMessage) -> dict[str, Any]:
    """The ``chat.completion`` body of one reply, as vLLM shapes it (the fields LangChain keeps)."""
    metadata = message.response_metadata or {}
    text = message.text if isinstance(message.content, (str, list)) else str(message.content)
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": text or None,  # vLLM sends null when nothing but reasoning or calls was written
        "reasoning": message.additional_kwargs.get("reasoning_content") or None,
    }
    if message.tool_calls:
        reply["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["args"], ensure_ascii=False)},
            }
            for call in message.tool_calls
        ]
    return {
        "id": metadata.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": metadata.get("model_name"),
        "choices": [{"index": 0, "message": reply, "finish_reason": metadata.get("finish_reason")}],
        "usage": _without_nones(metadata.get("token_usage")),
        "system_fingerprint": metadata.get("system_fingerprint"),
    }


def _without_nones(value: Any) -> Any:
    """The server's usage without the keys the openai SDK adds as None (accepted_prediction_tokens, ...)."""
    if isinstance(value, dict):
        return {key: _without_nones(item) for key, item in value.items() if item is not None}
    return value


def success_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """An output line for a request the server answered."""
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"batch-{uuid.uuid4().hex}", "body": body},
        "error": None,
    }


def error_line(custom_id: str, outcome: Outcome) -> dict[str, Any]:
    """An output line for a request that failed: the HTTP status and error body, or no response at all."""
    message = outcome.error or "unknown error"
    code = outcome.error_type or "Error"
    status = _STATUS.search(message)
    if status is None:  # no HTTP answer: refused, timed out, cut, cancelled
        return {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    error = {"message": message, "type": code, "code": int(status.group(1))}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {
            "status_code": int(status.group(1)),
            "request_id": f"batch-{uuid.uuid4().hex}",
            "body": {"error": error},
        },
        "error": None,
    }
